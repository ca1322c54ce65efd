"""Per-reading model features: 4 sensor channels + time of day as a point on a circle.

Numpy-only. Column order is fixed: :data:`FEATURE_NAMES`. The first
:data:`N_SENSOR_CHANNELS` columns are also the reconstruction targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SENSOR_CHANNELS = ("temperature", "humidity", "light", "voltage")
FEATURE_NAMES = (*SENSOR_CHANNELS, "tod_sin", "tod_cos")
N_SENSOR_CHANNELS = len(SENSOR_CHANNELS)
N_FEATURES = len(FEATURE_NAMES)
SECONDS_PER_DAY = 86_400.0


def _seconds(ts: Any) -> np.ndarray:
    """Seconds since the Unix epoch (float64) from numbers, datetime64 or pandas datetimes."""
    if hasattr(ts, "dt") and getattr(ts.dt, "tz", None) is not None:  # tz-aware pandas Series
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    elif getattr(ts, "tz", None) is not None and hasattr(ts, "tz_convert"):  # DatetimeIndex
        ts = ts.tz_convert("UTC").tz_localize(None)
    arr = np.asarray(ts)
    if arr.dtype == object:  # e.g. python datetimes
        import pandas as pd

        arr = pd.to_datetime(arr, utc=True).tz_localize(None).to_numpy()
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[ns]").astype(np.int64).astype(np.float64) / 1e9
    return arr.astype(np.float64)


def time_of_day_encoding(ts: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(sin, cos)`` of the UTC time of day, so 23:59 and 00:00 are neighbours."""
    phase = 2.0 * np.pi * (np.mod(_seconds(ts), SECONDS_PER_DAY) / SECONDS_PER_DAY)
    return np.sin(phase), np.cos(phase)


def features_from_columns(
    temperature: Any, humidity: Any, light: Any, voltage: Any, ts: Any
) -> np.ndarray:
    """Stack readings into the ``(n, 6)`` float32 feature matrix (raw units, not normalised).

    ``ts`` is epoch seconds (numeric), ``datetime64`` or a pandas datetime Series/Index
    (tz-aware values are converted to UTC).
    """
    sin, cos = time_of_day_encoding(ts)
    cols = [
        np.asarray(c, dtype=np.float64).reshape(-1) for c in (temperature, humidity, light, voltage)
    ]
    n = cols[0].shape[0]
    if any(c.shape[0] != n for c in cols) or sin.shape[0] != n:
        raise ValueError("all columns must have the same length")
    return np.stack([*cols, sin, cos], axis=1).astype(np.float32)
