"""MongoDB storage for iot_fed: collections, JSON schemas, indexes and repositories."""

from iot_fed.store.client import StoreConnectionError, connect
from iot_fed.store.collections import (
    COLLECTIONS,
    DEAD_LETTERS,
    GLOBAL_MODELS,
    LOCAL_MODELS,
    PREDICTIONS,
    SENSOR_READINGS,
    load_schema,
    validator,
)
from iot_fed.store.repository import (
    get_global_model,
    get_local_model,
    insert_dead_letters,
    latest_global_model,
    latest_local_models,
    next_version,
    promote,
    promoted_global_model,
    reading_counts,
    readings_for_device,
    readings_to_docs,
    save_global_model,
    save_local_model,
    upsert_predictions,
    upsert_readings,
)
from iot_fed.store.setup import database_status, init_database
from iot_fed.store.validation import SchemaValidationError

__all__ = [
    "COLLECTIONS",
    "DEAD_LETTERS",
    "GLOBAL_MODELS",
    "LOCAL_MODELS",
    "PREDICTIONS",
    "SENSOR_READINGS",
    "SchemaValidationError",
    "StoreConnectionError",
    "connect",
    "database_status",
    "get_global_model",
    "get_local_model",
    "init_database",
    "insert_dead_letters",
    "latest_global_model",
    "latest_local_models",
    "load_schema",
    "next_version",
    "promote",
    "promoted_global_model",
    "reading_counts",
    "readings_for_device",
    "readings_to_docs",
    "save_global_model",
    "save_local_model",
    "upsert_predictions",
    "upsert_readings",
    "validator",
]
