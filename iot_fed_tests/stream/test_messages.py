"""Message encode/decode/validation (pure; no services)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from iot_fed.stream.messages import FIELDS, SCHEMA_VERSION, decode_value, encode_key, encode_reading
from iot_fed_tests.stream.poison import poison_corpus

MAX = 64 * 1024
READING = {
    "ts": datetime(2004, 3, 31, 3, 38, 15, 757551, tzinfo=UTC),
    "epoch": 2,
    "moteid": 1,
    "temperature": 122.153,
    "humidity": -3.91901,
    "light": 11.04,
    "voltage": 2.03397,
    "label": None,
}


def test_round_trip_is_exact() -> None:
    value = encode_reading(READING)
    obj = json.loads(value)
    assert obj["schema_version"] == SCHEMA_VERSION
    assert obj["ts"] == "2004-03-31T03:38:15.757551+00:00"
    reading, reason = decode_value(value, MAX, encode_key(1))
    assert reason is None
    assert reading == READING
    assert list(reading) == list(FIELDS)


def test_label_and_integer_channels() -> None:
    value = encode_reading({**READING, "label": "spike", "light": 0})
    reading, reason = decode_value(value, MAX)
    assert reason is None
    assert reading["label"] == "spike"
    assert reading["light"] == 0.0 and type(reading["light"]) is float


def test_timestamps_normalised_to_utc() -> None:
    obj = json.loads(encode_reading(READING))
    obj["ts"] = "2004-03-31T05:38:15.757551+02:00"
    reading, _ = decode_value(json.dumps(obj).encode(), MAX)
    assert reading["ts"] == READING["ts"]
    obj["ts"] = "2004-03-31T03:38:15.757551"  # naive -> UTC
    reading, _ = decode_value(json.dumps(obj).encode(), MAX)
    assert reading["ts"] == READING["ts"]
    obj["ts"] = "2004-03-31T03:38:15.757551Z"
    reading, _ = decode_value(json.dumps(obj).encode(), MAX)
    assert reading["ts"] == READING["ts"]


def test_unknown_extra_fields_are_ignored() -> None:
    obj = {**json.loads(encode_reading(READING)), "firmware": "1.2"}
    reading, reason = decode_value(json.dumps(obj).encode(), MAX)
    assert reason is None and "firmware" not in reading


def test_encode_refuses_non_finite() -> None:
    with pytest.raises(ValueError):
        encode_reading({**READING, "temperature": math.nan})


@pytest.mark.parametrize(("name", "value", "expected"), poison_corpus(MAX))
def test_poison_is_rejected_with_reason(name: str, value: bytes | None, expected: str) -> None:
    reading, reason = decode_value(value, MAX, b"3")
    assert reading is None, name
    assert reason is not None and reason.startswith(expected), (name, reason)


def test_poison_corpus_base_message_is_valid() -> None:
    """The corpus mutates a valid message: its unmutated form must pass."""
    obj = json.loads(poison_corpus(MAX)[8][1])  # no_schema_version
    obj["schema_version"] = 1
    reading, reason = decode_value(json.dumps(obj).encode(), MAX, b"3")
    assert reason is None and reading["moteid"] == 3
