"""Small repository functions over the iot_analytics collections.

Every write checks its documents against the collection's JSON schema in Python first
(:class:`~iot_fed.store.validation.SchemaValidationError` on a bad document), whether or
not the server enforces validators. Model ``params`` are opaque bytes (``iot_fed.fl``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from iot_fed.readings import FIELDS
from iot_fed.store.collections import (
    BATCH,
    DEAD_LETTERS,
    GLOBAL_MODELS,
    LOCAL_MODELS,
    SENSOR_READINGS,
    batches,
    query_batches,
    validator,
)
from iot_fed.store.device_params import (
    VersionTakenError,
    check_device_params,
    clear_unclaimed,
    insert_device_params,
    remove_save,
)
from iot_fed.store.device_state import read_device_states, write_device_states
from iot_fed.store.durability import durable

if TYPE_CHECKING:
    import pandas as pd

DUPLICATE_KEY = 11000
WriteStrategy = Literal["insert", "upsert"]
# insert_many(ordered=False) + counting duplicate-key errors measured faster on FerretDB
# than bulk UpdateOne($setOnInsert, upsert) -- see bench/bench_ingest.py.
DEFAULT_READINGS_STRATEGY: WriteStrategy = "insert"
_VERSION_RETRIES = 5


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _no_id(docs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k != "_id"} for d in docs]


def _split_write_errors(exc: BulkWriteError) -> tuple[dict[str, Any], int]:
    """(details, duplicate count); re-raise when any error is not a duplicate key."""
    details = exc.details
    errors = details.get("writeErrors", [])
    others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
    if others or details.get("writeConcernErrors"):
        raise exc
    return details, len(errors)


# --- sensor readings ----------------------------------------------------------------


def readings_to_docs(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows (reading columns, plus fault columns if present) -> MongoDB documents."""
    import pandas as pd  # only callers holding a DataFrame pay for pandas

    cols = [c for c in (*FIELDS, "fault", "fault_reason") if c in df.columns]
    frame = df[cols].astype(object).where(df[cols].notna(), None)
    frame["ts"] = list(pd.DatetimeIndex(pd.to_datetime(df["ts"], utc=True)).to_pydatetime())
    return frame.to_dict("records")


def duplicate_indices(exc: BulkWriteError) -> set[int]:
    """Indices of the duplicate-key failures; re-raise when any error is something else."""
    _split_write_errors(exc)
    return {e["index"] for e in exc.details.get("writeErrors", [])}


def insert_readings(
    db: Database,
    docs: Sequence[Mapping[str, Any]],
    strategy: WriteStrategy = DEFAULT_READINGS_STRATEGY,
    *,
    validate: bool = True,
    owned: bool = False,
) -> list[int]:
    """Store readings idempotently; return the indices (into ``docs``) actually inserted.

    First write wins: a reading whose (moteid, epoch) already exists (also earlier in
    ``docs``) is left untouched. ``strategy`` picks the bulk write: ``insert``
    (insert_many ordered=False, duplicate-key errors mark the duplicates) or ``upsert``
    (UpdateOne with ``$setOnInsert``, upsert=True, ordered=False). ``validate=False``
    skips the per-document Python schema check, for callers whose documents are already
    checked field by field (Kafka ingestion: ``iot_fed.stream.messages.decode_value``).
    Returns after the server acknowledged the writes; ``docs`` are not modified, unless
    ``owned=True``: the caller hands over fresh dicts without ``_id``, written without a
    copy (the driver adds ``_id`` to them).
    """
    if not docs:
        return []
    if validate:
        validator(SENSOR_READINGS).validate_many(list(docs))
    coll = durable(db, SENSOR_READINGS)
    clean = list(docs) if owned else _no_id(docs)
    if strategy == "insert":
        try:
            coll.insert_many(clean, ordered=False)
            return list(range(len(clean)))
        except BulkWriteError as exc:
            dups = duplicate_indices(exc)
            return [i for i in range(len(clean)) if i not in dups]
    if strategy == "upsert":
        ops = [
            UpdateOne(
                {"moteid": d["moteid"], "epoch": d["epoch"]}, {"$setOnInsert": d}, upsert=True
            )
            for d in clean
        ]
        try:
            return sorted(coll.bulk_write(ops, ordered=False).upserted_ids)
        except BulkWriteError as exc:  # concurrent upserts of one key can race
            duplicate_indices(exc)
            return sorted(u["index"] for u in exc.details.get("upserted", []))
    raise ValueError(f"unknown write strategy {strategy!r}")


