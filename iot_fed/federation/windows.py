"""Device data windows read from MongoDB: training windows and the held-out validation set.

A reading belongs to the validation set when ``epoch % HOLDOUT_MODULUS == 0`` (10 %),
decided by the reading itself, so the split is stable across rounds and devices and
training never sees a validation reading. Physically impossible readings (the parser's
``mark_faults`` rule) are excluded from both: they are what the model must flag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pymongo.database import Database

from iot_fed.data.parse import CHANNELS, mark_faults
from iot_fed.fl.features import features_from_columns
from iot_fed.store.collections import SENSOR_READINGS
from iot_fed.store.repository import readings_for_devices

HOLDOUT_MODULUS = 10
_PROJECTION = {
    "_id": 0,
    "ts": 1,
    "epoch": 1,
    "moteid": 1,
    "kafka_partition": 1,
    "kafka_offset": 1,
    **{c: 1 for c in CHANNELS},
}


@dataclass
class DeviceWindow:
    """One device's usable readings as raw (un-normalised) features."""

    moteid: int
    features: np.ndarray  # (n, 6) float32, see iot_fed.fl.features
    epochs: np.ndarray  # (n,) int64
    n_faulty: int = 0
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    @property
    def last_epoch(self) -> int | None:
        return int(self.epochs.max()) if self.n else None


def _offset_ranges(docs: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{partition: {"min": o, "max": o}}`` of the Kafka offsets the readings came from."""
    out: dict[str, dict[str, int]] = {}
    for d in docs:
        off = d.get("kafka_offset")
        if off is None:
            continue
        r = out.setdefault(str(d.get("kafka_partition", 0)), {"min": off, "max": off})
        r["min"], r["max"] = min(r["min"], off), max(r["max"], off)
    return out


def to_window(moteid: int, docs: Sequence[dict[str, Any]]) -> DeviceWindow:
    """Readings -> window of non-faulty readings (faulty ones only counted)."""
    if not docs:
        return DeviceWindow(moteid, np.zeros((0, 6), np.float32), np.zeros(0, np.int64))
    df = mark_faults(pd.DataFrame.from_records(docs))
    ok = ~df["fault"].to_numpy()
    vals = df.loc[ok, list(CHANNELS)].to_numpy(np.float64)
    finite = np.isfinite(vals).all(axis=1)
    good = df.loc[ok].loc[finite]
    feats = features_from_columns(
        *(good[c].to_numpy() for c in CHANNELS), pd.to_datetime(good["ts"], utc=True)
    )
    return DeviceWindow(
        moteid,
        feats,
        good["epoch"].to_numpy(np.int64),
        n_faulty=int(len(df) - len(good)),
        offsets=_offset_ranges(docs),
    )


def training_windows(
    db: Database, since_epochs: Mapping[int, int | None], limit: int
) -> dict[int, DeviceWindow]:
    """Per device, the newest ``limit`` training readings with ``epoch > since``: ONE query
    for all devices (FerretDB scans a collection per filtered query)."""
    found = readings_for_devices(db, since_epochs)
    return {
        m: to_window(m, [d for d in docs if d["epoch"] % HOLDOUT_MODULUS != 0][-limit:])
        for m, docs in found.items()
    }


def validation_windows(db: Database, motes: Sequence[int], limit: int) -> dict[int, DeviceWindow]:
    """Per device, the newest ``limit`` held-out readings (one query)."""
    query = {"moteid": {"$in": [int(m) for m in motes]}, "epoch": {"$mod": [HOLDOUT_MODULUS, 0]}}
    docs: dict[int, list[dict[str, Any]]] = {int(m): [] for m in motes}
    for d in db[SENSOR_READINGS].find(query, _PROJECTION):
        docs[int(d["moteid"])].append(d)
    return {
        m: to_window(m, sorted(ds, key=lambda d: d["epoch"])[-limit:]) for m, ds in docs.items()
    }
