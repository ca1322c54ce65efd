"""The process-wide ingesters of long-lived callers (the Dagster sensor): consumer, DLQ
producer, topic check, connection and database init are built once per settings."""

from __future__ import annotations

import threading

from iot_fed.config import Settings
from iot_fed.store import StoreConnectionError, connect
from iot_fed.stream.ingest import Ingestor
from iot_fed.stream.ingest_result import IngestError, service_error

_SHARED: dict[tuple, Ingestor] = {}
_SHARED_LOCK = threading.Lock()


def _shared_key(kafka: Settings, mongo: Settings, topic: str | None) -> tuple:
    return (
        tuple(sorted(kafka.kafka_client_config().items())),
        topic or kafka.kafka_topic,
        kafka.kafka_dlq_topic,
        kafka.kafka_consumer_group,
        mongo.mongodb_uri,
        mongo.mongodb_database,
    )


def shared_ingestor(
    kafka: Settings, mongo: Settings | None = None, *, topic: str | None = None
) -> Ingestor:
    """The process-wide :class:`Ingestor` for these settings, built on first use.

    ``kafka`` gives the Kafka side (bootstrap, security, topic, group) and the ingest
    knobs; ``mongo`` (default: ``kafka``) the MongoDB URI and database. Consumer, DLQ
    producer, topic check, connection and database init are made once and reused by
    every later call (e.g. every sensor tick). A service that is down raises
    :class:`IngestError`; nothing is cached then, so the next call tries again.
    """
    mongo = mongo or kafka
    key = _shared_key(kafka, mongo, topic)
    with _SHARED_LOCK:
        ing = _SHARED.get(key)
        if ing is None:
            try:
                db = connect(mongo.mongodb_uri, mongo.mongodb_database, mongo.mongodb_timeout_s)
            except StoreConnectionError as exc:
                raise service_error(mongo, exc) from exc
            try:
                ing = Ingestor(kafka, db, topic=topic)
            except IngestError:
                db.client.close()
                raise
            _SHARED[key] = ing
        return ing


def close_shared_ingestors() -> None:
    """Close every process-wide ingester (tests; a process exiting needs not call it)."""
    with _SHARED_LOCK:
        for ing in _SHARED.values():
            ing.close()
            ing.db.client.close()
        _SHARED.clear()
