"""The live side of the store: anomalies and the streaming scorer's heartbeat.

``anomalies`` holds one document per flagged reading, under the same ``_id`` as its
prediction (:func:`~iot_fed.store.predictions.prediction_id`), so a replayed micro-batch
replaces rather than duplicates. ``scorer_status`` holds one heartbeat/progress document
per scorer (``_id`` = its name), which the Dagster observation and the API read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import DESCENDING, DeleteOne, ReplaceOne
from pymongo.database import Database

from iot_fed.store.collections import ANOMALIES, GLOBAL_MODELS, SCORER_STATUS, validator
from iot_fed.store.predictions import (
    insert_new,
    insert_new_predictions,
    prediction_id,
    upsert_predictions,
)

DEFAULT_SCORER = "streaming_evaluation"


def upsert_anomalies(
    db: Database, docs: Sequence[Mapping[str, Any]], cleared: Sequence[str] = ()
) -> int:
    """Store flagged readings (replacing by id) and delete the ``cleared`` ids (readings a
    newer verdict no longer flags); return how many were written.

    New ids go in one ``insert_many`` (a replayed batch's ids fail as duplicates and are
    replaced): the local server runs a bulk of upserts one update at a time, on the
    scorer's path (docs/performance.md)."""
    if not docs and not cleared:
        return 0
    batch = [{**d, "_id": prediction_id(d["moteid"], d["ts"])} for d in docs]
    validator(ANOMALIES).validate_many(batch)
    coll = db[ANOMALIES]
    ops: list[Any] = [
        ReplaceOne({"_id": batch[i]["_id"]}, batch[i], upsert=True) for i in insert_new(coll, batch)
    ]
    ops += [DeleteOne({"_id": i}) for i in cleared]
    if ops:
        coll.bulk_write(ops, ordered=False)
    return len(batch)


def store_verdicts(
    db: Database,
    preds: Sequence[Mapping[str, Any]],
    anomalies: Sequence[Mapping[str, Any]],
    *,
    insert_only: Sequence[int] = (),
) -> dict[str, int]:
    """Write verdicts and their anomalies (the batch asset and the stream alike): the
    predictions (:func:`upsert_predictions`: a stored verdict of the same or a newer model
    version is kept), then the anomalies of the verdicts written, and the removal of the
    anomalies of replaced verdicts that no longer flag. ``insert_only``: indices of
    ``preds`` made without context (a late or repeated reading), stored only where the
    reading has no verdict yet. Returns ``inserted``, ``updated``, ``kept``, ``anomalies``."""
    only = set(insert_only)
    main = [d for i, d in enumerate(preds) if i not in only]
    late = [preds[i] for i in sorted(only)]
    got = upsert_predictions(db, main)
    late_kept = insert_new_predictions(db, late)
    kept = {prediction_id(main[i]["moteid"], main[i]["ts"]) for i in got.kept}
    kept |= {prediction_id(late[i]["moteid"], late[i]["ts"]) for i in late_kept}
    not_replaced = set(got.inserted) | set(got.kept)
    replaced = [d for i, d in enumerate(main) if i not in not_replaced]
    cleared = [prediction_id(d["moteid"], d["ts"]) for d in replaced if not d["is_anomaly"]]
    flagged = [a for a in anomalies if prediction_id(a["moteid"], a["ts"]) not in kept]
    upsert_anomalies(db, flagged, cleared)
    return {
        "inserted": len(got.inserted) + len(late) - len(late_kept),
        "updated": len(replaced),
        "kept": len(kept),
        "anomalies": len(flagged),
    }


def recent_anomalies(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    return list(db[ANOMALIES].find({}, sort=[("flagged_at", DESCENDING)], limit=limit))


def anomalies_since(db: Database, since: dt.datetime) -> int:
    """How many anomalies were flagged at or after ``since``. Counted from a find on the
    ``flagged_at`` index: ``count_documents`` is an aggregation, which mongo-java-server
    runs over the whole (locked) collection."""
    return sum(1 for _ in db[ANOMALIES].find({"flagged_at": {"$gte": since}}, {"_id": 1}))


def write_scorer_status(db: Database, doc: Mapping[str, Any], name: str = DEFAULT_SCORER) -> None:
    """Replace the scorer's heartbeat document (validated)."""
    clean = {**doc, "_id": name}
    validator(SCORER_STATUS).validate(clean)
    db[SCORER_STATUS].replace_one({"_id": name}, clean, upsert=True)


def read_scorer_status(db: Database, name: str = DEFAULT_SCORER) -> dict[str, Any] | None:
    return db[SCORER_STATUS].find_one({"_id": name})


def global_model_versions(db: Database) -> list[dict[str, Any]]:
    """Every global version without its params or device list, newest first (lineage and
    metrics)."""
    fields = {"_id": 0, "params": 0, "calibrated_devices": 0}
    return list(db[GLOBAL_MODELS].find({}, fields, sort=[("version", -1)]))


def promoted_history(db: Database, below: int, limit: int = 5) -> list[dict[str, Any]]:
    """Versions below ``below`` that were promoted once, newest first (with params): the
    fallbacks when the promoted bundle is unreadable."""
    return list(
        db[GLOBAL_MODELS].find(
            {"version": {"$lt": int(below)}, "promoted_at": {"$ne": None}},
            {"_id": 0},
            sort=[("version", -1)],
            limit=limit,
        )
    )
