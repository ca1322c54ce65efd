"""Evaluation reports: one document per batch evaluation of a promoted version."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

from pymongo import DESCENDING
from pymongo.database import Database

from iot_fed.store.collections import EVALUATION_REPORTS, validator
from iot_fed.store.durability import durable


def clean_value(v: Any) -> Any:
    """BSON-friendly: numpy scalars -> Python, NaN/NA -> None, recursively."""
    if isinstance(v, Mapping):
        return {str(k): clean_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean_value(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, str | bytes):  # numpy scalar
        v = v.item()
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    pd = sys.modules.get("pandas")  # without pandas loaded, v cannot be pd.NA / pd.NaT
    if pd is not None and (v is pd.NA or v is pd.NaT):
        return None
    return v


def save_evaluation_report(db: Database, doc: Mapping[str, Any]) -> str:
    """Store (replace by ``report_id``) one report document; return its ``report_id``.

    Values are made BSON-friendly first (:func:`clean_value`: NaN/NA -> None).
    """
    clean = clean_value(dict(doc))
    clean.pop("_id", None)
    validator(EVALUATION_REPORTS).validate(clean)
    coll = durable(db, EVALUATION_REPORTS)
    coll.replace_one({"report_id": clean["report_id"]}, clean, upsert=True)
    return clean["report_id"]


def latest_evaluation_report(db: Database) -> dict[str, Any] | None:
    """The most recently created report (no ``_id``), or None."""
    return db[EVALUATION_REPORTS].find_one({}, {"_id": 0}, sort=[("created_at", DESCENDING)])
