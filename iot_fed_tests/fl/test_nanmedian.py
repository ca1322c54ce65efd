"""The window features' one-sort nanmedian gives exactly np.nanmedian's values."""

from __future__ import annotations

import warnings

import numpy as np

from iot_fed.fl.window_features import _nanmedian


def test_nanmedian_equals_numpy_with_gaps_all_nan_rows_and_empty_contexts() -> None:
    rng = np.random.default_rng(7)
    for case in range(100):
        k, w = int(rng.integers(1, 20)), int(rng.integers(1, 40))
        a = rng.normal(size=(k, 4, w)) * 10
        a[rng.random(a.shape) < 0.3] = np.nan  # dropped readings
        a[0, case % 4, :] = np.nan  # a channel with no value in the window
        n = rng.integers(0, 3, size=k)  # rows with n == 0 have no context
        n[0] = 1
        want = np.full((k, 4), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
            want[n > 0] = np.nanmedian(a[n > 0], axis=-1)
        np.testing.assert_array_equal(_nanmedian(a, n), want)
