"""Readings and their verdicts -> ``device_minute`` and what derives from it (``devices``,
``fleet_minute``, ``anomalies``, ``gaps``): buckets recomputed whole from MongoDB."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from bson import ObjectId
from pymongo.database import Database

from iot_fed.readings import CHANNELS
from iot_fed.reporting.increment import (
    OVERLAP,
    ZERO_OID,
    RefreshResult,
    finite,
    minute_of,
    runs,
    set_watermark,
    utc,
    watermark,
)
from iot_fed.reporting.minute_sql import (
    DELETE_ANOMALIES,
    DELETE_GAPS,
    DEVICES_DELTA,
    FLEET,
    INSERT_ANOMALY,
    INSERT_GAPS,
    STAGE_COLUMNS,
    UPSERT_MINUTES,
)
from iot_fed.store import reporting_reads as reads

UNSCORED_RECHECK = dt.timedelta(minutes=10)


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
        ts, epoch = utc(doc["ts"]), int(doc["epoch"])
        self.readings += 1
        self.faults += bool(doc.get("fault"))
        for i, name in enumerate(CHANNELS):
            v = finite(doc.get(name))
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
        score = finite(doc.get("score"))
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
    key = (int(doc["moteid"]), int(utc(doc["ts"]).timestamp() * 1000))
    if key in marked:
        return [str(c) for c in marked[key]]
    errors = doc.get("channel_errors")
    if isinstance(errors, list | tuple) and len(errors) == len(CHANNELS):
        vals = [finite(e) for e in errors]
        if any(v is not None for v in vals):
            return [CHANNELS[max(range(len(vals)), key=lambda i: vals[i] or -math.inf)]]
    return []


def refresh_readings(
    db: Database, conn: psycopg.Connection, batch: int, res: RefreshResult
) -> None:
    wm = watermark(conn, "readings")
    after = ObjectId(wm[0]) if wm else ZERO_OID
    floor = after
    if wm and wm[1] and after != ZERO_OID:  # caught up: look back for late writers
        floor = ObjectId.from_datetime(after.generation_time - OVERLAP)
    keys = reads.reading_keys_after(db, floor, batch)
    res.readings_seen = len(keys)
    res.caught_up = len(keys) < batch
    buckets: dict[int, set[dt.datetime]] = defaultdict(set)
    for k in keys:
        buckets[int(k["moteid"])].add(minute_of(k["ts"]))
    recheck = conn.execute(
        "SELECT moteid, minute FROM reporting.device_minute "
        "WHERE scored < readings AND created_at > now() - %s",
        (UNSCORED_RECHECK,),
    ).fetchall()
    for moteid, minute in recheck:
        buckets[int(moteid)].add(utc(minute))
    ranges = _ranges(buckets)
    if ranges:
        _rebuild_buckets(db, conn, ranges, res)
    if keys:
        newest = max(after, max(k["_id"] for k in keys))
        set_watermark(conn, "readings", str(newest), res.caught_up)
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
            table[(int(doc["moteid"]), minute_of(doc["ts"]))].add_reading(doc)
        for doc in reads.predictions_in_ranges(db, part):
            key = (int(doc["moteid"]), minute_of(doc["ts"]))
            if key in table and table[key].add_prediction(doc):
                flagged.append(doc)
        if flagged:
            for doc in reads.anomalies_in_ranges(db, part):
                ms = int(utc(doc["ts"]).timestamp() * 1000)
                marked[(int(doc["moteid"]), ms)] = list(doc.get("channels") or [])
    rows = [b.row(m, minute) for (m, minute), b in table.items() if b.readings]
    res.buckets = len(rows)
    conn.execute(
        "CREATE TEMP TABLE _stage (LIKE reporting.device_minute INCLUDING DEFAULTS) ON COMMIT DROP"
    )
    with conn.cursor().copy(f"COPY _stage ({STAGE_COLUMNS}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    conn.execute(DEVICES_DELTA)
    conn.execute(UPSERT_MINUTES)
    conn.execute(FLEET)
    arrays = _range_arrays(ranges)
    conn.execute(DELETE_ANOMALIES, arrays)
    anomaly_rows = [
        (
            int(d["moteid"]),
            utc(d["ts"]),
            d.get("epoch"),
            finite(d.get("score")),
            finite(d.get("threshold")),
            d.get("model_version"),
            _channels(d, marked),
        )
        for d in flagged
    ]
    if anomaly_rows:
        with conn.cursor() as cur:
            cur.executemany(INSERT_ANOMALY, anomaly_rows)
    res.anomalies = len(anomaly_rows)
    conn.execute(DELETE_GAPS, arrays)
    conn.execute(INSERT_GAPS, arrays)
    conn.execute("DROP TABLE _stage")
