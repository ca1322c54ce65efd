"""The write concern of every store write: MongoDB's durability vocabulary, configurable.

``IOT_FED_MONGODB_WRITE_CONCERN`` (``1`` by default, or ``majority`` on a replica set) and
``IOT_FED_MONGODB_JOURNAL`` (default true: acknowledged only once journaled) give the
:class:`~pymongo.write_concern.WriteConcern`. The local mongo-java-server commits its store
before answering such a write, so an acknowledged write survives kill -9; on a real
replica set the same concern means what MongoDB documents.
"""

from __future__ import annotations

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.write_concern import WriteConcern


def write_concern(w: str | int | None = None, journal: bool | None = None) -> WriteConcern:
    """The configured write concern (arguments override the settings)."""
    if w is None or journal is None:
        from iot_fed.config import get_settings

        s = get_settings()
        w = s.mongodb_write_concern if w is None else w
        journal = s.mongodb_journal if journal is None else journal
    w_value: str | int = int(w) if isinstance(w, str) and w.isdigit() else w
    return WriteConcern(w=w_value, j=bool(journal))


def durable(db: Database, name: str) -> Collection:
    """Collection ``name`` for writes: the configured concern unless ``db`` has its own."""
    if not db.write_concern.is_server_default:
        return db[name]
    return db.get_collection(name, write_concern=write_concern())
