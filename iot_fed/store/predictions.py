"""Predictions: one current verdict per reading, stored under :func:`prediction_id` (the
same key as the unique (moteid, ts) index), replaced only by a newer model version's."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ReplaceOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from iot_fed.readings import datetime_ms
from iot_fed.store.collections import PREDICTIONS, validator
from iot_fed.store.durability import durable
from iot_fed.store.repository import duplicate_indices


def prediction_id(moteid: int, ts: dt.datetime | int) -> str:
    """The ``_id`` of the verdict for (moteid, ts): ``"<moteid>:<ts in ms>"``.

    The same key as the unique (moteid, ts) index (MongoDB keeps milliseconds), so a
    prediction is found by ``_id`` (cheap on FerretDB) rather than by a filtered scan.
    """
    ms = ts if isinstance(ts, int) else datetime_ms(ts)
    return f"{int(moteid)}:{int(ms)}"


def insert_new(coll: Any, docs: list[dict[str, Any]]) -> list[int]:
    """insert_many(ordered=False); return the indices (into ``docs``) that already existed."""
    if not docs:
        return []
    try:
        coll.insert_many(docs, ordered=False)
        return []
    except BulkWriteError as exc:
        return sorted(duplicate_indices(exc))


def insert_new_predictions(
    db: Database, docs: Sequence[Mapping[str, Any]], *, validate: bool = True
) -> list[int]:
    """Store verdicts only where (moteid, ts) has none yet (under :func:`prediction_id`);
    return the indices of ``docs`` whose (moteid, ts) already had one, which is kept."""
    if not docs:
        return []
    if validate:
        validator(PREDICTIONS).validate_many(list(docs))
    batch = [{**d, "_id": prediction_id(d["moteid"], d["ts"])} for d in docs]
    return insert_new(durable(db, PREDICTIONS), batch)


@dataclass(frozen=True)
class VerdictWrite:
    """What :func:`upsert_predictions` did: counts, and which documents (by index) did not
    replace the stored verdict (one of the same or a newer model version is kept)."""

    inserted: tuple[int, ...]
    updated: int
    kept: tuple[int, ...]


def upsert_predictions(
    db: Database, docs: Sequence[Mapping[str, Any]], *, validate: bool = True
) -> VerdictWrite:
    """Store one verdict per (moteid, ts) under :func:`prediction_id`, idempotently: one
    unordered ``bulk_write`` of ``ReplaceOne({_id, model_version < new}, doc, upsert=True)``.
    A stored verdict is replaced only by a newer model version's; where the stored one is
    as new or newer, the upsert's insert fails on the unique ``_id`` and it is kept.

    A duplicate key can also mean that another writer inserted the reading's first verdict
    between this upsert's match and its insert (MongoDB retries such an upsert itself only
    when its filter is an equality on the unique key alone, and this one is not): the
    stored versions of the duplicates are read back by ``_id`` and the upserts that met an
    older verdict run once more, now against a stored document (verdicts are never
    deleted), so their second outcome is final."""
    if not docs:
        return VerdictWrite((), 0, ())
    if validate:
        validator(PREDICTIONS).validate_many(list(docs))
    coll = durable(db, PREDICTIONS)
    batch = [{**d, "_id": prediction_id(d["moteid"], d["ts"])} for d in docs]
    inserted, updated, dups = _replace_older(coll, batch, list(range(len(batch))))
    lost = _lost_races(coll, batch, dups)
    if lost:
        again_inserted, again_updated, again_dups = _replace_older(coll, batch, lost)
        inserted += again_inserted
        updated += again_updated
        dups = sorted((set(dups) - set(lost)) | set(again_dups))
    return VerdictWrite(tuple(sorted(inserted)), updated, tuple(dups))


def _replace_older(
    coll: Any, batch: list[dict[str, Any]], idx: list[int]
) -> tuple[list[int], int, list[int]]:
    """The version-guarded upserts of ``batch[i]`` for ``i`` in ``idx``: (indices inserted,
    number replaced, indices that met a duplicate key), indices into ``batch``."""
    ops = [
        ReplaceOne(
            {"_id": batch[i]["_id"], "model_version": {"$lt": int(batch[i]["model_version"])}},
            batch[i],
            upsert=True,
        )
        for i in idx
    ]
    try:
        res = coll.bulk_write(ops, ordered=False)
        return [idx[j] for j in res.upserted_ids], res.modified_count, []
    except BulkWriteError as exc:
        dups = sorted(idx[j] for j in duplicate_indices(exc))
        inserted = [idx[int(u["index"])] for u in exc.details.get("upserted", [])]
        return inserted, int(exc.details["nModified"]), dups


def _lost_races(coll: Any, batch: list[dict[str, Any]], dups: list[int]) -> list[int]:
    """The ``dups`` whose stored verdict is older than theirs (or gone): a concurrent
    insert won the race between their match and their insert."""
    if not dups:
        return []
    ids = list({batch[i]["_id"] for i in dups})
    stored = {
        d["_id"]: d.get("model_version")
        for d in coll.find({"_id": {"$in": ids}}, {"model_version": 1})
    }
    lost = []
    for i in dups:
        v = stored.get(batch[i]["_id"])
        if v is None or int(v) < int(batch[i]["model_version"]):
            lost.append(i)
    return lost
