"""What the live side looks like now: the streaming scorer's heartbeat, summarised for the
Dagster observation and its check (pymongo only; no Spark, no Dagster)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.database import Database

from iot_fed.store.live import DEFAULT_SCORER, anomalies_since, read_scorer_status

INTERVAL_S = 60.0


def _aware(t: dt.datetime | None) -> dt.datetime | None:
    return None if t is None else (t if t.tzinfo else t.replace(tzinfo=dt.UTC))


def scorer_observation(
    db: Database,
    *,
    max_lag_s: float = 60.0,
    interval_s: float = INTERVAL_S,
    name: str = DEFAULT_SCORER,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Lag, records/s, anomalies in the last interval, model version, last batch time.

    ``behind_s`` is the larger of the heartbeat's age (a dead scorer stops writing it) and
    the last micro-batch's worst Kafka-to-stored latency; ``ok`` when it is at most
    ``max_lag_s`` and the scorer is running."""
    now = now or dt.datetime.now(dt.UTC)
    hb = read_scorer_status(db, name)
    anomalies = anomalies_since(db, now - dt.timedelta(seconds=interval_s))
    if hb is None:
        return {
            "state": "absent",
            "ok": False,
            "behind_s": None,
            "anomalies_last_interval": anomalies,
            "reason": "no scorer heartbeat yet",
        }
    updated = _aware(hb.get("updated_at"))
    age = (now - updated).total_seconds() if updated else float("inf")
    latency = hb.get("batch_max_latency_s") or 0.0
    behind = max(age, float(latency))
    state = hb.get("state", "unknown")
    ok = behind <= max_lag_s and state == "running"
    last = _aware(hb.get("last_batch_at"))
    return {
        "state": state,
        "ok": ok,
        "behind_s": round(behind, 3),
        "heartbeat_age_s": round(age, 3),
        "batch_max_latency_s": latency,
        "records_per_s": hb.get("records_per_s"),
        "backlog_records": hb.get("backlog_records"),
        "anomalies_last_interval": anomalies,
        "model_version": hb.get("model_version"),
        "last_batch_at": None if last is None else last.isoformat(),
        "last_batch_id": hb.get("last_batch_id"),
        "reason": None
        if ok
        else (
            f"scorer is {state}"
            if state != "running"
            else f"{behind:.0f}s behind (> {max_lag_s:g}s)"
        ),
    }
