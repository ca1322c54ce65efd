"""Shared by the reporting tests: a reading document at a fixed start time."""

from __future__ import annotations

import datetime as dt
from typing import Any

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def reading(moteid: int, epoch: int, **kw: Any) -> dict[str, Any]:
    doc = {
        "ts": T0 + dt.timedelta(seconds=30 * epoch),
        "epoch": epoch,
        "moteid": moteid,
        "temperature": 20.0 + epoch,
        "humidity": 40.0,
        "light": 100.0,
        "voltage": 2.7,
        "label": None,
    }
    return {**doc, **kw}
