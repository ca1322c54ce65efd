"""The Python JSON-schema check (no server needed)."""

from __future__ import annotations

import datetime as dt

import pytest

from iot_fed.store.collections import (
    COLLECTIONS,
    DEVICE_STATE,
    INDEXES,
    INGEST_DEVICES,
    SCORER_STATUS,
    load_schema,
    validator,
)
from iot_fed.store.validation import SchemaValidationError, bson_type, compile_schema

TS = dt.datetime(2004, 2, 28, 1, 0, tzinfo=dt.UTC)
READING = {
    "ts": TS,
    "epoch": 3,
    "moteid": 1,
    "temperature": 19.98,
    "humidity": 37.09,
    "light": 45.08,
    "voltage": 2.69964,
    "label": None,
}


def test_every_collection_has_schema_and_indexes() -> None:
    for name in COLLECTIONS:
        assert load_schema(name)["bsonType"] == "object"
        # one heartbeat document per scorer / landed count / state per device, by _id only
        assert INDEXES[name] or name in (SCORER_STATUS, INGEST_DEVICES, DEVICE_STATE), name
        validator(name)  # compiles


def test_valid_reading_passes() -> None:
    validator("sensor_readings").validate(READING)
    validator("sensor_readings").validate(
        READING | {"label": "spike", "fault": True, "fault_reason": "temperature>85"}
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ts": "2004-02-28T01:00:00Z"}, "ts: expected date, got string"),
        ({"moteid": 0}, "moteid: 0 < minimum 1"),
        ({"epoch": 1.5}, "epoch: expected int|long, got double"),
        ({"temperature": True}, "temperature: expected double|int|long, got bool"),
        ({"label": 5}, "label: expected string|null, got int"),
        ({"colour": "red"}, "colour: unexpected field"),
    ],
)
def test_bad_reading_rejected_with_clear_message(change: dict, message: str) -> None:
    with pytest.raises(SchemaValidationError, match=message) as info:
        validator("sensor_readings").validate(READING | change)
    assert str(info.value).startswith("sensor_readings: invalid document")


def test_missing_field_and_many_docs() -> None:
    bad = dict(READING)
    del bad["voltage"]
    with pytest.raises(SchemaValidationError) as info:
        validator("sensor_readings").validate_many([READING, bad])
    assert info.value.errors == ["doc[1] voltage: required field missing"]


def test_numpy_scalars_are_rejected() -> None:
    np = pytest.importorskip("numpy")
    with pytest.raises(SchemaValidationError, match="numpy.int64"):
        validator("sensor_readings").validate(READING | {"moteid": np.int64(1)})


def test_bson_int_sizes_and_nested_items() -> None:
    assert bson_type(5) == "int" and bson_type(2**40) == "long" and bson_type(True) == "bool"
    check = compile_schema(
        {"bsonType": "array", "items": {"bsonType": "object", "required": ["device"]}}
    )
    errs: list[str] = []
    check([{"device": "1"}, {}], "lineage", errs)
    assert errs == ["lineage[1].device: required field missing"]
    with pytest.raises(ValueError, match="unsupported"):
        compile_schema({"bsonType": "string", "pattern": "^a"})
