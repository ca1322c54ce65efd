"""The provisional stream_scoring contract: chunked == whole, data faults, history JSON."""

from __future__ import annotations

import numpy as np
import pytest

from iot_fed.fl.scoring import flag, score_batch
from iot_fed.fl.stream_scoring import CHANNELS, WINDOW, DeviceHistory, score_device
from iot_fed_tests.analytics.helpers import features, make_bundle, make_readings


def _series(df):
    one = df[df["moteid"] == 1].sort_values("epoch")
    ts_ms = (one["ts"].astype("int64") // 1_000_000).to_numpy()
    return one, one["epoch"].to_numpy(), ts_ms, one[list(CHANNELS)].to_numpy(np.float64)


def test_chunked_equals_whole_and_matches_per_reading_model():
    df = make_readings(motes=1, per_mote=60)
    bundle = make_bundle(df, seed=1)
    one, ep, ts, vals = _series(df)
    whole, h_whole = score_device(
        bundle, DeviceHistory.empty(), moteid=1, epochs=ep, ts_ms=ts, values=vals
    )
    h = DeviceHistory.empty()
    parts = []
    for k in range(0, len(ep), 7):
        got, h = score_device(
            bundle, h, moteid=1, epochs=ep[k : k + 7], ts_ms=ts[k : k + 7], values=vals[k : k + 7]
        )
        parts.append(got)
    assert np.array_equal(np.concatenate([p.score for p in parts]), whole.score)
    assert np.array_equal(np.concatenate([p.flag for p in parts]), whole.flag)
    assert h == h_whole and len(h.epochs) == WINDOW and h.epochs[-1] == ep[-1]
    assert DeviceHistory.from_json(h.to_json()) == h
    want = score_batch(bundle, features(one.assign(ts=one["ts"].dt.floor("ms"))))
    assert np.allclose(whole.score, want, rtol=1e-5)
    assert np.allclose(whole.channel_errors.sum(axis=1), whole.score, rtol=1e-4)
    assert (whole.flag == flag(whole.score, bundle.threshold)).all()


def test_data_fault_is_flagged_and_skips_history():
    df = make_readings(motes=1, per_mote=5)
    bundle = make_bundle(df, seed=1)
    _, ep, ts, vals = _series(df)
    vals[2, 1] = np.nan
    got, h = score_device(bundle, DeviceHistory.empty(), moteid=1, epochs=ep, ts_ms=ts, values=vals)
    assert got.flag[2] and np.isnan(got.score[2]) and got.reason[2] == "data_fault:humidity is nan"
    assert ep[2] not in h.epochs and len(h.epochs) == 4
    with pytest.raises(ValueError, match="not newer"):
        score_device(bundle, h, moteid=1, epochs=ep[:1], ts_ms=ts[:1], values=vals[:1])
