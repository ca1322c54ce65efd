"""Benchmark data: generated Intel-Lab-style readings, the real single-mote series, splits.

The benchmark's base data must be *clean* so that injected faults are the only labelled
anomalies: the generator runs with no spikes and no failing batteries.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iot_fed.data.generator import EPOCH_S, START, generate
from iot_fed.data.parse import READING_COLUMNS, parse_readings

REAL_VOLTAGE = 2.7
"""Constant voltage given to the real single-mote series (it has no voltage column)."""


def generated_readings(
    motes: int, days: float, seed: int, work_dir: Path | None = None
) -> pd.DataFrame:
    """Clean readings of ``motes`` generated motes over ``days`` (via the raw format + parser)."""
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        raw = Path(tmp) / "data.txt"
        gen = generate(
            raw,
            motes=motes,
            days=days,
            seed=seed,
            spike_rate=0.0,
            low_voltage_fraction=0.0,
            early_stop_fraction=0.0,
        )
        df = parse_readings(gen.path, gen.labels_path).readings
    df = df[~df["fault"]]
    return df[list(READING_COLUMNS)].reset_index(drop=True)


def real_single_mote(path: Path, moteid: int = 1, max_rows: int | None = None) -> pd.DataFrame:
    """The real ``epoch,temperature,humidity`` series as readings.

    It has no timestamps, light or voltage: ``ts`` is reconstructed as the deployment start
    plus ``(epoch - 1) * 31 s`` (approximate), light is 0 and voltage a constant
    :data:`REAL_VOLTAGE`, so only temperature and humidity carry information.
    """
    raw = pd.read_csv(path, header=None, names=["epoch", "temperature", "humidity"])
    if max_rows is not None:
        raw = raw.iloc[:max_rows]
    ts = pd.Timestamp(START, tz="UTC") + pd.to_timedelta((raw["epoch"] - 1) * EPOCH_S, unit="s")
    df = pd.DataFrame(
        {
            "ts": ts,
            "epoch": raw["epoch"].astype(np.int64),
            "moteid": np.int64(moteid),
            "temperature": raw["temperature"].astype(np.float64),
            "humidity": raw["humidity"].astype(np.float64),
            "light": 0.0,
            "voltage": REAL_VOLTAGE,
            "label": None,
        }
    )
    return df


def split_in_time(
    frame: pd.DataFrame, train_fraction: float, max_train: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per device: the first ``train_fraction`` of its readings (by time) train, the rest test.

    ``max_train`` keeps only the most recent ``max_train`` training readings (a training
    window). Both parts come back sorted by (moteid, ts) with a fresh index.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError("train_fraction must be in (0, 1)")
    df = frame.sort_values(["moteid", "ts"], kind="stable").reset_index(drop=True)
    pos = df.groupby("moteid").cumcount().to_numpy()
    size = df.groupby("moteid")["moteid"].transform("size").to_numpy()
    cut = np.floor(train_fraction * size).astype(np.int64)
    is_train = pos < cut
    if max_train is not None:
        is_train &= pos >= cut - max_train
    train = df[is_train].reset_index(drop=True)
    test = df[pos >= cut].reset_index(drop=True)
    return train, test


@dataclass
class Partition:
    """Row positions of each device in a frame sorted by moteid (contiguous blocks)."""

    moteids: list[int]
    slices: list[slice]

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Partition:
        m = frame["moteid"].to_numpy()
        if m.size and np.any(np.diff(m) < 0):
            raise ValueError("frame must be sorted by moteid")
        ids, first = np.unique(m, return_index=True)
        ends = np.append(first[1:], m.size)
        return cls(
            [int(i) for i in ids], [slice(int(a), int(b)) for a, b in zip(first, ends, strict=True)]
        )

    def split(self, x: np.ndarray) -> list[np.ndarray]:
        return [x[s] for s in self.slices]

    def subset(self, moteids: Sequence[int]) -> np.ndarray:
        """Boolean row mask of the given devices."""
        n = self.slices[-1].stop if self.slices else 0
        mask = np.zeros(n, dtype=bool)
        keep = set(moteids)
        for m, s in zip(self.moteids, self.slices, strict=True):
            if m in keep:
                mask[s] = True
        return mask
