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
- ``incidents``: incidents written since the watermark (their ``updated_at``, ``_id``)
  upserted on ``_id``, a newer ``rev`` kept (:mod:`iot_fed.reporting.incidents`).

A verdict rewritten later for a bucket that was already fully scored (a newer model
re-scoring old readings) shows once that bucket is redone; :func:`reset` + refresh
rebuilds everything (``iot-fed reporting refresh --rebuild``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from pymongo.database import Database

from iot_fed.reporting.device_minutes import refresh_readings
from iot_fed.reporting.incidents import refresh_incidents
from iot_fed.reporting.increment import RefreshResult, ReportingError, runs
from iot_fed.reporting.schema import ensure_schema
from iot_fed.reporting.small_tables import (
    refresh_dead_letters,
    refresh_global_models,
    refresh_local_models,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH = 100_000
Positions = Mapping[int, tuple[float, float]]
__all__ = ["RefreshResult", "ReportingError", "refresh", "refresh_until_caught_up", "reset", "runs"]


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

    ``batch`` bounds the readings (and dead letters, incidents) taken per call: call again while
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
            refresh_readings(db, conn, batch, res)
            refresh_dead_letters(db, conn, batch, res)
            refresh_local_models(db, conn, res)
            refresh_global_models(db, conn, res)
            refresh_incidents(db, conn, batch, res)
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
    """:func:`refresh` until readings, dead letters and incidents are caught up."""
    out = []
    for _ in range(max_rounds):
        res = refresh(db, conn, batch=batch, positions=positions)
        out.append(res)
        if res.caught_up and res.dead_letters_seen < batch and res.incidents_seen < batch:
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
            "reporting.local_losses, reporting.dead_letters_minute, reporting.gaps, "
            "reporting.incidents"
        )


def load_positions(settings: Any) -> Positions:
    """{moteid: (x, y)} from ``mote_locs.txt`` (download, local file or generated layout)."""
    from iot_fed.data.download import obtain_mote_locs
    from iot_fed.data.parse import parse_mote_locs

    df = parse_mote_locs(obtain_mote_locs(settings).path)
    return {int(r.moteid): (float(r.x), float(r.y)) for r in df.itertuples()}
