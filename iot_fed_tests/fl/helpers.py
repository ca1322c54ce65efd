"""Shared by the fl tests: a hand-checked tiny model and a sensor-like window series."""

from __future__ import annotations

import numpy as np

from iot_fed.fl.spec import ModelSpec

P_MS = 31_000  # the Intel Lab sampling period


# 2 -> 2 (relu) -> 1 with hand-picked weights
TINY_SPEC = ModelSpec(hidden=(2,), activation="relu", n_inputs=2, n_outputs=1)
TINY = {
    "layer_0": {
        "w": np.array([[1.0, -1.0], [2.0, 0.5]], np.float32),
        "b": np.array([0.0, 1.0], np.float32),
    },
    "layer_1": {"w": np.array([[0.5], [-1.0]], np.float32), "b": np.array([0.25], np.float32)},
}


def series(n: int, seed: int = 0, step_ms: int = P_MS) -> tuple[np.ndarray, np.ndarray]:
    """``n`` timestamps (ms) and the four channels: a slow cycle plus seeded noise."""
    rng = np.random.default_rng(seed)
    ts = 1_078_000_000_000 + np.arange(n, dtype=np.int64) * step_ms
    t = np.arange(n)
    vals = np.stack(
        [
            20 + np.sin(t / 200) + rng.normal(0, 0.03, n),
            40 - np.sin(t / 200) + rng.normal(0, 0.15, n),
            100 + rng.exponential(1.5, n),
            2.7 - 1e-5 * t + rng.normal(0, 0.002, n),
        ],
        axis=1,
    )
    return ts, vals
