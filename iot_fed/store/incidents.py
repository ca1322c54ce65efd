"""The ``incidents`` collection: one document per incident
(:mod:`iot_fed.analytics.incidents` builds them), written idempotently.

Every write is a guarded replace: ``ReplaceOne({_id, rev <= new rev}, doc, upsert=True)``
in one unordered ``bulk_write``. ``rev`` only grows along an incident's life, so a
replayed micro-batch, a re-run batch or a late write never takes an incident back; where
the stored revision is newer the upsert's insert fails on the ``_id`` and it is kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import DESCENDING, ReplaceOne, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from iot_fed.analytics.incidents import due_state
from iot_fed.readings import datetime_ms, ms_datetime
from iot_fed.store.collections import INCIDENTS, validator
from iot_fed.store.durability import durable
from iot_fed.store.repository import duplicate_indices

# the pure documents' data times (ms since the epoch) -> the stored dates
_DATES = {
    "start_ms": "start",
    "last_seen_ms": "last_seen",
    "end_ms": "end",
    "last_reading_ms": "last_reading",
    "peak_ms": "peak_at",
}


def _date(ms: int | None) -> dt.datetime | None:
    return None if ms is None else ms_datetime(ms)


def stored_doc(doc: Mapping[str, Any], *, source: str, at: dt.datetime) -> dict[str, Any]:
    """A pure incident document as stored: dates for data times, plus provenance."""
    out = {_DATES.get(k, k): (_date(v) if k in _DATES else v) for k, v in doc.items()}
    return {**out, "updated_at": at, "source": source}


def upsert_incidents(
    db: Database, docs: Sequence[Mapping[str, Any]], *, source: str, at: dt.datetime | None = None
) -> int:
    """Store pure incident documents (:func:`iot_fed.analytics.incidents.advance`); a stored
    revision newer than a document's is kept. Returns how many were written."""
    if not docs:
        return 0
    at = at or dt.datetime.now(dt.UTC)
    batch = [stored_doc(d, source=source, at=at) for d in docs]
    validator(INCIDENTS).validate_many(batch)
    ops = [ReplaceOne({"_id": d["_id"], "rev": {"$lte": d["rev"]}}, d, upsert=True) for d in batch]
    try:
        durable(db, INCIDENTS).bulk_write(ops, ordered=False)
        return len(batch)
    except BulkWriteError as exc:  # a newer revision is stored: kept
        return len(batch) - len(duplicate_indices(exc))


def close_due_incidents(
    db: Database, fleet_ms: int, quiet_s: float, *, at: dt.datetime | None = None
) -> int:
    """Close the open incidents whose quiet period the fleet's data time ``fleet_ms`` has
    passed (:func:`~iot_fed.analytics.incidents.due_state`: their devices went silent, or
    reported no reading after the quiet period yet); return how many."""
    cutoff = _date(fleet_ms - int(quiet_s * 1000))
    coll = db[INCIDENTS]
    ops = []
    for d in coll.find({"state": "open", "last_seen": {"$lt": cutoff}}):
        state = due_state(
            datetime_ms(d["last_seen"]), datetime_ms(d["last_reading"]), fleet_ms, quiet_s
        )
        if state is None:
            continue
        update = {"state": state, "end": d["last_seen"], "rev": int(d["rev"]) | 1}
        # guarded by the revision read: a newer write of the incident wins
        ops.append(
            UpdateOne(
                {"_id": d["_id"], "rev": d["rev"]},
                {"$set": {**update, "updated_at": at or dt.datetime.now(dt.UTC)}},
            )
        )
    if not ops:
        return 0
    return durable(db, INCIDENTS).bulk_write(ops, ordered=False).modified_count


def find_incidents(
    db: Database, *, state: str | None = None, moteid: int | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Incidents, newest start first, optionally of one state and/or device."""
    query: dict[str, Any] = {}
    if state is not None:
        query["state"] = state
    if moteid is not None:
        query["moteid"] = int(moteid)
    return list(db[INCIDENTS].find(query, sort=[("start", DESCENDING)], limit=int(limit)))
