"""The scorer's stateful step alone, in Python: its cost per device per micro-batch.

For ``devices`` motes, each with a full history (a first micro-batch of ``window``
readings each), a micro-batch of ONE reading per device is scored by the product's
``applyInPandasWithState`` function (:func:`iot_fed.analytics.live_state.stateful_scorer`)
with its groups made two ways, in the same run:

* ``per-mote``: one group (one Python call) per mote, as the query grouped before buckets;
* ``buckets-<B>``: the product's grouping, ``B`` buckets of motes, each one call scoring
  all its motes at once (``score_many``).

Timed, in the thread's CPU time (the machine may be shared): the function's calls over the
whole micro-batch (decode, state, scoring, incidents, output frames), per device. Not
timed: what pyspark does around each call (Arrow to a pandas frame per group, the state's
pickling), which is also paid per group, so bucketing saves more than shown. The model is
the bench's calibrated one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

import iot_fed.analytics.live_state as live_state
from iot_fed.fl.serialization import ModelBundle
from iot_fed.readings import CHANNELS
from iot_fed.stream.messages import encode_key, encode_reading


class FakeState:
    """The ``GroupState`` calls the stateful function makes."""

    def __init__(self, now_ms: int) -> None:
        self.value: tuple | None = None
        self.now_ms = now_ms
        self.hasTimedOut = False

    @property
    def exists(self) -> bool:
        return self.value is not None

    @property
    def get(self) -> tuple:
        assert self.value is not None
        return self.value

    def update(self, value: tuple) -> None:
        self.value = value

    def remove(self) -> None:
        self.value = None

    def setTimeoutDuration(self, _ms: int) -> None:  # noqa: N802 (pyspark's name)
        pass

    def getCurrentProcessingTimeMs(self) -> int:  # noqa: N802
        return self.now_ms


class FixedModel:
    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle

    def current(self) -> tuple[int, ModelBundle]:
        return 1, self.bundle


def records(motes: np.ndarray, epochs: range, offset0: int) -> pd.DataFrame:
    """The Kafka records of ``motes`` at ``epochs`` as the stateful step receives them."""
    rows = []
    for e in epochs:
        for m in motes:
            m = int(m)
            reading = {
                "ts": pd.Timestamp("2030-01-01", tz="UTC") + pd.Timedelta(seconds=31 * e + m % 7),
                "epoch": e,
                "moteid": m,
                "temperature": 21 + np.sin(e / 30 + m),
                "humidity": 38 + np.cos(e / 30 + m),
                "light": 120.0 + m % 3,
                "voltage": 2.68 - e * 1e-5,
                "label": None,
            }
            rows.append((encode_key(m), encode_reading(reading), m))
    return pd.DataFrame(
        {
            "gkey": [r[2] for r in rows],
            "key": [r[0] for r in rows],
            "value": [r[1] for r in rows],
            "kafka_offset": [f"t:0:{offset0 + i}" for i in range(len(rows))],
            "kafka_ts_ms": np.full(len(rows), 1_900_000_000_000, np.int64),
        }
    )


def run_batch(
    fn: Any, groups: dict[int, pd.DataFrame], states: dict[int, FakeState], now_ms: int
) -> float:
    """Seconds the function's calls take over one micro-batch's groups."""
    total = 0.0
    for g, frame in groups.items():
        state = states.setdefault(g, FakeState(now_ms))
        state.now_ms = now_ms
        t0 = time.thread_time()
        out: Iterator[pd.DataFrame] = fn((g,), iter([frame]), state)
        for _ in out:
            pass
        total += time.thread_time() - t0
    return total


def measure(
    bundle: ModelBundle, devices: int, buckets: int | None, window: int, batches: int
) -> dict[str, Any]:
    """Python ms per device per micro-batch (median over ``batches`` measured ones)."""
    real = live_state.executor_model
    live_state.executor_model = lambda *_a: FixedModel(bundle)  # type: ignore[assignment]
    try:
        fn = live_state.stateful_scorer(None, 1 << 16, 1.0, 3_600_000, 1800.0)  # type: ignore[arg-type]
        motes = np.arange(1, devices + 1)

        def grouped(df: pd.DataFrame) -> dict[int, pd.DataFrame]:
            key = df["gkey"] if buckets is None else df["gkey"] % buckets
            return {int(k): part.reset_index(drop=True) for k, part in df.groupby(key)}

        states: dict[int, FakeState] = {}
        now = 1_900_000_000_000
        run_batch(fn, grouped(records(motes, range(window), 0)), states, now)  # histories
        times = []
        for b in range(batches):
            epoch = window + b
            df = records(motes, range(epoch, epoch + 1), (epoch + 1) * devices)
            times.append(run_batch(fn, grouped(df), states, now + 1000 * (b + 1)))
    finally:
        live_state.executor_model = real  # type: ignore[assignment]
    med = float(np.median(times))
    return {
        "devices": devices,
        "grouping": "per-mote" if buckets is None else f"buckets-{buckets}",
        "python_calls": devices if buckets is None else min(buckets, devices),
        "batch_ms_median": med * 1000,
        "ms_per_device": med * 1000 / devices,
        "batch_ms": [t * 1000 for t in times],
        "channels": len(CHANNELS),
    }
