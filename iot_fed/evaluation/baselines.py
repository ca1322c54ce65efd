"""Per-device statistical baselines: rolling z-score and rolling median absolute deviation.

Both look only at the *previous* ``window`` readings of the same device (trailing window,
current reading excluded), per channel, and score a reading by its largest standardised
deviation over the channels. Vectorised with pandas' grouped rolling windows.

* z-score: ``|x - mean| / std`` of the window;
* MAD (Hampel-style): ``|x - median| / (1.4826 * MAD)`` where MAD is the rolling median of
  the absolute deviations from the rolling median (the usual one-pass approximation).

The scale is floored at ``min_scale_fraction`` x the device's overall channel std, so a
flat window (e.g. a stuck sensor) does not divide by zero. Rows without ``min_periods``
history score 0.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd

MAD_TO_STD = 1.4826


def _grouped(frame: pd.DataFrame, device_col: str, order_col: str) -> tuple[np.ndarray, pd.Series]:
    order = np.lexsort((frame[order_col].to_numpy(), frame[device_col].to_numpy()))
    return order, pd.Series(frame[device_col].to_numpy()[order])


def _roll(s: pd.Series, groups: pd.Series, window: int, min_periods: int, how: str) -> np.ndarray:
    """Trailing rolling statistic of the previous ``window`` values, within each group."""
    r = s.groupby(groups.to_numpy(), sort=False).rolling(window, min_periods=min_periods)
    stat = getattr(r, how)().reset_index(level=0, drop=True).sort_index()
    return stat.groupby(groups.to_numpy(), sort=False).shift(1).to_numpy(np.float64)


def _floor(x: np.ndarray, groups: pd.Series, fraction: float) -> np.ndarray:
    std = pd.Series(x).groupby(groups.to_numpy(), sort=False).transform("std").to_numpy()
    return np.maximum(np.nan_to_num(std) * fraction, 1e-9)


def rolling_score(
    frame: pd.DataFrame,
    channels: Sequence[str],
    window: int = 60,
    min_periods: int = 10,
    *,
    robust: bool,
    device_col: str = "moteid",
    order_col: str = "ts",
    min_scale_fraction: float = 0.05,
) -> np.ndarray:
    """Per-row score, aligned to ``frame``: max over channels of the trailing-window
    z-score (``robust``: median/MAD instead of mean/std)."""
    order, groups = _grouped(frame, device_col, order_col)
    best = np.zeros(len(frame), np.float64)
    for c in channels:
        x = frame[c].to_numpy(np.float64)[order]
        s = pd.Series(x)
        if robust:
            center = _roll(s, groups, window, min_periods, "median")
            dev = pd.Series(np.abs(x - center))
            # MAD of the window before x: median of earlier deviations (all shifted by one)
            r = dev.groupby(groups.to_numpy(), sort=False).rolling(window, min_periods=1)
            mad = r.median().reset_index(level=0, drop=True).sort_index()
            scale = MAD_TO_STD * mad.groupby(groups.to_numpy(), sort=False).shift(1).to_numpy()
        else:
            center = _roll(s, groups, window, min_periods, "mean")
            scale = _roll(s, groups, window, min_periods, "std")
        scale = np.maximum(np.nan_to_num(scale, nan=np.inf), _floor(x, groups, min_scale_fraction))
        z = np.abs(x - center) / scale
        best = np.maximum(best, np.nan_to_num(z, nan=0.0))
    out = np.empty(len(frame), np.float64)
    out[order] = best
    return out


rolling_zscore = functools.partial(rolling_score, robust=False)
"""Per-row score: max over channels of the trailing-window z-score (aligned to frame)."""
rolling_mad = functools.partial(rolling_score, robust=True)
"""Per-row score: max over channels of the trailing-window robust (median/MAD) z-score."""
