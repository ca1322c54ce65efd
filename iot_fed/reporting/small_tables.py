"""The small reporting tables: dead letters per minute and reason, local losses per
device version, and every global version with its status and latest evaluation."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import psycopg
from pymongo.database import Database

from iot_fed.federation.health import promotion_verdict
from iot_fed.reporting import increment as inc
from iot_fed.reporting.increment import RefreshResult
from iot_fed.store import reporting_reads as reads
from iot_fed.store.device_params import devices_aggregated


def reason_class(reason: str) -> str:
    """The reason without its detail: ``"bad humidity: non-inc.finite"`` -> ``"bad humidity"``."""
    return (reason or "unknown").split(":", 1)[0].strip()[:120] or "unknown"


def refresh_dead_letters(
    db: Database, conn: psycopg.Connection, batch: int, res: RefreshResult
) -> None:
    wm = inc.watermark(conn, "dead_letters")
    after = dt.datetime.fromisoformat(wm[0]) if wm else inc.EPOCH_START
    since = after - inc.OVERLAP if wm and wm[1] else after
    docs = reads.dead_letters_since(db, since, batch)
    res.dead_letters_seen = len(docs)
    if not docs:
        return
    counts: dict[tuple[dt.datetime, str], int] = defaultdict(int)
    spans = inc.runs(inc.minute_of(d["ts"]) for d in docs)
    for lo, hi in spans:
        for d in reads.dead_letters_between(db, lo, hi):
            counts[(inc.minute_of(d["ts"]), reason_class(d.get("reason", "")))] += 1
    with conn.cursor() as cur:
        cur.executemany(
            "DELETE FROM reporting.dead_letters_minute WHERE minute >= %s AND minute < %s",
            spans,
        )
        cur.executemany(
            "INSERT INTO reporting.dead_letters_minute (minute, reason, letters) "
            "VALUES (%s, %s, %s)",
            [(m, r, n) for (m, r), n in counts.items()],
        )
    newest = max(after, max(inc.utc(d["ts"]) for d in docs))
    inc.set_watermark(conn, "dead_letters", newest.isoformat(), len(docs) < batch)


# --- models ------------------------------------------------------------------------------------


def refresh_local_models(db: Database, conn: psycopg.Connection, res: RefreshResult) -> None:
    wm = inc.watermark(conn, "local_models")
    after = dt.datetime.fromisoformat(wm[0]) if wm else inc.EPOCH_START
    docs = reads.local_model_summaries(db, after - inc.OVERLAP)
    rows = []
    for d in docs:
        if not str(d.get("device", "")).isdigit():
            continue
        m = d.get("metrics") or {}
        rows.append(
            (
                int(d["device"]),
                int(d["version"]),
                inc.utc(d["created_at"]),
                d.get("base_version"),
                d.get("n_samples"),
                inc.finite(m.get("loss_before")),
                inc.finite(m.get("loss_after")),
                inc.finite(d.get("threshold")),
            )
        )
    res.local_models = len(rows)
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO reporting.local_losses (moteid, version, created_at, base_version, "
            "n_samples, loss_before, loss_after, threshold) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (moteid, version) DO UPDATE SET created_at = EXCLUDED.created_at, "
            "base_version = EXCLUDED.base_version, n_samples = EXCLUDED.n_samples, "
            "loss_before = EXCLUDED.loss_before, loss_after = EXCLUDED.loss_after, "
            "threshold = EXCLUDED.threshold",
            rows,
        )
    newest = max(after, max(r[2] for r in rows))
    inc.set_watermark(conn, "local_models", newest.isoformat(), True)


def version_rows(
    models: list[Mapping[str, Any]], reports: list[Mapping[str, Any]]
) -> list[tuple[Any, ...]]:
    """``reporting.model_versions`` rows: status and the latest report's F1 per version."""
    latest_report: dict[int, Mapping[str, Any]] = {}
    for r in reports:  # oldest first: the last one per version wins
        if r.get("global_version") is not None:
            latest_report[int(r["global_version"])] = r
    newest = max((int(m["version"]) for m in models), default=None)
    current = max((int(m["version"]) for m in models if m.get("promoted")), default=None)
    rows = []
    for m in models:
        v = int(m["version"])
        metrics = m.get("metrics") or {}
        ever = bool(m.get("promoted") or m.get("promoted_at"))
        status = "promoted" if ever else ("pending" if v == newest else "rejected")
        summary = (latest_report.get(v) or {}).get("summary") or {}
        promoted_at = m.get("promoted_at")
        ok, why = promotion_verdict(m)  # a refused version: why (a pending one may pass yet)
        replay = metrics.get("replay") or {}
        rows.append(
            (
                v,
                inc.utc(m["created_at"]),
                m.get("strategy"),
                devices_aggregated(m),
                len(metrics.get("rejected_local_models") or {}),
                inc.finite(metrics.get("val_loss")),
                m.get("parent_version"),
                inc.finite(metrics.get("parent_val_loss")),
                inc.finite(m.get("threshold")),
                ever,
                inc.utc(promoted_at) if promoted_at else None,
                v == current,
                status,
                inc.finite(summary.get("global_f1")),
                inc.finite(summary.get("global_precision")),
                inc.finite(summary.get("global_recall")),
                (latest_report.get(v) or {}).get("report_id"),
                None if ever or ok else why,
                inc.finite(replay.get("alarm_rate")),
                inc.finite(replay.get("f1")),
                inc.finite(replay.get("promoted_f1")),
            )
        )
    return rows


_VERSION_COLUMNS = (
    "version, created_at, strategy, devices, rejected_devices, val_loss, parent_version, "
    "parent_val_loss, threshold, promoted, promoted_at, is_current, status, f1, precision_, "
    "recall, report_id, refusal_reason, replay_alarm_rate, replay_f1, replay_promoted_f1"
)


def refresh_global_models(db: Database, conn: psycopg.Connection, res: RefreshResult) -> None:
    rows = version_rows(reads.global_model_summaries(db), reads.evaluation_summaries(db))
    res.global_versions = len(rows)
    if not rows:
        return
    cols = [c.strip() for c in _VERSION_COLUMNS.split(",")]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols[1:])
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO reporting.model_versions ({_VERSION_COLUMNS}) "
            f"VALUES ({', '.join(['%s'] * len(cols))}) "
            f"ON CONFLICT (version) DO UPDATE SET {updates}, updated_at = now()",
            rows,
        )
