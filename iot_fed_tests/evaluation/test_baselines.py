"""Rolling z-score / MAD baselines: per device, trailing window, aligned with the frame."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iot_fed.evaluation.baselines import rolling_mad, rolling_zscore
from iot_fed.evaluation.faults import FaultConfig, inject_faults


def test_spikes_score_high(frame: pd.DataFrame) -> None:
    inj = inject_faults(frame, FaultConfig(rates={"spike": 0.01}), seed=0)
    spike = inj.labels["spike"].to_numpy()
    for fn in (rolling_zscore, rolling_mad):
        s = fn(inj.frame, ["temperature", "humidity"], window=30)
        assert s.shape == (len(frame),)
        assert np.median(s[spike]) > 4 * np.quantile(s[~spike], 0.95)


def test_row_order_does_not_matter(frame: pd.DataFrame) -> None:
    ordered = frame.sort_values(["moteid", "ts"]).reset_index(drop=True)
    for fn in (rolling_zscore, rolling_mad):
        a = pd.Series(fn(frame, ["temperature"], window=20), index=frame.index)
        b = fn(ordered, ["temperature"], window=20)
        key = frame.sort_values(["moteid", "ts"]).index
        np.testing.assert_allclose(a.loc[key].to_numpy(), b)


def test_trailing_window_only_and_warmup_scores_zero() -> None:
    ts = pd.Timestamp("2004-03-01", tz="UTC") + pd.to_timedelta(np.arange(40) * 31, unit="s")
    x = np.r_[np.tile([20.0, 21.0], 15), np.full(10, 20.5)]
    f = pd.DataFrame({"ts": ts, "moteid": 1, "temperature": x})
    z = rolling_zscore(f, ["temperature"], window=10, min_periods=5)
    assert (z[:5] == 0).all()  # not enough history
    # the value at t uses only readings before t: mean 20.5, std of a 20/21 window
    w = x[5:15]
    assert z[15] == abs(x[15] - w.mean()) / w.std(ddof=1)


def test_devices_do_not_share_windows() -> None:
    ts = pd.Timestamp("2004-03-01", tz="UTC") + pd.to_timedelta(np.arange(30) * 31, unit="s")
    rng = np.random.default_rng(0)
    a = pd.DataFrame({"ts": ts, "moteid": 1, "temperature": 20 + rng.normal(0, 0.1, 30)})
    b = pd.DataFrame({"ts": ts, "moteid": 2, "temperature": 80 + rng.normal(0, 0.1, 30)})
    s = rolling_mad(pd.concat([a, b], ignore_index=True), ["temperature"], window=10)
    assert s.max() < 10  # device 2's level never meets device 1's window
