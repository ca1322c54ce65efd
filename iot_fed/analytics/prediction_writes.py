"""Idempotent bulk writes of ``predictions`` that stay fast on FerretDB.

:func:`iot_fed.store.upsert_predictions` sends one ``UpdateOne(upsert=True)`` per
reading; FerretDB v1 (SQLite) answers each with a collection scan, so re-running over
1,000 stored predictions takes minutes. Here every prediction gets a deterministic
``_id`` (``"<moteid>:<ts in ms>"``, the same key as the unique ``(moteid, ts)`` index) and:

1. ``insert_many(ordered=False)``: new predictions land; existing ones fail with
   duplicate-key errors (cheap, index-checked);
2. for those duplicates only, ``delete_many`` of stored verdicts from an *older* model
   version, then the same insert again: replaced ones count as ``updated``, the rest
   (same or newer model version already stored) as ``unchanged`` / ``stale``.

Documents are checked against the collection schema first (``iot_fed.store``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo.database import Database
from pymongo.errors import BulkWriteError

from iot_fed.store import PREDICTIONS, validator

DUPLICATE_KEY = 11000
IN_CHUNK = 1_000


def prediction_id(moteid: int, ts_ms: int) -> str:
    return f"{int(moteid)}:{int(ts_ms)}"


def _insert(db: Database, docs: list[dict[str, Any]]) -> list[int]:
    """Insert; return the indices (into ``docs``) that already existed."""
    if not docs:
        return []
    try:
        db[PREDICTIONS].insert_many(docs, ordered=False)
        return []
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors) or exc.details.get(
                "writeConcernErrors"):
            raise
        return sorted(e["index"] for e in errors)


def write_predictions_docs(db: Database, docs: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Store one verdict per ``_id`` (= moteid, ts); newer model versions replace older.

    Every document needs ``_id`` (see :func:`prediction_id`) and ``model_version``.
    Returns counts: inserted, updated, unchanged (same or newer version kept).
    """
    counts = {"inserted": 0, "updated": 0, "unchanged": 0, "stale": 0}
    if not docs:
        return counts
    validator(PREDICTIONS).validate_many(list(docs))
    batch = [dict(d) for d in docs]
    dups = _insert(db, batch)
    counts["inserted"] = len(batch) - len(dups)
    if not dups:
        return counts
    by_version: dict[int, list[dict[str, Any]]] = {}
    for i in dups:
        by_version.setdefault(int(batch[i]["model_version"]), []).append(batch[i])
    for version, group in by_version.items():
        for k in range(0, len(group), IN_CHUNK):
            part = group[k : k + IN_CHUNK]
            db[PREDICTIONS].delete_many(
                {"_id": {"$in": [d["_id"] for d in part]}, "model_version": {"$lt": version}}
            )
            kept = len(_insert(db, part))
            counts["updated"] += len(part) - kept
            counts["unchanged"] += kept
    return counts
