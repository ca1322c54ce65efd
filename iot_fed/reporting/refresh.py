"""Keep the ``reporting`` schema current from MongoDB: incremental, idempotent, bounded.

One :func:`refresh` call is one PostgreSQL transaction: the rows it writes and the
watermarks it advances commit together, so a failure (PostgreSQL down, a crash) leaves the
old watermarks and the next call redoes the same work. Nothing here writes to MongoDB, so
a failing refresh never blocks ingestion or scoring.

How each table stays exact under re-runs and late data:

- ``device_minute`` (and ``fleet_minute``, ``devices``, ``anomalies``, ``gaps`` derived from
  it): readings inserted since the watermark (their ObjectId ``_id``; 30 s of overlap for
  writers whose clocks or commits lag) name the (mote, minute) buckets to redo; each bucket
  is **recomputed whole** from its readings and predictions and upserted on
  (moteid, minute). Buckets whose readings are not all scored yet are redone for
  :data:`UNSCORED_RECHECK` after they appear, so verdicts written after the reading land.
- ``dead_letters_minute``: minutes with dead letters since the watermark (their ``ts``) are
  recounted whole.
- ``local_losses``: upserted on (moteid, version) from models created since the watermark.
- ``model_versions``: every global version upserted on ``version`` (promotion changes).

A verdict rewritten later for a bucket that was already fully scored (a newer model
re-scoring old readings) shows once that bucket is redone; :func:`reset` + refresh
rebuilds everything (``iot-fed reporting refresh --rebuild``).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from bson import ObjectId
from pymongo.database import Database

from iot_fed.reporting.schema import ensure_schema
from iot_fed.store import reporting_reads as reads

log = logging.getLogger(__name__)

CHANNELS = ("temperature", "humidity", "light", "voltage")
OVERLAP = dt.timedelta(seconds=30)
UNSCORED_RECHECK = dt.timedelta(minutes=10)
RUN_JOIN = dt.timedelta(minutes=5)  # buckets of one mote closer than this: one range query
GAP_LOOKAHEAD = dt.timedelta(minutes=10)
DEFAULT_BATCH = 100_000
MINUTE = dt.timedelta(minutes=1)
ZERO_OID = ObjectId("0" * 24)
Positions = Mapping[int, tuple[float, float]]


class ReportingError(RuntimeError):
    """The reporting store could not be refreshed (the message names the store)."""


@dataclass
class RefreshResult:
    """What one :func:`refresh` did (Dagster metadata)."""

    readings_seen: int = 0
    buckets: int = 0
    anomalies: int = 0
    dead_letters_seen: int = 0
    local_models: int = 0
    global_versions: int = 0
    positions: int = 0
    caught_up: bool = True
    behind_s: float = 0.0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.buckets or self.dead_letters_seen or self.local_models or self.positions)

    def metadata(self) -> dict[str, Any]:
        return asdict(self)


# --- small helpers ----------------------------------------------------------------------


def _utc(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def _minute(ts: dt.datetime) -> dt.datetime:
    return _utc(ts).replace(second=0, microsecond=0)


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def runs(minutes: Iterable[dt.datetime]) -> list[tuple[dt.datetime, dt.datetime]]:
    """Sorted, merged ``[lo, hi)`` ranges covering the given minutes (gaps < RUN_JOIN joined)."""
    out: list[list[dt.datetime]] = []
    for m in sorted(set(minutes)):
        if out and m - out[-1][1] < RUN_JOIN:
            out[-1][1] = max(out[-1][1], m + MINUTE)
        else:
            out.append([m, m + MINUTE])
    return [(lo, hi) for lo, hi in out]


def _watermark(conn: psycopg.Connection, source: str) -> tuple[str, bool] | None:
    row = conn.execute(
        "SELECT value, caught_up FROM reporting.watermarks WHERE source = %s FOR UPDATE",
        (source,),
    ).fetchone()
    return None if row is None else (row[0], bool(row[1]))


def _set_watermark(conn: psycopg.Connection, source: str, value: str, caught_up: bool) -> None:
    conn.execute(
        "INSERT INTO reporting.watermarks (source, value, caught_up) VALUES (%s, %s, %s) "
        "ON CONFLICT (source) DO UPDATE SET value = EXCLUDED.value, "
        "caught_up = EXCLUDED.caught_up, updated_at = now()",
        (source, value, caught_up),
    )


# --- readings and predictions -> device_minute and friends ------------------------------


@dataclass
class _Bucket:
    readings: int = 0
    faults: int = 0
    scored: int = 0
    anomalies: int = 0
    score_sum: float = 0.0
    score_n: int = 0
    score_max: float | None = None
    min_epoch: int | None = None
    max_epoch: int | None = None
    first_ts: dt.datetime | None = None
    last_ts: dt.datetime | None = None

    def __post_init__(self) -> None:
        self.sums = [0.0] * len(CHANNELS)
        self.ns = [0] * len(CHANNELS)

    def add_reading(self, doc: Mapping[str, Any]) -> None:
        ts, epoch = _utc(doc["ts"]), int(doc["epoch"])
        self.readings += 1
        self.faults += bool(doc.get("fault"))
        for i, name in enumerate(CHANNELS):
            v = _finite(doc.get(name))
            if v is not None:
                self.sums[i] += v
                self.ns[i] += 1
        self.min_epoch = epoch if self.min_epoch is None else min(self.min_epoch, epoch)
        self.max_epoch = epoch if self.max_epoch is None else max(self.max_epoch, epoch)
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)

    def add_prediction(self, doc: Mapping[str, Any]) -> bool:
        """Count one verdict; True when it flags the reading."""
        self.scored += 1
        flagged = bool(doc.get("flag", doc.get("is_anomaly", False)))
        self.anomalies += flagged
        score = _finite(doc.get("score"))
        if score is not None:
            self.score_sum += score
            self.score_n += 1
            self.score_max = score if self.score_max is None else max(self.score_max, score)
        return flagged

    def row(self, moteid: int, minute: dt.datetime) -> tuple[Any, ...]:
        means = [s / n if n else None for s, n in zip(self.sums, self.ns, strict=True)]
        score_mean = self.score_sum / self.score_n if self.score_n else None
        return (
            moteid,
            minute,
            self.readings,
            self.faults,
            min(self.scored, self.readings),
            self.anomalies,
            score_mean,
            self.score_max,
            *means,
            self.min_epoch,
            self.max_epoch,
            self.first_ts,
            self.last_ts,
        )


STAGE_COLUMNS = (
    "moteid, minute, readings, faults, scored, anomalies, score_mean, score_max, "
    "temperature, humidity, light, voltage, min_epoch, max_epoch, first_ts, last_ts"
)

_DEVICES_DELTA = """
INSERT INTO reporting.devices AS d
    (moteid, first_ts, last_ts, first_epoch, last_epoch, readings, faults, scored, anomalies)
