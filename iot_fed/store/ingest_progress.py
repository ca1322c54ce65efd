"""What the ingesters have landed, kept in MongoDB for the training trigger to read.

``ingest_devices``: readings landed per device (counted from the inserts that were new, so
a re-read chunk adds nothing). ``ingest_offsets``: per topic partition, the offset before
which every message is landed. Both are written after the chunk's readings and dead letters
and before its Kafka offsets are committed; a crash in between leaves a count short by that
chunk's new readings (its re-read finds them stored), never long.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from iot_fed.store.collections import INGEST_DEVICES, INGEST_OFFSETS, batches
from iot_fed.store.durability import durable


@dataclass(frozen=True)
class PartitionProgress:
    """How far one partition is landed."""

    topic: str
    partition: int
    next_offset: int
    landed_by: str | None
    updated_at: dt.datetime


def record_landed(
    db: Database,
    topic: str,
    next_offsets: Mapping[int, int],
    new_per_device: Mapping[int, int],
    last_ts_per_device: Mapping[int, dt.datetime],
    landed_by: str | None = None,
    last_epoch_per_device: Mapping[int, int] | None = None,
) -> None:
    """Add one landed chunk: per-device new readings (and newest ts and epoch) and
    per-partition offsets, two bulk writes."""
    now = dt.datetime.now(dt.UTC)
    devices = [
        UpdateOne(
            {"_id": int(d)},
            {
                "$inc": {"readings": int(new_per_device.get(d, 0))},
                "$max": {"last_ts": last_ts_per_device[d]},
                # the newest epoch of the newest chunk, not the highest ever: after readings
                # are reset and replayed it follows them (a re-read older chunk only lowers it,
                # and a lower bound reads more, never less)
                "$set": {
                    "updated_at": now,
                    **(
                        {"last_epoch": int(last_epoch_per_device[d])}
                        if last_epoch_per_device and d in last_epoch_per_device
                        else {}
                    ),
                },
            },
            upsert=True,
        )
        for d in sorted(last_ts_per_device)
    ]
    if devices:
        durable(db, INGEST_DEVICES).bulk_write(devices, ordered=False)
    offsets = [
        UpdateOne(
            {"_id": f"{topic}:{p}"},
            {
                "$max": {"next_offset": int(o)},
                "$set": {
                    "topic": topic,
                    "partition": int(p),
                    "landed_by": landed_by,
                    "updated_at": now,
                },
            },
            upsert=True,
        )
        for p, o in sorted(next_offsets.items())
    ]
    if offsets:
        durable(db, INGEST_OFFSETS).bulk_write(offsets, ordered=False)


def landed_last_epochs(db: Database, motes: Iterable[int]) -> dict[int, int]:
    """``{moteid: newest epoch landed}`` of ``motes`` the ingesters recorded one for (one
    query per batch of devices; devices landed by an older version have none)."""
    out: dict[int, int] = {}
    for part in batches(sorted({int(m) for m in motes})):
        docs = db[INGEST_DEVICES].find({"_id": {"$in": list(part)}}, {"last_epoch": 1})
        out.update({int(d["_id"]): int(d["last_epoch"]) for d in docs if "last_epoch" in d})
    return out


def landed_per_device(db: Database) -> dict[int, int]:
    """``{moteid: readings landed}`` for every device the ingesters have seen (one query)."""
    return {int(d["_id"]): int(d["readings"]) for d in db[INGEST_DEVICES].find({}, {"readings": 1})}


def landed_offsets(db: Database, topic: str) -> list[PartitionProgress]:
    """Per partition of ``topic``: how far it is landed, by partition."""
    docs = db[INGEST_OFFSETS].find({"topic": topic})
    rows = [
        PartitionProgress(
            topic=d["topic"],
            partition=int(d["partition"]),
            next_offset=int(d["next_offset"]),
            landed_by=d.get("landed_by"),
            updated_at=d["updated_at"],
        )
        for d in docs
    ]
    return sorted(rows, key=lambda r: r.partition)


def progress_doc(p: PartitionProgress) -> dict[str, Any]:
    """A JSON-friendly row (CLI and metadata)."""
    return {
        "partition": p.partition,
        "next_offset": p.next_offset,
        "landed_by": p.landed_by,
        "updated_at": p.updated_at.isoformat(),
    }
