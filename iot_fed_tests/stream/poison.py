"""A corpus of poison message values with the reason prefix each must produce."""

from __future__ import annotations

import json

from iot_fed.stream.messages import encode_reading


def _valid_obj(**over: object) -> dict:
    obj = json.loads(
        encode_reading(
            {
                "ts": "2004-03-31T03:38:15.757551+00:00",
                "epoch": 7,
                "moteid": 3,
                "temperature": 19.5,
                "humidity": 37.2,
                "light": 45.0,
                "voltage": 2.68,
                "label": None,
            }
        )
    )
    obj.update(over)
    return obj


def _dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _without(field: str) -> bytes:
    obj = _valid_obj()
    del obj[field]
    return _dumps(obj)


def poison_corpus(max_bytes: int) -> list[tuple[str, bytes | None, str]]:
    """``(name, value, expected reason prefix)`` for messages keyed ``b"3"``."""
    return [
        ("not_json", b"hello, world", "not JSON"),
        ("truncated_json", _dumps(_valid_obj())[:40], "not JSON"),
        ("binary_junk", bytes(range(256)) * 4, "not UTF-8"),
        ("latin1", "température=é".encode("latin-1"), "not UTF-8"),
        ("array", b"[1, 2, 3]", "not a JSON object"),
        ("string", b'"just a string"', "not a JSON object"),
        ("null", b"null", "not a JSON object"),
        ("empty_object", b"{}", "missing field schema_version"),
        ("no_schema_version", _without("schema_version"), "missing field schema_version"),
        ("schema_v2", _dumps(_valid_obj(schema_version=2)), "unknown schema_version"),
        ("schema_str", _dumps(_valid_obj(schema_version="1")), "unknown schema_version"),
        ("missing_temperature", _without("temperature"), "missing field(s) temperature"),
        ("missing_ts", _without("ts"), "missing field(s) ts"),
        ("temp_string", _dumps(_valid_obj(temperature="19.5")), "bad temperature"),
        ("temp_bool", _dumps(_valid_obj(temperature=True)), "bad temperature"),
        ("humidity_null", _dumps(_valid_obj(humidity=None)), "bad humidity"),
        ("light_nan", _dumps(_valid_obj(light=float("nan"))), "non-finite number NaN"),
        ("voltage_inf", _dumps(_valid_obj(voltage=float("inf"))), "non-finite number Infinity"),
        ("temp_overflow", _dumps(_valid_obj()).replace(b"19.5", b"1e999"), "bad temperature"),
        ("moteid_zero", _dumps(_valid_obj(moteid=0)), "bad moteid"),
        ("moteid_float", _dumps(_valid_obj(moteid=3.0)), "bad moteid"),
        ("moteid_huge", _dumps(_valid_obj(moteid=2**70)), "bad moteid"),
        ("epoch_negative", _dumps(_valid_obj(epoch=-1)), "bad epoch"),
        ("epoch_string", _dumps(_valid_obj(epoch="7")), "bad epoch"),
        ("ts_garbage", _dumps(_valid_obj(ts="yesterday")), "bad ts"),
        ("ts_number", _dumps(_valid_obj(ts=1080704295)), "bad ts"),
        ("label_number", _dumps(_valid_obj(label=5)), "bad label"),
        ("label_lone_surrogate", _dumps(_valid_obj(label="\ud800")), "bad label: lone surrogate"),
        ("key_mismatch", _dumps(_valid_obj(moteid=4)), "key"),
        ("oversized", _dumps(_valid_obj(pad="x" * max_bytes)), "oversized"),
        ("tombstone", None, "empty value"),
    ]