SELECT s.moteid, min(s.first_ts), max(s.last_ts), min(s.min_epoch), max(s.max_epoch),
       sum(s.readings - COALESCE(o.readings, 0)), sum(s.faults - COALESCE(o.faults, 0)),
       sum(s.scored - COALESCE(o.scored, 0)), sum(s.anomalies - COALESCE(o.anomalies, 0))
FROM _stage s LEFT JOIN reporting.device_minute o ON o.moteid = s.moteid AND o.minute = s.minute
GROUP BY s.moteid
ON CONFLICT (moteid) DO UPDATE SET
    first_ts = LEAST(d.first_ts, EXCLUDED.first_ts),
    last_ts = GREATEST(d.last_ts, EXCLUDED.last_ts),
    first_epoch = LEAST(d.first_epoch, EXCLUDED.first_epoch),
    last_epoch = GREATEST(d.last_epoch, EXCLUDED.last_epoch),
    readings = d.readings + EXCLUDED.readings,
    faults = d.faults + EXCLUDED.faults,
    scored = d.scored + EXCLUDED.scored,
    anomalies = d.anomalies + EXCLUDED.anomalies,
    updated_at = now()
"""

_UPSERT_MINUTES = f"""
INSERT INTO reporting.device_minute ({STAGE_COLUMNS})
SELECT {STAGE_COLUMNS} FROM _stage
ON CONFLICT (moteid, minute) DO UPDATE SET
    readings = EXCLUDED.readings, faults = EXCLUDED.faults, scored = EXCLUDED.scored,
    anomalies = EXCLUDED.anomalies, score_mean = EXCLUDED.score_mean,
    score_max = EXCLUDED.score_max, temperature = EXCLUDED.temperature,
    humidity = EXCLUDED.humidity, light = EXCLUDED.light, voltage = EXCLUDED.voltage,
    min_epoch = EXCLUDED.min_epoch, max_epoch = EXCLUDED.max_epoch,
    first_ts = EXCLUDED.first_ts, last_ts = EXCLUDED.last_ts, updated_at = now()
