"""Per-device parameters of a global version, one document per (version, moteid) in
``global_device_params``: what lets a version serve 100,000 devices while its own
document stays small.

A save writes them first, in batches, and the version document last
(:func:`iot_fed.store.repository.save_global_model`), so no reader sees a version before
all its devices' params are in. Each save tags its documents with a fresh ``token`` that
the version document records; readers ask for that token, so leftovers of a save that
never stored its version document are never read (the next save at that version removes
them). Aggregations never run two at a time (the sensors keep one in flight); if two saves
did race for one version, the loser's clearing could remove the winner's params, and the
loader's count check (:func:`iot_fed.federation.bundles.load_global_bundle`) would then
refuse that version loudly rather than serve it with devices missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo.database import Database
from pymongo.errors import BulkWriteError

from iot_fed.store.collections import BATCH, GLOBAL_DEVICE_PARAMS, batches, validator
from iot_fed.store.durability import durable


class VersionTakenError(RuntimeError):
    """Another writer stored params under the version this save claimed."""


def clear_unclaimed(db: Database, version: int) -> None:
    """Remove the params of ``version`` (a save that stopped before its version document)."""
    durable(db, GLOBAL_DEVICE_PARAMS).delete_many({"version": int(version)})


def insert_device_params(db: Database, docs: Sequence[Mapping[str, Any]]) -> None:
    """Insert one version's params in batches; :class:`VersionTakenError` on a duplicate
    (version, moteid): another save claimed the version."""
    coll = durable(db, GLOBAL_DEVICE_PARAMS)
    for part in batches(docs):
        try:
            coll.insert_many([dict(d) for d in part], ordered=False)
        except BulkWriteError as exc:
            from iot_fed.store.repository import duplicate_indices  # re-raises other errors

            duplicate_indices(exc)
            raise VersionTakenError(f"params of version {part[0]['version']} exist") from None


def remove_save(db: Database, version: int, token: str) -> None:
    """Remove what one save wrote (it lost its version to another writer)."""
    durable(db, GLOBAL_DEVICE_PARAMS).delete_many({"version": int(version), "token": token})


def check_device_params(docs: Sequence[Mapping[str, Any]]) -> None:
    validator(GLOBAL_DEVICE_PARAMS).validate_many(list(docs))


def read_device_params(
    db: Database, version: int, token: str, motes: Iterable[int] | None = None
) -> list[dict[str, Any]]:
    """The version's params of ``motes`` (all of them when None), in batches of
    :data:`BATCH` devices; a mote the version has none for is simply absent."""
    coll = db[GLOBAL_DEVICE_PARAMS]
    base = {"version": int(version), "token": token}
    fields = {"_id": 0, "token": 0}
    if motes is None:
        return list(coll.find(base, fields, batch_size=BATCH))
    out: list[dict[str, Any]] = []
    for part in batches(sorted({int(m) for m in motes})):
        out += coll.find({**base, "moteid": {"$in": list(part)}}, fields, batch_size=BATCH)
    return out


def devices_aggregated(doc: Mapping[str, Any]) -> int:
    """How many local models a global version document aggregated (its ``lineage`` is
    capped when its per-device params are stored apart)."""
    saved = doc.get("device_params")
    return int(saved["devices_aggregated"]) if saved else len(doc.get("lineage") or [])


def page_device_params(
    db: Database, version: int, token: str, after: int, limit: int = BATCH
) -> list[dict[str, Any]]:
    """At most ``limit`` of the version's params rows with ``moteid > after``, by mote."""
    query = {"version": int(version), "token": token, "moteid": {"$gt": int(after)}}
    cur = db[GLOBAL_DEVICE_PARAMS].find(query, {"_id": 0, "token": 0})
    return list(cur.sort("moteid", 1).limit(int(min(limit, BATCH))))
