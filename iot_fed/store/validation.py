"""A small, fast validator for the MongoDB ``$jsonSchema`` subset used in ``schemas/*.json``.

Supported keywords: ``bsonType`` (``object array string int long double number bool date
binData null objectId decimal``), ``required``, ``properties``, ``additionalProperties``
(bool), ``minimum``, ``maximum``, ``minLength``, ``enum``, ``items``; ``title`` and
``description`` are ignored. Unknown keywords fail at compile time, so a schema never
silently checks less than MongoDB would. Type names follow BSON encoding: a Python
``int`` in int32 range is ``int``, larger ones are ``long``; ``bool`` is never a number.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from bson import Decimal128, ObjectId

Check = Callable[[Any, str, list[str]], None]
INT32 = 2**31
INT64 = 2**63
NUMBER = ("int", "long", "double", "decimal")
KNOWN = {
    "bsonType",
    "required",
    "properties",
    "additionalProperties",
    "minimum",
    "maximum",
    "minLength",
    "enum",
    "items",
    "title",
    "description",
}
_EXACT = {
    type(None): "null",
    bool: "bool",
    float: "double",
    str: "string",
    dt.datetime: "date",
    bytes: "binData",
    dict: "object",
    list: "array",
    ObjectId: "objectId",
    Decimal128: "decimal",
}


class SchemaValidationError(ValueError):
    """Documents break their collection's JSON schema; ``errors`` lists each problem."""

    def __init__(self, collection: str, errors: list[str]) -> None:
        self.collection = collection
        self.errors = errors
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{collection}: invalid document: " + "; ".join(errors[:5]) + more)


def bson_type(v: Any) -> str:
    """The BSON type name pymongo would encode ``v`` as (or the Python type name)."""
    name = _EXACT.get(type(v))
    if name is not None:
        return name
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        if -INT32 <= v < INT32:
            return "int"
        return "long" if -INT64 <= v < INT64 else "int too large for BSON"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dt.datetime):
        return "date"
    if isinstance(v, bytes):
        return "binData"
    if isinstance(v, Mapping):
        return "object"
    if isinstance(v, list | tuple):
        return "array"
    return f"{type(v).__module__}.{type(v).__qualname__}"


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def compile_schema(schema: Mapping[str, Any], path: str = "") -> Check:
    """Compile a schema into ``check(value, path, errors)`` that appends error strings."""
    unknown = set(schema) - KNOWN
    if unknown:
        raise ValueError(f"unsupported JSON-schema keywords at {path or '<root>'}: {unknown}")
    checks: list[Check] = []
    if "bsonType" in schema:
        raw = schema["bsonType"]
        names = [raw] if isinstance(raw, str) else list(raw)
        allowed = set()
        for n in names:
            allowed.update(NUMBER if n == "number" else (n,))
        want = "|".join(names)

        def check_type(v: Any, p: str, errs: list[str]) -> None:
            t = bson_type(v)
            if t not in allowed:
                errs.append(f"{p or '<doc>'}: expected {want}, got {t} ({_short(v)})")

        checks.append(check_type)
    if "enum" in schema:
        options = list(schema["enum"])

        def check_enum(v: Any, p: str, errs: list[str]) -> None:
            if v not in options:
                errs.append(f"{p}: {_short(v)} not one of {options}")

        checks.append(check_enum)
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None or hi is not None:

        def check_range(v: Any, p: str, errs: list[str]) -> None:
            if isinstance(v, bool) or not isinstance(v, int | float | Decimal):
                return
            if lo is not None and v < lo:
                errs.append(f"{p}: {_short(v)} < minimum {lo}")
            if hi is not None and v > hi:
                errs.append(f"{p}: {_short(v)} > maximum {hi}")

        checks.append(check_range)
    if "minLength" in schema:
        min_len = int(schema["minLength"])

        def check_len(v: Any, p: str, errs: list[str]) -> None:
            if isinstance(v, str) and len(v) < min_len:
                errs.append(f"{p}: string shorter than {min_len}")

        checks.append(check_len)
    if "items" in schema:
        item = compile_schema(schema["items"], f"{path}[]")

        def check_items(v: Any, p: str, errs: list[str]) -> None:
            if isinstance(v, list | tuple):
                for i, x in enumerate(v):
                    item(x, f"{p}[{i}]", errs)

        checks.append(check_items)
    if {"properties", "required", "additionalProperties"} & set(schema):
        checks.append(_object_check(schema, path))
    if len(checks) == 1:
        return checks[0]

    def check_all(v: Any, p: str, errs: list[str]) -> None:
        for c in checks:
            c(v, p, errs)

    return check_all


def _object_check(schema: Mapping[str, Any], path: str) -> Check:
    props = {
        k: compile_schema(s, f"{path}.{k}" if path else k)
        for k, s in schema.get("properties", {}).items()
    }
    required = tuple(schema.get("required", ()))
    closed = schema.get("additionalProperties", True) is False
    if not isinstance(schema.get("additionalProperties", True), bool):
        raise ValueError(f"additionalProperties must be a bool at {path or '<root>'}")

    def check_object(v: Any, p: str, errs: list[str]) -> None:
        if not isinstance(v, Mapping):
            return
        pre = f"{p}." if p else ""
        for k in required:
            if k not in v:
                errs.append(f"{pre}{k}: required field missing")
        for k, x in v.items():
            c = props.get(k)
            if c is not None:
                c(x, pre + k, errs)
            elif closed:
                errs.append(f"{pre}{k}: unexpected field (allowed: {', '.join(props)})")

    return check_object


class DocumentValidator:
    """Validates documents for one collection against its compiled schema."""

    def __init__(self, collection: str, schema: Mapping[str, Any]) -> None:
        self.collection = collection
        self._check = compile_schema(schema)

    def errors(self, doc: Any) -> list[str]:
        """Problems with one document (empty when valid)."""
        errs: list[str] = []
        self._check(doc, "", errs)
        return errs

    def validate(self, doc: Any) -> None:
        """Raise :class:`SchemaValidationError` if ``doc`` is invalid."""
        errs = self.errors(doc)
        if errs:
            raise SchemaValidationError(self.collection, errs)

    def validate_many(self, docs: list[Any]) -> None:
        """Raise :class:`SchemaValidationError` naming every invalid document by index."""
        errs: list[str] = []
        for i, d in enumerate(docs):
            one: list[str] = []
            self._check(d, "", one)
            errs.extend(f"doc[{i}] {e}" for e in one)
        if errs:
            raise SchemaValidationError(self.collection, errs)
