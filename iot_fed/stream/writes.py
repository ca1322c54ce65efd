"""Idempotent MongoDB writes for ingestion that report *which* readings were new.

``iot_fed.store.upsert_readings`` returns counts only; the sensor needs per-device new
counts, so this module does the same first-write-wins writes (unique ``(moteid, epoch)``
index from ``iot_fed.store.init_database``) and returns the inserted indices:

* ``insert``: ``insert_many(ordered=False)``; duplicate-key errors (11000) mark the
  readings already stored. Fast when most readings are new.
* ``upsert``: ``bulk_write`` of ``UpdateOne(..., {"$setOnInsert": doc}, upsert=True)``.

Documents come from :func:`iot_fed.stream.messages.decode_value`, which already checks
every field, so the per-document Python schema check is optional (``validate``).
"""

from __future__ import annotations

from typing import Any

from pymongo import InsertOne, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from iot_fed.store import (
    DEAD_LETTERS,
    SENSOR_READINGS,
    init_database,
    insert_dead_letters,
    validator,
)

READINGS = SENSOR_READINGS
DUPLICATE_KEY = 11000
__all__ = ["DEAD_LETTERS", "READINGS", "ensure_indexes", "write_dead_letters", "write_readings"]


def ensure_indexes(db: Database) -> None:
    """Collections and indexes (the unique ``(moteid, epoch)`` one); idempotent."""
    init_database(db)


def _dup_indices(exc: BulkWriteError) -> set[int]:
    errors = exc.details.get("writeErrors", [])
    others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
    if others or exc.details.get("writeConcernErrors"):
        raise exc
    return {e["index"] for e in errors}


def write_readings(
    db: Database, docs: list[dict[str, Any]], strategy: str = "insert", validate: bool = False
) -> list[int]:
    """Store readings idempotently; return the indices (into ``docs``) actually inserted.

    Returns only after the server acknowledged the writes (the collection's write
    concern). ``docs`` are not modified.
    """
    if not docs:
        return []
    if validate:
        validator(READINGS).validate_many(docs)
    coll = db[READINGS]
    if strategy == "insert":
        try:
            coll.bulk_write([InsertOne(dict(d)) for d in docs], ordered=False)
            return list(range(len(docs)))
        except BulkWriteError as exc:
            dups = _dup_indices(exc)
            return [i for i in range(len(docs)) if i not in dups]
    if strategy == "upsert":
        ops = [
            UpdateOne(
                {"moteid": d["moteid"], "epoch": d["epoch"]}, {"$setOnInsert": d}, upsert=True
            )
            for d in docs
        ]
        try:
            result = coll.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:  # concurrent upserts of one key may race
            _dup_indices(exc)
            return sorted(u["index"] for u in exc.details.get("upserted", []))
        return sorted(result.upserted_ids)
    raise ValueError(f"unknown write strategy {strategy!r}")


def write_dead_letters(db: Database, docs: list[dict[str, Any]]) -> int:
    """Insert dead letters (schema-checked); ones already stored (same ``_id``) are skipped."""
    return insert_dead_letters(db, docs)
