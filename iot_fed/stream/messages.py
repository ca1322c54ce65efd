"""Kafka message format for one reading: encode, decode and validate.

Value: UTF-8 JSON object with the reading fields of docs/CONTRACTS.md plus
``"schema_version": 1``; key: ``str(moteid)``. Decoding is on the ingestion hot
path, so it is ``orjson`` plus hand-written checks (no per-message pydantic). A value
``orjson`` refuses is parsed again with the standard library, whose errors give the
dead-letter reason; so both parsers reject exactly what the standard one rejects, except
that every JSON number is a double (``orjson`` reads integers beyond 64 bits as floats).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from iot_fed.readings import CHANNELS, FIELDS

SCHEMA_VERSION = 1
MAX_MOTEID = 2**31 - 1
MAX_EPOCH = 2**63 - 1
MAX_LABEL_CHARS = 64
_FLOAT_MAX = int(sys.float_info.max)

_EPOCH0 = datetime(1970, 1, 1, tzinfo=UTC)
_decoder = json.JSONDecoder(parse_constant=lambda name: _reject_constant(name))
_encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(f"non-finite number {name}")


def format_ts(ts: datetime) -> str:
    """ISO-8601 with microseconds and explicit UTC offset (naive means UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def ts_from_ns(ns: int) -> datetime:
    """UTC datetime (microsecond precision) from nanoseconds since the Unix epoch."""
    return _EPOCH0 + timedelta(microseconds=ns // 1000)


def encode_key(moteid: int) -> bytes:
    return str(int(moteid)).encode()


def encode_reading(reading: Mapping[str, Any]) -> bytes:
    """Kafka value for one reading (``ts`` a datetime or an ISO string)."""
    ts = reading["ts"]
    label = reading.get("label")
    obj = {
        "schema_version": SCHEMA_VERSION,
        "ts": format_ts(ts) if isinstance(ts, datetime) else str(ts),
        "epoch": int(reading["epoch"]),
        "moteid": int(reading["moteid"]),
        "temperature": float(reading["temperature"]),
        "humidity": float(reading["humidity"]),
        "light": float(reading["light"]),
        "voltage": float(reading["voltage"]),
        "label": None if label is None or label != label else str(label),  # NaN label -> None
    }
    return _encoder.encode(obj).encode()


def parse_ts(value: Any) -> datetime | None:
    """UTC datetime from an ISO-8601 string; None when invalid. Naive strings mean UTC."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts if ts.utcoffset() == timedelta(0) else ts.astimezone(UTC)


def _parse_strict(value: bytes) -> tuple[Any, str | None]:
    """The standard library's parse of a value ``orjson`` refused: the object (it accepts
    e.g. a lone surrogate escape or ``1e999``, later checks judge it), or the reason."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    try:
        return _decoder.decode(text), None
    except _NonFinite as exc:
        return None, str(exc)
    except (ValueError, RecursionError):
        return None, "not JSON"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(v: Any) -> bool:
    return type(v) is int


def decode_value(
    value: bytes | None, max_bytes: int, key: bytes | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """Validate one Kafka value. Returns ``(reading, None)`` or ``(None, reason)``.

    The reading dict has exactly :data:`FIELDS` (``ts`` a UTC ``datetime``, channels
    ``float``), ready for MongoDB. ``key``, when given, must equal ``str(moteid)``.
    """
    if value is None:
        return None, "empty value (tombstone)"
    if len(value) > max_bytes:
        return None, f"oversized: {len(value)} bytes > {max_bytes}"
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        obj, reason = _parse_strict(value)
        if reason is not None:
            return None, reason
    if type(obj) is not dict:
        return None, f"not a JSON object ({type(obj).__name__})"
    version = obj.get("schema_version")
    if version is None:
        return None, "missing field schema_version"
    if not _is_int(version) or version != SCHEMA_VERSION:
        return None, f"unknown schema_version {version!r}"
    missing = [f for f in FIELDS if f not in obj]
    if missing:
        return None, "missing field(s) " + ",".join(missing)

    ts = parse_ts(obj["ts"])
    if ts is None:
        return None, "bad ts: expected an ISO-8601 string"
    epoch = obj["epoch"]
    if not _is_int(epoch) or not 0 <= epoch <= MAX_EPOCH:
        return None, "bad epoch: expected an integer >= 0"
    moteid = obj["moteid"]
    if not _is_int(moteid) or not 1 <= moteid <= MAX_MOTEID:
        return None, "bad moteid: expected an integer >= 1"
    reading: dict[str, Any] = {"ts": ts, "epoch": epoch, "moteid": moteid}
    for name in CHANNELS:
        v = obj[name]
        t = type(v)
        if t is float:
            if not math.isfinite(v):  # e.g. 1e999 parses to inf
                return None, f"bad {name}: non-finite"
        elif t is int:
            if not -_FLOAT_MAX <= v <= _FLOAT_MAX:  # a JSON number is a double
                return None, f"bad {name}: out of range"
            v = float(v)
        else:
            return None, f"bad {name}: expected a number"
        reading[name] = v
    label = obj["label"]
    if label is not None:
        if type(label) is not str or len(label) > MAX_LABEL_CHARS:
            return None, "bad label: expected a string or null"
        if not label.isascii() and not _is_utf8(label):
            return None, "bad label: lone surrogate escape (not encodable as UTF-8)"
    reading["label"] = label
    if key is not None and key != str(moteid).encode():
        return None, f"key {key[:32]!r} does not match moteid {moteid}"
    return reading, None
