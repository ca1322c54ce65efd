"""The ``evaluation_reports`` collection: one document per evaluation run.

Kept here until :mod:`iot_fed.store` owns the collection (name, schema, index);
documents are plain JSON-like values (``None`` for undefined metrics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pymongo import DESCENDING
from pymongo.database import Database

EVALUATION_REPORTS = "evaluation_reports"


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
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    return v


def save_evaluation_report(db: Database, doc: Mapping[str, Any]) -> str:
    """Store (replace by ``report_id``) one report document; return its ``report_id``."""
    clean = clean_value(dict(doc))
    coll = db[EVALUATION_REPORTS]
    coll.create_index([("created_at", DESCENDING)], name="created_at")
    coll.replace_one({"report_id": clean["report_id"]}, clean, upsert=True)
    return clean["report_id"]


def latest_evaluation_report(db: Database) -> dict[str, Any] | None:
    return db[EVALUATION_REPORTS].find_one({}, {"_id": 0}, sort=[("created_at", DESCENDING)])