def upsert_readings(
    db: Database,
    docs: Sequence[Mapping[str, Any]],
    strategy: WriteStrategy = DEFAULT_READINGS_STRATEGY,
) -> tuple[int, int]:
    """Store readings idempotently (schema-checked); return (inserted, duplicates).

    Counts over :func:`insert_readings`: a reading whose (moteid, epoch) already exists
    is left untouched and counted as a duplicate (also within ``docs``).
    """
    new = insert_readings(db, docs, strategy)
    return len(new), len(docs) - len(new)


def readings_for_device(
    db: Database,
    moteid: int,
    since_epoch: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """One mote's readings with ``epoch > since_epoch``, in epoch order (no ``_id``).

    With ``limit``, the *latest* ``limit`` of them (still returned oldest first).
    """
    query: dict[str, Any] = {"moteid": int(moteid)}
    if since_epoch is not None:
        query["epoch"] = {"$gt": int(since_epoch)}
    cur = db[SENSOR_READINGS].find(query, {"_id": 0})
    if limit is not None:
        docs = list(cur.sort("epoch", DESCENDING).limit(int(limit)))
        docs.reverse()
        return docs
    return list(cur.sort("epoch", ASCENDING))


def readings_for_devices(
    db: Database,
    since_epochs: Mapping[int, int | None],
    limit: int | None = None,
    expected: Mapping[int, int] | None = None,
) -> dict[int, list[dict[str, Any]]]:
    """Several motes' readings in ONE query: ``{moteid: readings with epoch > since}``.

    Same per-mote semantics as :func:`readings_for_device` (epoch order; ``limit`` keeps
    the latest, client side: callers bound the read by each device's ``since``). One query
    per batch of devices, never one per device: at most
    :data:`~iot_fed.store.collections.BATCH` devices, and about
    :data:`~iot_fed.store.collections.READINGS_PER_QUERY` readings by each device's
    ``expected`` count, where given
    (:func:`~iot_fed.store.collections.query_batches`).
    """
    out: dict[int, list[dict[str, Any]]] = {int(m): [] for m in since_epochs}
    clauses = [
        {"moteid": int(m)} if e is None else {"moteid": int(m), "epoch": {"$gt": int(e)}}
        for m, e in since_epochs.items()
    ]
    sizes = [(expected or {}).get(int(m), 0) for m in since_epochs]
    for part in query_batches(clauses, sizes):
        for d in db[SENSOR_READINGS].find({"$or": list(part)}, {"_id": 0}):
            out[int(d["moteid"])].append(d)
    for m, docs in out.items():
        docs.sort(key=lambda d: d["epoch"])
        if limit is not None:
            out[m] = docs[-int(limit) :] if limit > 0 else []
    return out


def reading_counts(db: Database, motes: Iterable[int] | None = None) -> dict[int, dict[str, int]]:
    """Per mote (all, or ``motes``): ``{"count": n, "max_epoch": e}`` over its stored
    readings, one aggregation (per batch of ``motes``). A server without the ``$max``
    accumulator (FerretDB v1) gets the max from the unique (moteid, epoch) index, one
    cheap query per mote."""
    coll = db[SENSOR_READINGS]
    parts = [None] if motes is None else list(batches(sorted({int(m) for m in motes})))

    def grouped(**fields: Any) -> Iterator[dict[str, Any]]:  # one aggregation per batch
        for part in parts:
            match = [] if part is None else [{"$match": {"moteid": {"$in": list(part)}}}]
            group = {"_id": "$moteid", "count": {"$sum": 1}, **fields}
            yield from coll.aggregate([*match, {"$group": group}])

    try:
        rows = [(r, r["max_epoch"]) for r in grouped(max_epoch={"$max": "$epoch"})]
    except OperationFailure:
        newest = [("epoch", DESCENDING)]
        rows = [
            (r, coll.find_one({"moteid": r["_id"]}, {"epoch": 1}, sort=newest)["epoch"])
            for r in grouped()
        ]
    return {
        int(r["_id"]): {"count": int(r["count"]), "max_epoch": int(top)}
        for r, top in sorted(rows, key=lambda rt: rt[0]["_id"])
    }


def insert_dead_letters(db: Database, docs: Sequence[Mapping[str, Any]]) -> int:
    """Insert dead-letter documents (ts, reason, raw bytes, ...); return how many were new.

    A caller-chosen ``_id`` (e.g. ``topic:partition:offset``) makes re-inserting the same
    dead letter a no-op; documents without one always insert.
    """
    if not docs:
        return 0
    validator(DEAD_LETTERS).validate_many(list(docs))
    try:
        coll = durable(db, DEAD_LETTERS)
        return len(coll.insert_many([dict(d) for d in docs], ordered=False).inserted_ids)
    except BulkWriteError as exc:
        details, _ = _split_write_errors(exc)
        return int(details.get("nInserted", 0))


# --- models -------------------------------------------------------------------------


def next_version(db: Database, collection: str = GLOBAL_MODELS, device: str | None = None) -> int:
    """1 + the highest stored version (per ``device`` for local models), or 1."""
    query = {"device": str(device)} if device is not None else {}
    top = db[collection].find_one(query, {"version": 1}, sort=[("version", DESCENDING)])
    return int(top["version"]) + 1 if top else 1


def _insert_versioned(
    db: Database, collection: str, doc: dict[str, Any], device: str | None
) -> dict[str, Any]:
    """Insert ``doc`` with the next free version, retrying if another writer took it."""
    given = doc.get("version")
    for _ in range(_VERSION_RETRIES):
        if given is None:
            doc["version"] = next_version(db, collection, device)
        validator(collection).validate(doc)
        try:
            durable(db, collection).insert_one(doc)
            doc.pop("_id", None)
            return doc
        except DuplicateKeyError:
            if given is not None:
                raise
    raise RuntimeError(f"{collection}: could not claim a version after {_VERSION_RETRIES} tries")


def local_model_doc(
    device: str | int,
    params: bytes,
    *,
    n_samples: int = 0,
    base_version: int | None = None,
    last_epoch: int | None = None,
    threshold: float | None = None,
    metrics: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    version: int | None = None,
) -> dict[str, Any]:
    """A ``local_models`` document (``version`` None: the device's next one on save)."""
    return {
        "device": str(device),
        "version": version,
        "params": bytes(params),
        "created_at": utcnow(),
        "base_version": base_version,
        "n_samples": int(n_samples),
        "last_epoch": last_epoch,
        "threshold": threshold,
        "metrics": dict(metrics or {}),
        "config": dict(config or {}),
    }


def _state_of(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "local_version": int(doc["version"]),
        "last_epoch": doc["last_epoch"],
        "updated_at": utcnow(),
    }


def save_local_model(
    db: Database, device: str | int, params: bytes, **fields: Any
) -> dict[str, Any]:
    """Store one device model as the device's next version; return the stored document.
    (A round stores its devices together: :func:`save_local_models`.)"""
    doc = _insert_versioned(
        db, LOCAL_MODELS, local_model_doc(device, params, **fields), str(device)
    )
    write_device_states(db, {int(doc["device"]): _state_of(doc)})
    return doc


def save_local_models(
    db: Database,
    docs: Sequence[dict[str, Any]],
    holdouts: Mapping[int, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Store a round's device models, each with its ``version`` set by the caller (the
    device's newest + 1, :func:`local_versions`), and their devices' states (newest
    version, trained-through epoch, and the held-out sample in ``holdouts``), in batches.

    A model whose (device, version) is stored already was stored by an earlier attempt of
    the same round (a retry reads the same states, so it picks the same versions) or by a
    concurrent one: it is left as it is, not stored twice. Returns the documents stored now.
    """
    if not docs:
        return []
    validator(LOCAL_MODELS).validate_many(list(docs))
    coll = durable(db, LOCAL_MODELS)
    stored: list[dict[str, Any]] = []
    for part in batches(docs):
        clean = _no_id(part)
        try:
            coll.insert_many(clean, ordered=False)
            dups: set[int] = set()
        except BulkWriteError as exc:
            dups = duplicate_indices(exc)
        stored += [_no_id([d])[0] for i, d in enumerate(clean) if i not in dups]
    states = {int(d["device"]): _state_of(d) for d in docs}
    for m, h in (holdouts or {}).items():
        if int(m) in states:
            states[int(m)].update(h)
    write_device_states(db, states)
    return stored


def get_local_model(
    db: Database, device: str | int, version: int | None = None
) -> dict[str, Any] | None:
    """A device's model: ``version``, or its latest when None."""
    query: dict[str, Any] = {"device": str(device)}
    if version is not None:
        query["version"] = int(version)
    return db[LOCAL_MODELS].find_one(query, {"_id": 0}, sort=[("version", DESCENDING)])


def local_model_devices(db: Database) -> list[str]:
    """Every device with a local model (the fleet the global model serves), sorted."""
    return sorted(db[LOCAL_MODELS].distinct("device"), key=int)


def local_versions(db: Database, devices: Iterable[str | int]) -> dict[int, tuple[int, int | None]]:
    """Per device with a local model: ``(newest version, trained-through epoch)``, from the
    devices' states in batches. A device stored before states existed is read from its
    models' small fields (once: its next round writes its state)."""
    motes = sorted({int(d) for d in devices})
    out = {
        m: (int(s["local_version"]), s.get("last_epoch"))
        for m, s in read_device_states(db, motes, holdout=False).items()
    }
    missing = [str(m) for m in motes if m not in out]
    fields = {"_id": 0, "device": 1, "version": 1, "last_epoch": 1}
    for part in batches(missing):
        for d in db[LOCAL_MODELS].find({"device": {"$in": list(part)}}, fields, batch_size=BATCH):
            m, v, e = int(d["device"]), int(d["version"]), d.get("last_epoch")
            old_v, old_e = out.get(m, (0, None))
            top = e if old_e is None else (old_e if e is None else max(old_e, int(e)))
            out[m] = (max(old_v, v), top)
    return out


def trained_through(db: Database, devices: Iterable[str | int] | None = None) -> dict[int, int]:
    """Per device (all with a local model when None), the newest epoch its local models
    were trained on (devices never trained on a reading are left out)."""
    names = local_model_devices(db) if devices is None else devices
    return {m: int(e) for m, (_, e) in local_versions(db, names).items() if e is not None}


def latest_local_models(
    db: Database,
    devices: Iterable[str | int] | None = None,
    fresher_than: dt.datetime | None = None,
) -> dict[str, dict[str, Any]]:
    """The latest model per device (all devices, or ``devices``), optionally only those
    created after ``fresher_than``; keyed by device. Batched: all devices since
    ``fresher_than`` in one query on ``created_at``, else the newest versions
    (:func:`local_versions`) fetched by (device, version), a batch at a time."""
    coll = db[LOCAL_MODELS]
    found: list[dict[str, Any]] = []
    if devices is None and fresher_than is not None:
        found = list(coll.find({"created_at": {"$gt": fresher_than}}, {"_id": 0}))
    else:
        names = local_model_devices(db) if devices is None else devices
        keys = [{"device": str(m), "version": v} for m, (v, _) in local_versions(db, names).items()]
        for part in batches(keys):
            found += coll.find({"$or": list(part)}, {"_id": 0}, batch_size=BATCH)
    out: dict[str, dict[str, Any]] = {}
    for doc in found:
        created = doc["created_at"]
        if created.tzinfo is None:
            doc["created_at"] = created = created.replace(tzinfo=dt.UTC)
        if fresher_than is not None and created <= fresher_than:
            continue
        name = doc["device"]
        if name not in out or doc["version"] > out[name]["version"]:
            out[name] = doc
    return out


def save_global_model(
    db: Database,
    params: bytes,
    *,
    lineage: Sequence[Mapping[str, Any]] = (),
    strategy: str = "fedavg",
    parent_version: int | None = None,
    threshold: float | None = None,
    calibrated_devices: Iterable[int] | None = None,
    metrics: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    promoted: bool = False,
    version: int | None = None,
    device_params: Sequence[Mapping[str, Any]] | None = None,
    devices_aggregated: int | None = None,
) -> dict[str, Any]:
    """Store an aggregated model as the next global version (promoted if asked);
    ``calibrated_devices``: the motes its bundle has a threshold of their own for (None:
    not stored, readers take them from the bundle).

    ``device_params``: the version's per-device params (``moteid``, ``threshold``,
    ``norm_mean``, ``norm_std``, ``lineage``), stored apart in ``global_device_params``
    (:mod:`iot_fed.store.device_params`) before the version document, which records
    their count and token (``devices_aggregated``: how many devices ``lineage`` had before
    the caller capped it)."""
    doc: dict[str, Any] = {
        "version": version,
        "params": bytes(params),
        "created_at": utcnow(),
        "promoted": False,
        "promoted_at": None,
        "strategy": strategy,
        "parent_version": parent_version,
        "lineage": [dict(x) for x in lineage],
        "threshold": threshold,
        "metrics": dict(metrics or {}),
        "config": dict(config or {}),
    }
    if calibrated_devices is not None:
        doc["calibrated_devices"] = sorted(int(d) for d in calibrated_devices)
    if device_params is None:
        doc = _insert_versioned(db, GLOBAL_MODELS, doc, None)
    else:
        doc = _insert_with_device_params(db, doc, device_params, devices_aggregated)
    return promote(db, doc["version"]) if promoted else doc


def _insert_with_device_params(
    db: Database,
    doc: dict[str, Any],
    params: Sequence[Mapping[str, Any]],
    devices_aggregated: int | None,
) -> dict[str, Any]:
    """Claim a version for ``doc``: its device params first (batches), its document last.

    A save that stopped in between left params under a version no document claims: they
    are cleared before writing. A writer that loses the version to another removes its
    own params and tries the next version."""
    given = doc.get("version")
    summary = {
        "count": len(params),
        "calibrated": sum(1 for p in params if p.get("threshold") is not None),
        "devices_aggregated": int(
            len(doc["lineage"]) if devices_aggregated is None else devices_aggregated
        ),
    }
    for _ in range(_VERSION_RETRIES):
        v = int(given) if given is not None else next_version(db)
        token = uuid.uuid4().hex
        docs = [{**p, "version": v, "token": token} for p in params]
        check_device_params(docs)
        doc.update(version=v, device_params={**summary, "token": token})
        validator(GLOBAL_MODELS).validate(doc)
        if db[GLOBAL_MODELS].find_one({"version": v}, {"_id": 1}) is None:
            clear_unclaimed(db, v)
        try:
            insert_device_params(db, docs)
            durable(db, GLOBAL_MODELS).insert_one(doc)
            doc.pop("_id", None)
            return doc
        except (VersionTakenError, DuplicateKeyError):
            remove_save(db, v, token)
            if given is not None:
                raise
    raise RuntimeError(f"{GLOBAL_MODELS}: could not claim a version after {_VERSION_RETRIES} tries")


def get_global_model(db: Database, version: int) -> dict[str, Any] | None:
    return db[GLOBAL_MODELS].find_one({"version": int(version)}, {"_id": 0})


def latest_global_model(db: Database) -> dict[str, Any] | None:
    """The highest global version, promoted or not."""
    return db[GLOBAL_MODELS].find_one({}, {"_id": 0}, sort=[("version", DESCENDING)])


def promoted_global_model(db: Database) -> dict[str, Any] | None:
    """The promoted global model (the highest promoted version if several), or None."""
    return db[GLOBAL_MODELS].find_one(
        {"promoted": True}, {"_id": 0}, sort=[("version", DESCENDING)]
    )


def promoted_version(db: Database) -> int | None:
    """The promoted global version (highest if several) without fetching params; cheap."""
    doc = db[GLOBAL_MODELS].find_one(
        {"promoted": True}, {"_id": 0, "version": 1}, sort=[("version", DESCENDING)]
    )
    return None if doc is None else int(doc["version"])


def promoted_calibration(db: Database) -> dict[str, Any] | None:
    """The promoted version's ``version`` and ``calibrated_devices`` (absent in a version
    stored before the field existed) without its params; None when nothing is promoted."""
    return db[GLOBAL_MODELS].find_one(
        {"promoted": True},
        {"_id": 0, "version": 1, "calibrated_devices": 1},
        sort=[("version", DESCENDING)],
    )


def latest_global_created_at(db: Database) -> dt.datetime | None:
    """When the highest global version was stored (UTC), without its params."""
    doc = db[GLOBAL_MODELS].find_one(
        {}, {"_id": 0, "created_at": 1}, sort=[("version", DESCENDING)]
    )
    if doc is None:
        return None
    t = doc["created_at"]
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def devices_with_models_since(db: Database, since: dt.datetime | None) -> list[str]:
    """Devices with a local model created after ``since`` (all with one when None), sorted."""
    query = {} if since is None else {"created_at": {"$gt": since}}
    return sorted(db[LOCAL_MODELS].distinct("device", query), key=int)


def set_global_replay(db: Database, version: int, replay: Mapping[str, Any]) -> None:
    """Store the promotion replay's verdict with a global version (``metrics.replay``)."""
    res = durable(db, GLOBAL_MODELS).update_one(
        {"version": int(version)}, {"$set": {"metrics.replay": dict(replay)}}
    )
    if res.matched_count == 0:
        raise KeyError(f"global model version {version} does not exist")


def promote(db: Database, version: int) -> dict[str, Any]:
    """Make ``version`` the promoted global model and demote every other one."""
    coll = durable(db, GLOBAL_MODELS)
    res = coll.update_one(
        {"version": int(version)}, {"$set": {"promoted": True, "promoted_at": utcnow()}}
    )
    if res.matched_count == 0:
        raise KeyError(f"global model version {version} does not exist")
    coll.update_many(
        {"promoted": True, "version": {"$ne": int(version)}}, {"$set": {"promoted": False}}
    )
    doc = get_global_model(db, version)
    assert doc is not None
    return doc
