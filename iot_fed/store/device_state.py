"""One document per device in ``device_state`` (``_id`` = mote id), kept by its local
rounds: its newest local model version and trained-through epoch, and its recent
held-out window features (the aggregation's validation and calibration sample).

A round reads the states of its devices and writes them back in batches of
:data:`~iot_fed.store.collections.BATCH`, never one call per device.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from pymongo import UpdateOne
from pymongo.database import Database

from iot_fed.store.collections import BATCH, DEVICE_STATE, batches, validator
from iot_fed.store.durability import durable


def read_device_states(
    db: Database, motes: Iterable[int], *, holdout: bool = True
) -> dict[int, dict[str, Any]]:
    """``{moteid: state}`` of those ``motes`` that have one (without the held-out sample
    unless ``holdout``)."""
    fields = None if holdout else {"holdout_epochs": 0, "holdout_features": 0}
    out: dict[int, dict[str, Any]] = {}
    for part in batches(sorted({int(m) for m in motes})):
        for d in db[DEVICE_STATE].find({"_id": {"$in": list(part)}}, fields, batch_size=BATCH):
            out[int(d["_id"])] = d
    return out


def holdout_epochs(state: Mapping[str, Any] | None) -> np.ndarray:
    """The epochs of a state's kept held-out sample (empty without one)."""
    raw = (state or {}).get("holdout_epochs") or b""
    return np.frombuffer(bytes(raw), "<i8").copy()


def holdout_spans(db: Database, motes: Iterable[int]) -> dict[int, int]:
    """``{moteid: newest - oldest epoch}`` of the kept held-out samples (epochs only)."""
    out: dict[int, int] = {}
    for part in batches(sorted({int(m) for m in motes})):
        for d in db[DEVICE_STATE].find({"_id": {"$in": list(part)}}, {"holdout_epochs": 1}):
            ep = holdout_epochs(d)
            out[int(d["_id"])] = int(ep.max() - ep.min()) if ep.size else 0
    return out


def write_device_states(db: Database, states: Mapping[int, Mapping[str, Any]]) -> None:
    """Set the given fields of each device's state (created when missing), in batches."""
    docs = [{**s, "_id": int(m)} for m, s in sorted(states.items())]
    validator(DEVICE_STATE).validate_many(docs)
    coll = durable(db, DEVICE_STATE)
    for part in batches(docs):
        ops = [
            UpdateOne(
                {"_id": d["_id"]}, {"$set": {k: v for k, v in d.items() if k != "_id"}}, upsert=True
            )
            for d in part
        ]
        coll.bulk_write(ops, ordered=False)
