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


def _with(**raw: bytes) -> bytes:
    """The reading's wire value with fields replaced by raw JSON text."""
    value = encode_reading(READING)
    for field, text in raw.items():
        obj = json.loads(value)
        value = value.replace(
            f'"{field}":{json.dumps(obj[field])}'.encode(), f'"{field}":'.encode() + text
        )
    return value


def test_numbers_are_doubles_and_fallback_parse_keeps_reasons() -> None:
    # a channel's number is a double (orjson reads integers beyond 64 bits as one); the
    # integer fields refuse those
    for digits in (17, 25):
        got, reason = decode_value(_with(light=b"1" + b"0" * digits), MAX)
        assert reason is None and got["light"] == 10.0**digits
    assert decode_value(_with(light=b"1" + b"0" * 400), MAX)[1] == "bad light: out of range"
    assert decode_value(_with(epoch=b"1" + b"0" * 25), MAX)[1].startswith("bad epoch")
    assert decode_value(_with(voltage=b"1e999"), MAX)[1] == "bad voltage: non-finite"
    # orjson refuses a lone surrogate, the standard parse reads it; no BSON string holds it
    assert decode_value(_with(label=b'"\\ud800"'), MAX)[1].startswith("bad label: lone surrogate")
    assert decode_value(_with(label=b'"caf\\u00e9"'), MAX)[0]["label"] == "caf\u00e9"
    assert decode_value(b'{"a": NaN}', MAX)[1] == "non-finite number NaN"
    assert decode_value(b"[" * 50_000, MAX)[1] == "not JSON"
