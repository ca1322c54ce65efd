"""Reads for the PostgreSQL reporting store (:mod:`iot_fed.reporting`): small projections,
no model ``params``, one query per call.

Readings are found by insertion order through their ``_id`` (a client-generated ObjectId:
its first four bytes are the insert time), the other sources by their own times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING
from pymongo.database import Database

from iot_fed.readings import FIELDS
from iot_fed.store import collections as coll

Ranges = Mapping[int, tuple[dt.datetime, dt.datetime]]  # moteid -> [lo, hi) in reading time

# the reading contract's fields (its label aside) plus the ingestion fault flag
_READING_FIELDS = {"_id": 0, **{f: 1 for f in FIELDS if f != "label"}, "fault": 1}
_PREDICTION_FIELDS = {
    "_id": 0,
    "moteid": 1,
    "ts": 1,
    "epoch": 1,
    "score": 1,
    "flag": 1,
    "is_anomaly": 1,
    "threshold": 1,
    "model_version": 1,
    "channel_errors": 1,
}


def _range_query(ranges: Ranges) -> dict[str, Any] | None:
    clauses = [{"moteid": int(m), "ts": {"$gte": lo, "$lt": hi}} for m, (lo, hi) in ranges.items()]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$or": clauses}


def reading_keys_after(db: Database, after: ObjectId, limit: int) -> list[dict[str, Any]]:
    """``_id, moteid, ts`` of up to ``limit`` readings inserted after ``after`` (``_id`` order)."""
    cur = db[coll.SENSOR_READINGS].find({"_id": {"$gt": after}}, {"moteid": 1, "ts": 1})
    return list(cur.sort("_id", ASCENDING).limit(int(limit)))


def readings_in_ranges(db: Database, ranges: Ranges) -> list[dict[str, Any]]:
    """All readings of each mote with ``lo <= ts < hi`` (channels, epoch, fault)."""
    query = _range_query(ranges)
    return [] if query is None else list(db[coll.SENSOR_READINGS].find(query, _READING_FIELDS))


def predictions_in_ranges(db: Database, ranges: Ranges) -> list[dict[str, Any]]:
    """The current verdicts of each mote's readings with ``lo <= ts < hi``."""
    query = _range_query(ranges)
    return [] if query is None else list(db[coll.PREDICTIONS].find(query, _PREDICTION_FIELDS))


def anomalies_in_ranges(db: Database, ranges: Ranges) -> list[dict[str, Any]]:
    """Anomaly documents (``moteid, ts, channels, ...``) of each mote with ``lo <= ts < hi``."""
    query = _range_query(ranges)
    if query is None:
        return []
    return list(db[coll.ANOMALIES].find(query, {"_id": 0, "moteid": 1, "ts": 1, "channels": 1}))


def dead_letters_since(db: Database, since: dt.datetime, limit: int) -> list[dict[str, Any]]:
    """``ts, reason`` of up to ``limit`` dead letters with ``ts >= since``, oldest first."""
    cur = db[coll.DEAD_LETTERS].find({"ts": {"$gte": since}}, {"_id": 0, "ts": 1, "reason": 1})
    return list(cur.sort("ts", ASCENDING).limit(int(limit)))


def dead_letters_between(db: Database, lo: dt.datetime, hi: dt.datetime) -> list[dict[str, Any]]:
    """``ts, reason`` of every dead letter with ``lo <= ts < hi``."""
    query = {"ts": {"$gte": lo, "$lt": hi}}
    return list(db[coll.DEAD_LETTERS].find(query, {"_id": 0, "ts": 1, "reason": 1}))


_INCIDENT_FIELDS = {
    "_id": 1,
    "moteid": 1,
    "start": 1,
    "last_seen": 1,
    "end": 1,
    "state": 1,
    "channels": 1,
    "peak_ratio": 1,
    "fault_type": 1,
    "model_version": 1,
    "n_flagged": 1,
    "rev": 1,
    "updated_at": 1,
}


def incidents_written_after(
    db: Database, since: dt.datetime, after_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` incidents in (``updated_at``, ``_id``) order: with ``after_id`` those
    after the key (``since``, ``after_id``), else all with ``updated_at >= since``."""
    query: dict[str, Any] = {"updated_at": {"$gte": since}}
    if after_id is not None:
        query = {
            "$or": [
                {"updated_at": {"$gt": since}},
                {"updated_at": since, "_id": {"$gt": after_id}},
            ]
        }
    cur = db[coll.INCIDENTS].find(query, _INCIDENT_FIELDS)
    return list(cur.sort([("updated_at", ASCENDING), ("_id", ASCENDING)]).limit(int(limit)))


def local_model_summaries(db: Database, since: dt.datetime) -> list[dict[str, Any]]:
    """Device model versions created at or after ``since`` (no params): losses and sizes."""
    fields = {
        "_id": 0,
        "device": 1,
        "version": 1,
        "created_at": 1,
        "base_version": 1,
        "n_samples": 1,
        "threshold": 1,
        "metrics.loss_before": 1,
        "metrics.loss_after": 1,
    }
    cur = db[coll.LOCAL_MODELS].find({"created_at": {"$gte": since}}, fields)
    return list(cur.sort("created_at", ASCENDING))


def global_model_summaries(db: Database) -> list[dict[str, Any]]:
    """Every global version (no params): strategy, promotion, validation losses, lineage."""
    fields = {
        "_id": 0,
        "version": 1,
        "created_at": 1,
        "strategy": 1,
        "promoted": 1,
        "promoted_at": 1,
        "parent_version": 1,
        "threshold": 1,
        "lineage.device": 1,
        "metrics.val_loss": 1,
        "metrics.parent_val_loss": 1,
        "metrics.rejected_local_models": 1,
        "metrics.verdict": 1,
        "metrics.replay": 1,
    }
    return list(db[coll.GLOBAL_MODELS].find({}, fields).sort("version", ASCENDING))


def evaluation_summaries(db: Database) -> list[dict[str, Any]]:
    """``report_id, created_at, global_version, summary`` of every evaluation report."""
    fields = {"_id": 0, "report_id": 1, "created_at": 1, "global_version": 1, "summary": 1}
    return list(db[coll.EVALUATION_REPORTS].find({}, fields).sort("created_at", ASCENDING))


def source_marks(db: Database) -> dict[str, Any]:
    """What the reporting store is built from, in a few cheap reads: the newest reading's
    ``_id``, each other source's document count, the promoted version and the newest
    incident write (incidents change state in place, so their count alone misses it).
    Equal marks: nothing new to report (a decision for the reporting sensor, not the
    refresh)."""
    newest = db[coll.SENSOR_READINGS].find_one({}, {"_id": 1}, sort=[("_id", -1)])
    incident = db[coll.INCIDENTS].find_one(
        {}, {"_id": 1, "updated_at": 1}, sort=[("updated_at", -1), ("_id", -1)]
    )
    promoted = db[coll.GLOBAL_MODELS].find_one(
        {"promoted": True}, {"_id": 0, "version": 1}, sort=[("version", -1)]
    )
    counted = (
        coll.PREDICTIONS,
        coll.ANOMALIES,
        coll.DEAD_LETTERS,
        coll.LOCAL_MODELS,
        coll.GLOBAL_MODELS,
    )
    return {
        "newest_reading": str(newest["_id"]) if newest else None,
        **{name: db[name].estimated_document_count() for name in counted},
        "promoted": promoted["version"] if promoted else None,
        "incidents": (
            f"{incident['updated_at'].isoformat()} {incident['_id']}" if incident else None
        ),
    }
