"""Index ranges laid end to end (several devices' rows in one array, without a Python loop)."""

from __future__ import annotations

import numpy as np


def spans(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The indices ``starts[i], ..., starts[i] + lens[i] - 1`` of every span, end to end."""
    lens = np.asarray(lens, np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    begin = np.cumsum(lens) - lens  # each span's first position in the output
    return np.arange(total) - np.repeat(begin - np.asarray(starts, np.int64), lens)


def offsets(lens: np.ndarray) -> np.ndarray:
    """Where each span of ``lens`` starts when they are laid end to end."""
    lens = np.asarray(lens, np.int64)
    return np.cumsum(lens) - lens
