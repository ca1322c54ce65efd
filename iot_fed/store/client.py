"""MongoDB client factory with clear errors for a wrong URI or an unreachable server."""

from __future__ import annotations

import logging

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import ConfigurationError, InvalidURI, OperationFailure, PyMongoError

from iot_fed.redact import redact

log = logging.getLogger(__name__)


class StoreConnectionError(RuntimeError):
    """The MongoDB server cannot be reached, or the URI / credentials are wrong."""


def connect(uri: str, database: str, timeout: float = 5.0) -> Database:
    """A ``Database`` on a reachable server (pinged), else :class:`StoreConnectionError`.

    ``timeout`` (seconds) bounds server selection and connecting. Close it with
    ``db.client.close()``.
    """
    shown = redact(uri)
    ms = max(int(timeout * 1000), 1)
    try:
        client: MongoClient = MongoClient(
            uri,
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=ms,
            tz_aware=True,
            appname="iot_fed",
        )
    except (InvalidURI, ConfigurationError, ValueError, TypeError) as exc:
        raise StoreConnectionError(
            f"invalid MongoDB URI {shown!r}: {exc} (set IOT_FED_MONGODB_URI)"
        ) from exc
    try:
        client.admin.command("ping")
    except OperationFailure as exc:
        client.close()
        raise StoreConnectionError(f"MongoDB at {shown} refused us: {exc}") from exc
    except PyMongoError as exc:
        client.close()
        raise StoreConnectionError(
            f"cannot reach MongoDB at {shown} within {timeout:g}s "
            f"(is it running? `iot-fed services up` starts a local one): {exc}"
        ) from exc
    log.debug("connected to %s, database %s", shown, database)
    return client[database]
