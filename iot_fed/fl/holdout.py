"""Which readings are held out of training: every tenth epoch of each device. They judge
a new global version and calibrate its thresholds (product and benchmark alike)."""

from __future__ import annotations

import numpy as np

HOLDOUT_MODULUS = 10


def held_out(epochs: np.ndarray) -> np.ndarray:
    """True for the readings (by epoch) held out of training."""
    return np.asarray(epochs) % HOLDOUT_MODULUS == 0
