"""Collection names, JSON schemas (``schemas/<name>.json``) and index definitions."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, TypeVar

from iot_fed.store.validation import DocumentValidator

T = TypeVar("T")

SENSOR_READINGS = "sensor_readings"
LOCAL_MODELS = "local_models"
GLOBAL_MODELS = "global_models"
PREDICTIONS = "predictions"
DEAD_LETTERS = "dead_letters"
EVALUATION_REPORTS = "evaluation_reports"
ANOMALIES = "anomalies"
SCORER_STATUS = "scorer_status"
INGEST_DEVICES = "ingest_devices"
INGEST_OFFSETS = "ingest_offsets"
INCIDENTS = "incidents"
GLOBAL_DEVICE_PARAMS = "global_device_params"
DEVICE_STATE = "device_state"
COLLECTIONS = (
    SENSOR_READINGS,
    LOCAL_MODELS,
    GLOBAL_MODELS,
    PREDICTIONS,
    DEAD_LETTERS,
    EVALUATION_REPORTS,
    ANOMALIES,
    SCORER_STATUS,
    INGEST_DEVICES,
    INGEST_OFFSETS,
    INCIDENTS,
    GLOBAL_DEVICE_PARAMS,
    DEVICE_STATE,
)


BATCH = 1000
"""The most devices one database call reads or writes: a round's calls grow with the
number of batches, never with one call per device."""


READINGS_PER_QUERY = 50_000
"""The most readings one query is expected to return: the project's MongoDB-wire server
holds a query's whole result in its heap (10,000 devices x 300 readings, 300,000 documents
per 1,000-device query, ran it out of a 2 GB heap)."""


def query_batches(items: Sequence[T], sizes: Sequence[int]) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most :data:`BATCH` items whose ``sizes`` (the
    readings each is expected to return) add up to about :data:`READINGS_PER_QUERY`."""
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= BATCH or total + size > READINGS_PER_QUERY):
            yield items[start:i]
            start, total = i, 0
        total += max(int(size), 0)
    if start < len(items):
        yield items[start:]


def batches(items: Sequence[T], size: int = BATCH) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True)
class IndexSpec:
    """One index: ordered ``keys`` as (field, direction) pairs."""

    name: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    options: dict[str, Any] = field(default_factory=dict)


# predictions are keyed on (moteid, ts) as in the design: one current verdict per reading
# (also its ``_id``, predictions.prediction_id); only a newer model version replaces it
# (see predictions.upsert_predictions).
INDEXES: dict[str, tuple[IndexSpec, ...]] = {
    SENSOR_READINGS: (
        IndexSpec("moteid_epoch_unique", (("moteid", 1), ("epoch", 1)), unique=True),
    ),
    LOCAL_MODELS: (
        IndexSpec("device_version_unique", (("device", 1), ("version", 1)), unique=True),
        IndexSpec("created_at", (("created_at", 1),)),
    ),
    GLOBAL_MODELS: (
        IndexSpec("version_unique", (("version", 1),), unique=True),
        IndexSpec("promoted_version", (("promoted", 1), ("version", -1))),
    ),
    PREDICTIONS: (IndexSpec("moteid_ts_unique", (("moteid", 1), ("ts", 1)), unique=True),),
    DEAD_LETTERS: (IndexSpec("ts", (("ts", 1),)),),
    EVALUATION_REPORTS: (
        IndexSpec("report_id_unique", (("report_id", 1),), unique=True),
        IndexSpec("created_at", (("created_at", -1),)),
    ),
    ANOMALIES: (
        IndexSpec("moteid_ts", (("moteid", 1), ("ts", 1))),
        IndexSpec("flagged_at", (("flagged_at", -1),)),
    ),
    SCORER_STATUS: (),
    INGEST_DEVICES: (),  # one document per device, keyed by it, read whole by the sensor
    INGEST_OFFSETS: (IndexSpec("topic", (("topic", 1),)),),
    # a device's incidents in time order (the API's moteid filter), and the open ones whose
    # quiet period the fleet's data time has passed (closed stale/resolved by the scorers);
    # the reporting refresh reads those written since its watermark (updated_at, _id)
    INCIDENTS: (
        IndexSpec("moteid_start", (("moteid", 1), ("start", 1))),
        IndexSpec("state_last_seen", (("state", 1), ("last_seen", 1))),
        IndexSpec("updated_at", (("updated_at", 1), ("_id", 1))),
    ),
    # a global version's per-device params, read in batches of motes (or a whole version)
    GLOBAL_DEVICE_PARAMS: (
        IndexSpec("version_moteid_unique", (("version", 1), ("moteid", 1)), unique=True),
    ),
    DEVICE_STATE: (),  # one document per device (_id = mote id), read by _id in batches
}

# Indexes declared before and dropped by init_database: every index is written on every
# insert and no query needs these (per-mote time ranges of readings use (moteid, epoch);
# nothing selects predictions by model_version alone). Cost: docs/performance.md.
RETIRED_INDEXES: dict[str, tuple[str, ...]] = {
    SENSOR_READINGS: ("moteid_ts",),
    PREDICTIONS: ("model_version",),
}


@cache
def load_schema(collection: str) -> dict[str, Any]:
    """The ``$jsonSchema`` document for a collection (from the package data)."""
    if collection not in COLLECTIONS:
        raise KeyError(f"unknown collection {collection!r}; expected one of {COLLECTIONS}")
    text = resources.files("iot_fed.store").joinpath("schemas", f"{collection}.json").read_text()
    return json.loads(text)


@cache
def validator(collection: str) -> DocumentValidator:
    """The compiled Python validator for a collection."""
    return DocumentValidator(collection, load_schema(collection))