"""

_FLEET = """
INSERT INTO reporting.fleet_minute AS f
    (minute, readings, devices, faults, scored, anomalies, score_mean, score_max)
SELECT minute, sum(readings), count(*), sum(faults), sum(scored), sum(anomalies),
       sum(score_mean * scored) / NULLIF(sum(scored) FILTER (WHERE score_mean IS NOT NULL), 0),
       max(score_max)
FROM reporting.device_minute
WHERE minute IN (SELECT DISTINCT minute FROM _stage)
GROUP BY minute
ON CONFLICT (minute) DO UPDATE SET
    readings = EXCLUDED.readings, devices = EXCLUDED.devices, faults = EXCLUDED.faults,
    scored = EXCLUDED.scored, anomalies = EXCLUDED.anomalies,
    score_mean = EXCLUDED.score_mean, score_max = EXCLUDED.score_max, updated_at = now()
"""

_RANGES = "unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) AS r(moteid, lo, hi)"

_DELETE_ANOMALIES = f"""
DELETE FROM reporting.anomalies a USING {_RANGES}
WHERE a.moteid = r.moteid AND a.ts >= r.lo AND a.ts < r.hi
"""

_INSERT_ANOMALY = """
INSERT INTO reporting.anomalies (moteid, ts, epoch, score, threshold, model_version, channels)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (moteid, ts) DO UPDATE SET epoch = EXCLUDED.epoch, score = EXCLUDED.score,
    threshold = EXCLUDED.threshold, model_version = EXCLUDED.model_version,
    channels = EXCLUDED.channels
"""

_DELETE_GAPS = f"""
DELETE FROM reporting.gaps g USING {_RANGES}
WHERE g.moteid = r.moteid AND g.to_ts >= r.lo AND g.to_ts < r.hi + interval '10 minutes'
"""

_INSERT_GAPS = f"""
INSERT INTO reporting.gaps (moteid, after_epoch, missing_epochs, from_ts, to_ts)
SELECT DISTINCT ON (dm.moteid, p.max_epoch)
       dm.moteid, p.max_epoch, dm.min_epoch - p.max_epoch - 1, p.last_ts, dm.first_ts
FROM {_RANGES}
JOIN reporting.device_minute dm
  ON dm.moteid = r.moteid AND dm.minute >= r.lo AND dm.minute < r.hi + interval '10 minutes'
CROSS JOIN LATERAL (
    SELECT max_epoch, last_ts FROM reporting.device_minute p
    WHERE p.moteid = dm.moteid AND p.minute < dm.minute ORDER BY p.minute DESC LIMIT 1
) p
WHERE dm.min_epoch - p.max_epoch > 1
ORDER BY dm.moteid, p.max_epoch
ON CONFLICT (moteid, after_epoch) DO UPDATE SET missing_epochs = EXCLUDED.missing_epochs,
    from_ts = EXCLUDED.from_ts, to_ts = EXCLUDED.to_ts
