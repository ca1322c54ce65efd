"""Idempotent database setup: collections, ``$jsonSchema`` validators where supported, indexes."""

from __future__ import annotations

import logging
import threading
from typing import Any

from pymongo.database import Database
from pymongo.errors import CollectionInvalid, OperationFailure

from iot_fed.store.collections import COLLECTIONS, INDEXES, RETIRED_INDEXES, load_schema

log = logging.getLogger(__name__)

NAMESPACE_EXISTS = 48


def _server_validator(db: Database, name: str) -> dict[str, Any] | None:
    info = next(iter(db.list_collections(filter={"name": name})), None)
    return (info or {}).get("options", {}).get("validator")


def _apply_validator(db: Database, name: str) -> str:
    """Set the collection's validator; return 'applied' or why not (never raises)."""
    want = {"$jsonSchema": load_schema(name)}
    if _server_validator(db, name) == want:
        return "applied"
    try:
        db.command(
            "collMod", name, validator=want, validationLevel="strict", validationAction="error"
        )
    except OperationFailure as exc:
        msg = (exc.details or {}).get("errmsg") or str(exc)
        return f"unsupported by server (code {exc.code}: {msg})"
    if _server_validator(db, name) == want:
        return "applied"
    return "unsupported by server (validator accepted but not stored)"


def init_database(db: Database) -> dict[str, Any]:
    """Create the collections, validators and indexes; safe to run any number of times.

    Returns a report: per collection ``created`` (bool), ``validator`` ('applied' or the
    reason it is not, e.g. FerretDB without validator support; documents are always
    checked in Python before writes anyway) and ``indexes`` (names).
    """
    existing = set(db.list_collection_names())
    report: dict[str, Any] = {}
    validators_supported = True
    for name in COLLECTIONS:
        created = False
        if name not in existing:
            try:
                db.create_collection(name)
                created = True
            except CollectionInvalid:  # created concurrently
                pass
            except OperationFailure as exc:
                # another process created it meanwhile: MongoDB says 48; mongo-java-server,
                # racing on its namespace list, can answer another error for the same thing
                if exc.code != NAMESPACE_EXISTS and name not in db.list_collection_names():
                    raise
        if validators_supported:
            state = _apply_validator(db, name)
            if state != "applied":
                validators_supported = False
                log.warning(
                    "%s: server-side $jsonSchema validation %s; relying on the Python "
                    "schema check before every write",
                    db.name,
                    state,
                )
        else:
            state = "skipped (server does not support validators)"
        coll = db[name]
        names = []
        retired = set(RETIRED_INDEXES.get(name, ())) & set(coll.index_information())
        for old in sorted(retired):
            coll.drop_index(old)
            log.info("%s.%s: dropped the retired index %s", db.name, name, old)
        for spec in INDEXES[name]:
            try:
                coll.create_index(
                    list(spec.keys), name=spec.name, unique=spec.unique, **spec.options
                )
            except OperationFailure:  # built concurrently by another process: same check
                built = coll.index_information().get(spec.name, {}).get("key")
                if built is None or [(k, int(d)) for k, d in built] != list(spec.keys):
                    raise
            names.append(spec.name)
        report[name] = {"created": created, "validator": state, "indexes": names}
    log.info("initialised database %s: %s", db.name, report)
    return report


_READY: set[tuple[frozenset, str]] = set()
_READY_LOCK = threading.Lock()


def ensure_database(db: Database) -> None:
    """:func:`init_database` once per process and database (later calls return at once).

    Long-lived callers (the ingestion sensor, resources) call this on every use; only the
    first call per server and database talks to the server.
    """
    key = (frozenset(db.client.topology_description.server_descriptions()), db.name)
    with _READY_LOCK:
        if key in _READY:
            return
        init_database(db)
        _READY.add(key)


def database_status(db: Database) -> dict[str, Any]:
    """Per collection: document count and index names (missing collections say so)."""
    existing = set(db.list_collection_names())
    out: dict[str, Any] = {}
    for name in COLLECTIONS:
        if name not in existing:
            out[name] = {"exists": False}
            continue
        coll = db[name]
        out[name] = {
            "exists": True,
            "count": coll.estimated_document_count(),
            "indexes": sorted(coll.index_information()),
            "validator": _server_validator(db, name) is not None,
        }
    return out
