"""What every reporting refresh step shares: the result it fills, the watermarks it reads
and advances (in the refresh's transaction), and the time helpers."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from bson import ObjectId

OVERLAP = dt.timedelta(seconds=30)
RUN_JOIN = dt.timedelta(minutes=5)  # buckets of one mote closer than this: one range query
MINUTE = dt.timedelta(minutes=1)
ZERO_OID = ObjectId("0" * 24)
EPOCH_START = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


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
    incidents_seen: int = 0
    positions: int = 0
    caught_up: bool = True
    behind_s: float = 0.0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(
            self.buckets
            or self.dead_letters_seen
            or self.local_models
            or self.positions
            or self.incidents_seen
        )

    def metadata(self) -> dict[str, Any]:
        return asdict(self)


def utc(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def minute_of(ts: dt.datetime) -> dt.datetime:
    return utc(ts).replace(second=0, microsecond=0)


def finite(v: Any) -> float | None:
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


def watermark(conn: psycopg.Connection, source: str) -> tuple[str, bool] | None:
    row = conn.execute(
        "SELECT value, caught_up FROM reporting.watermarks WHERE source = %s FOR UPDATE",
        (source,),
    ).fetchone()
    return None if row is None else (row[0], bool(row[1]))


def set_watermark(conn: psycopg.Connection, source: str, value: str, caught_up: bool) -> None:
    conn.execute(
        "INSERT INTO reporting.watermarks (source, value, caught_up) VALUES (%s, %s, %s) "
        "ON CONFLICT (source) DO UPDATE SET value = EXCLUDED.value, "
        "caught_up = EXCLUDED.caught_up, updated_at = now()",
        (source, value, caught_up),
    )