"""


def _ranges(buckets: Mapping[int, set[dt.datetime]]) -> dict[int, list[tuple[Any, Any]]]:
    return {m: runs(minutes) for m, minutes in buckets.items() if minutes}


def _range_arrays(ranges: Mapping[int, list[tuple[Any, Any]]]) -> tuple[list, list, list]:
    flat = [(m, lo, hi) for m, rs in ranges.items() for lo, hi in rs]
    return [f[0] for f in flat], [f[1] for f in flat], [f[2] for f in flat]


def _query_ranges(ranges: Mapping[int, list[tuple[Any, Any]]]) -> list[reads.Ranges]:
    """One {mote: range} mapping per round (a mote with several runs spans several rounds)."""
    depth = max((len(rs) for rs in ranges.values()), default=0)
    return [{m: rs[i] for m, rs in ranges.items() if i < len(rs)} for i in range(depth)]


def _channels(doc: Mapping[str, Any], marked: Mapping[tuple[int, int], list[str]]) -> list[str]:
    key = (int(doc["moteid"]), int(_utc(doc["ts"]).timestamp() * 1000))
    if key in marked:
        return [str(c) for c in marked[key]]
    errors = doc.get("channel_errors")
    if isinstance(errors, list | tuple) and len(errors) == len(CHANNELS):
        vals = [_finite(e) for e in errors]
        if any(v is not None for v in vals):
            return [CHANNELS[max(range(len(vals)), key=lambda i: vals[i] or -math.inf)]]
    return []


def _refresh_readings(
    db: Database, conn: psycopg.Connection, batch: int, res: RefreshResult
) -> None:
    wm = _watermark(conn, "readings")
    after = ObjectId(wm[0]) if wm else ZERO_OID
    floor = after
    if wm and wm[1] and after != ZERO_OID:  # caught up: look back for late writers
        floor = ObjectId.from_datetime(after.generation_time - OVERLAP)
    keys = reads.reading_keys_after(db, floor, batch)
    res.readings_seen = len(keys)
    res.caught_up = len(keys) < batch
    buckets: dict[int, set[dt.datetime]] = defaultdict(set)
    for k in keys:
        buckets[int(k["moteid"])].add(_minute(k["ts"]))
    recheck = conn.execute(
        "SELECT moteid, minute FROM reporting.device_minute "
        "WHERE scored < readings AND created_at > now() - %s",
        (UNSCORED_RECHECK,),
    ).fetchall()
    for moteid, minute in recheck:
        buckets[int(moteid)].add(_utc(minute))
    ranges = _ranges(buckets)
    if ranges:
        _rebuild_buckets(db, conn, ranges, res)
    if keys:
        newest = max(after, max(k["_id"] for k in keys))
        _set_watermark(conn, "readings", str(newest), res.caught_up)
        if not res.caught_up:
            res.behind_s = max(
                (dt.datetime.now(dt.UTC) - newest.generation_time).total_seconds(), 0
            )


def _rebuild_buckets(
    db: Database,
    conn: psycopg.Connection,
    ranges: Mapping[int, list[tuple[Any, Any]]],
    res: RefreshResult,
) -> None:
    table: dict[tuple[int, dt.datetime], _Bucket] = defaultdict(_Bucket)
    flagged: list[Mapping[str, Any]] = []
    marked: dict[tuple[int, int], list[str]] = {}
    for part in _query_ranges(ranges):
        for doc in reads.readings_in_ranges(db, part):
            table[(int(doc["moteid"]), _minute(doc["ts"]))].add_reading(doc)
        for doc in reads.predictions_in_ranges(db, part):
            key = (int(doc["moteid"]), _minute(doc["ts"]))
            if key in table and table[key].add_prediction(doc):
                flagged.append(doc)
        if flagged:
            for doc in reads.anomalies_in_ranges(db, part):
                ms = int(_utc(doc["ts"]).timestamp() * 1000)
                marked[(int(doc["moteid"]), ms)] = list(doc.get("channels") or [])
    rows = [b.row(m, minute) for (m, minute), b in table.items() if b.readings]
    res.buckets = len(rows)
    conn.execute(
        "CREATE TEMP TABLE _stage (LIKE reporting.device_minute INCLUDING DEFAULTS) ON COMMIT DROP"
    )
    with conn.cursor().copy(f"COPY _stage ({STAGE_COLUMNS}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    conn.execute(_DEVICES_DELTA)
    conn.execute(_UPSERT_MINUTES)
    conn.execute(_FLEET)
    arrays = _range_arrays(ranges)
    conn.execute(_DELETE_ANOMALIES, arrays)
    anomaly_rows = [
        (
            int(d["moteid"]),
            _utc(d["ts"]),
            d.get("epoch"),
            _finite(d.get("score")),
            _finite(d.get("threshold")),
            d.get("model_version"),
            _channels(d, marked),
        )
        for d in flagged
    ]
    if anomaly_rows:
        with conn.cursor() as cur:
            cur.executemany(_INSERT_ANOMALY, anomaly_rows)
    res.anomalies = len(anomaly_rows)
    conn.execute(_DELETE_GAPS, arrays)
    conn.execute(_INSERT_GAPS, arrays)
    conn.execute("DROP TABLE _stage")


# --- dead letters ---------------------------------------------------------------------------


def reason_class(reason: str) -> str:
    """The reason without its detail: ``"bad humidity: non-finite"`` -> ``"bad humidity"``."""
    return (reason or "unknown").split(":", 1)[0].strip()[:120] or "unknown"


def _refresh_dead_letters(
    db: Database, conn: psycopg.Connection, batch: int, res: RefreshResult
) -> None:
    wm = _watermark(conn, "dead_letters")
    after = dt.datetime.fromisoformat(wm[0]) if wm else dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    since = after - OVERLAP if wm and wm[1] else after
    docs = reads.dead_letters_since(db, since, batch)
    res.dead_letters_seen = len(docs)
    if not docs:
        return
    counts: dict[tuple[dt.datetime, str], int] = defaultdict(int)
    spans = runs(_minute(d["ts"]) for d in docs)
    for lo, hi in spans:
        for d in reads.dead_letters_between(db, lo, hi):
            counts[(_minute(d["ts"]), reason_class(d.get("reason", "")))] += 1
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
    newest = max(after, max(_utc(d["ts"]) for d in docs))
    _set_watermark(conn, "dead_letters", newest.isoformat(), len(docs) < batch)


# --- models ------------------------------------------------------------------------------------


def _refresh_local_models(db: Database, conn: psycopg.Connection, res: RefreshResult) -> None:
    wm = _watermark(conn, "local_models")
    after = dt.datetime.fromisoformat(wm[0]) if wm else dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    docs = reads.local_model_summaries(db, after - OVERLAP)
    rows = []
    for d in docs:
        if not str(d.get("device", "")).isdigit():
            continue
        m = d.get("metrics") or {}
        rows.append(
            (
                int(d["device"]),
                int(d["version"]),
                _utc(d["created_at"]),
                d.get("base_version"),
                d.get("n_samples"),
                _finite(m.get("loss_before")),
                _finite(m.get("loss_after")),
                _finite(d.get("threshold")),
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
    _set_watermark(conn, "local_models", newest.isoformat(), True)


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
        rows.append(
            (
                v,
                _utc(m["created_at"]),
                m.get("strategy"),
                len(m.get("lineage") or []),
                len(metrics.get("rejected_local_models") or {}),
                _finite(metrics.get("val_loss")),
                m.get("parent_version"),
                _finite(metrics.get("parent_val_loss")),
                _finite(m.get("threshold")),
                ever,
                _utc(promoted_at) if promoted_at else None,
                v == current,
                status,
                _finite(summary.get("global_f1")),
                _finite(summary.get("global_precision")),
                _finite(summary.get("global_recall")),
                (latest_report.get(v) or {}).get("report_id"),
            )
        )
    return rows


_VERSION_COLUMNS = (
    "version, created_at, strategy, devices, rejected_devices, val_loss, parent_version, "
    "parent_val_loss, threshold, promoted, promoted_at, is_current, status, f1, precision_, "
    "recall, report_id"
)


def _refresh_global_models(db: Database, conn: psycopg.Connection, res: RefreshResult) -> None:
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


def _refresh_positions(
    conn: psycopg.Connection, positions: Callable[[], Positions] | None, res: RefreshResult
) -> None:
    missing = conn.execute("SELECT moteid FROM reporting.devices WHERE x IS NULL").fetchall()
    if not missing or positions is None:
        return
    locs = positions()
    rows = [(locs[m][0], locs[m][1], m) for (m,) in missing if m in locs]
    if rows:
        with conn.cursor() as cur:
            cur.executemany("UPDATE reporting.devices SET x = %s, y = %s WHERE moteid = %s", rows)
    res.positions = len(rows)


# --- entry point -----------------------------------------------------------------------------

_SCHEMA_READY: set[str] = set()


def refresh(
    db: Database,
    conn: psycopg.Connection,
    *,
    batch: int = DEFAULT_BATCH,
    positions: Callable[[], Positions] | None = None,
) -> RefreshResult:
    """One bounded, transactional refresh of every reporting table (see the module doc).

    ``batch`` bounds the readings (and dead letters) taken per call: call again while
    ``caught_up`` is False. ``positions`` returns {moteid: (x, y)} for motes without one.
    Raises :class:`ReportingError` (nothing committed) when PostgreSQL fails.
    """
    t0 = time.monotonic()
    res = RefreshResult()
    try:
        if conn.info.dsn not in _SCHEMA_READY:
            ensure_schema(conn)
            _SCHEMA_READY.add(conn.info.dsn)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('iot_fed.reporting.refresh'))")
            _refresh_readings(db, conn, batch, res)
            _refresh_dead_letters(db, conn, batch, res)
            _refresh_local_models(db, conn, res)
            _refresh_global_models(db, conn, res)
            _refresh_positions(conn, positions, res)
    except psycopg.Error as exc:
        host = conn.info.host if not conn.closed else "?"
        raise ReportingError(
            f"reporting store (PostgreSQL at {host}:{conn.info.port}, IOT_FED_POSTGRES_URI) "
            f"refresh failed, will retry: {str(exc).strip().splitlines()[0]}"
        ) from exc
    res.seconds = round(time.monotonic() - t0, 3)
    log.info("reporting refresh: %s", res.metadata())
    return res


def refresh_until_caught_up(
    db: Database,
    conn: psycopg.Connection,
    *,
    batch: int = DEFAULT_BATCH,
    positions: Callable[[], Positions] | None = None,
    max_rounds: int = 1000,
) -> list[RefreshResult]:
    """:func:`refresh` until both readings and dead letters are caught up."""
    out = []
    for _ in range(max_rounds):
        res = refresh(db, conn, batch=batch, positions=positions)
        out.append(res)
        if res.caught_up and res.dead_letters_seen < batch:
            break
    return out


def reset(conn: psycopg.Connection) -> None:
    """Empty every reporting table and watermark: the next refresh rebuilds from scratch."""
    ensure_schema(conn)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('iot_fed.reporting.refresh'))")
        conn.execute(
            "TRUNCATE reporting.watermarks, reporting.devices, reporting.device_minute, "
            "reporting.fleet_minute, reporting.anomalies, reporting.model_versions, "
            "reporting.local_losses, reporting.dead_letters_minute, reporting.gaps"
        )


def load_positions(settings: Any) -> Positions:
    """{moteid: (x, y)} from ``mote_locs.txt`` (download, local file or generated layout)."""
    from iot_fed.data.download import obtain_mote_locs
    from iot_fed.data.parse import parse_mote_locs

    df = parse_mote_locs(obtain_mote_locs(settings).path)
    return {int(r.moteid): (float(r.x), float(r.y)) for r in df.itertuples()}
