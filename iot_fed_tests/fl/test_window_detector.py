"""The temporal detector: window features, stream scoring, thresholds, the round."""

import numpy as np
import pytest

from iot_fed.fl import serialization
from iot_fed.fl.detector import calibrate, channel_errors, target_quantile
from iot_fed.fl.normalization import Normalizer
from iot_fed.fl.rounds import FEATURE_STD_FLOOR, validation_verdict
from iot_fed.fl.serialization import ModelBlobError, ModelBundle
from iot_fed.fl.spec import ModelSpec
from iot_fed.fl.stream_scoring import (
    LEARNING_NO_THRESHOLD,
    LEARNING_SHORT_HISTORY,
    DeviceHistory,
    score_device,
)
from iot_fed.fl.window_features import (
    FEATURE_NAMES,
    N_FEATURES,
    WindowConfig,
    window_features,
)
from iot_fed_tests.fl.helpers import P_MS, series


def _bundle(window=8, seed=0):
    spec = ModelSpec(hidden=(8,), window=window, spread_k=4)
    rng = np.random.default_rng(seed)
    params = {
        name: {
            "w": rng.normal(0, 0.3, shp["w"]).astype(np.float32),
            "b": np.zeros(shp["b"], np.float32),
        }
        for name, shp in spec.param_shapes().items()
    }
    ts, vals = series(400, seed)
    f, _ = window_features(ts, vals, len(ts), spec.window_config())
    ok = np.isfinite(f).all(axis=1)
    norm = Normalizer(f[ok].mean(0), np.maximum(f[ok].std(0), FEATURE_STD_FLOOR))
    return ModelBundle(
        spec,
        params,
        norm,
        threshold=5.0,
        residual_scale=np.ones(spec.n_residuals),
        device_thresholds={1: 3.0},
    )


def _col(name):
    return FEATURE_NAMES.index(name)


def test_window_feature_golden_values():
    cfg = WindowConfig(window=4, spread_k=3)
    ts = np.arange(5, dtype=np.int64) * P_MS
    vals = np.zeros((5, 4))
    vals[:, 0] = [1.0, 2.0, 4.0, 4.0, 4.0]
    f, n_ctx = window_features(ts, vals, 5, cfg)
    assert f.shape == (5, N_FEATURES) and list(n_ctx) == [0, 1, 2, 3, 3]
    t = {k: f[:, _col(f"temperature_{k}")] for k in ("diff", "dev", "spread", "run", "trend")}
    # diff: vs the median of the previous (up to) 3 readings
    assert np.isnan(t["diff"][0]) and list(t["diff"][1:]) == [1.0, 2.5, 2.0, 0.0]
    # dev: vs the median of the previous window - 1 readings
    assert list(t["dev"][1:]) == [1.0, 2.5, 2.0, 0.0]
    # spread: log(1.4826 MAD of the last 3 + floor); row 4 = [4, 4, 4] -> floor only
    assert t["spread"][4] == pytest.approx(np.log(0.005))
    assert t["spread"][2] == pytest.approx(np.log(1.4826 * 1.0 + 0.005))
    # run: identical previous readings
    assert np.isnan(t["run"][0]) and list(t["run"][1:]) == [0, 0, 1, 2]
    # trend: median(last 3) - median(first 3) of a full window
    assert np.isnan(t["trend"][:3]).all() and list(t["trend"][3:]) == [2.0, 0.0]
    assert f[3, _col("temperature_level")] == 4.0
    assert f[1, _col("gap")] == 0.0


def test_gaps_scale_diff_and_a_long_gap_resets_the_context():
    cfg = WindowConfig(window=4, spread_k=3, reset_gap_s=600)
    ts = np.array([0, 1, 2, 6, 60], dtype=np.int64) * P_MS  # 4 periods, then 54 periods
    vals = np.zeros((5, 4))
    vals[:, 1] = [0.0, 0.0, 0.0, 2.0, 9.0]
    f, n_ctx = window_features(ts, vals, 5, cfg)
    assert f[3, _col("humidity_diff")] == pytest.approx(2.0 / np.sqrt(4.0))
    assert f[3, _col("gap")] == pytest.approx(np.log1p(3.0))
    assert n_ctx[4] == 0 and np.isnan(f[4, _col("humidity_diff")])  # context reset


def test_an_outage_over_25_minutes_resets_the_context_by_default():
    ts = np.concatenate([np.arange(40), 40 + 50 + np.arange(40)]).astype(np.int64) * P_MS
    vals = np.zeros((80, 4))
    vals[40:, 2] = 200.0  # the light changed while the mote was silent (50 periods, 26 min)
    f, n_ctx = window_features(ts, vals, 80)
    assert n_ctx[39] == 31 and n_ctx[40] == 0 and n_ctx[50] == 10
    assert np.isnan(f[40, _col("light_dev")]) and f[50, _col("light_dev")] == 0.0


@pytest.mark.parametrize("window", [8, 16])  # 16: shift and bend are defined
def test_stream_scores_equal_batch_scores(window):
    b = _bundle(window)
    ts, vals = series(300, seed=3)
    ep = np.arange(300)
    whole, h_whole = score_device(
        b, DeviceHistory.empty(), moteid=1, epochs=ep, ts_ms=ts, values=vals
    )
    hist, parts = DeviceHistory.empty(), []
    for a, z in ((0, 1), (1, 5), (5, 50), (50, 51), (51, 300)):
        out, hist = score_device(b, hist, moteid=1, epochs=ep[a:z], ts_ms=ts[a:z], values=vals[a:z])
        hist = DeviceHistory.from_json(hist.to_json())  # as a stateful scorer stores it
        parts.append(out)
    np.testing.assert_array_equal(np.concatenate([p.score for p in parts]), whole.score)
    np.testing.assert_array_equal(
        np.concatenate([p.channel_errors for p in parts]), whole.channel_errors
    )
    assert sum((p.reason for p in parts), ()) == whole.reason
    assert hist == h_whole and len(hist.epochs) == b.spec.window - 1


def _quiet_bundle(window=8):
    """A bundle whose normal scores stay far below its thresholds (nothing is excluded)."""
    b = _bundle(window)
    b.residual_scale = np.full(b.spec.n_residuals, 10.0)
    return b


def test_short_history_uses_the_global_threshold_and_is_learning():
    b = _quiet_bundle()
    ts, vals = series(20, seed=1)
    out, _ = score_device(
        b, DeviceHistory.empty(), moteid=1, epochs=np.arange(20), ts_ms=ts, values=vals
    )
    w = b.spec.window
    assert out.reason[: w - 1] == (LEARNING_SHORT_HISTORY,) * (w - 1)
    assert (out.threshold[: w - 1] == 5.0).all() and (out.threshold[w - 1 :] == 3.0).all()
    assert out.reason[w - 1 :] == (None,) * (20 - w + 1)
    other, _ = score_device(
        b, DeviceHistory.empty(), moteid=99, epochs=np.arange(20), ts_ms=ts, values=vals
    )
    # no threshold of its own: learning on every reading, short history or not
    assert other.reason == (LEARNING_NO_THRESHOLD,) * 20 and other.threshold[-1] == 5.0


def test_data_fault_is_flagged_and_does_not_poison_later_readings():
    b = _bundle()
    ts, vals = series(60, seed=2)
    bad = vals.copy()
    bad[30, 1] = np.nan
    bad[40, 3] = np.inf
    out, hist = score_device(
        b, DeviceHistory.empty(), moteid=1, epochs=np.arange(60), ts_ms=ts, values=bad
    )
    assert out.reason[30] == "data_fault:humidity is nan"
    assert out.reason[40] == "data_fault:voltage is inf"
    assert out.flag[30] and out.flag[40] and np.isnan(out.score[[30, 40]]).all()
    keep = np.setdiff1d(np.arange(60), [30, 40])
    clean, hist_clean = score_device(
        b,
        DeviceHistory.empty(),
        moteid=1,
        epochs=keep,
        ts_ms=ts[keep],
        values=vals[keep],
    )
    np.testing.assert_array_equal(out.score[keep], clean.score)
    assert hist == hist_clean
    assert np.isfinite(np.asarray(hist.values)).all()


def test_stuck_and_spike_move_their_features():
    cfg = WindowConfig(window=16, spread_k=8)
    ts, vals = series(200, seed=4)
    vals[120:160, 0] = vals[119, 0]  # stuck temperature
    vals[60, 1] += 5.0  # humidity spike
    f, _ = window_features(ts, vals, 200, cfg)
    assert f[150, _col("temperature_run")] == 15
    assert f[150, _col("temperature_spread")] == pytest.approx(np.log(0.005))
    assert f[60, _col("humidity_dev")] > 4.0
    assert abs(f[61, _col("humidity_diff")]) < 1.0  # the reading after a spike is clean


def test_shift_and_bend_see_an_offset_and_a_new_slope_but_not_a_steady_line():
    cfg = WindowConfig(window=16, spread_k=4)
    n = 120
    ts = np.arange(n, dtype=np.int64) * P_MS
    ts[[30, 31]] += P_MS // 3  # irregular sampling: quarters are placed by their times
    line = 0.02 * np.arange(n, dtype=np.float64) + 0.02 * (ts / P_MS - np.arange(n))
    vals = np.zeros((n, 4))
    vals[:, 0] = line  # a steady temperature ramp: neither feature moves
    vals[:, 1] = np.where(np.arange(n) >= 60, line + 1.0, line)  # humidity: +1 from row 60
    vals[:, 2] = np.where(np.arange(n) >= 60, line + 0.1 * (np.arange(n) - 60), line)  # bends
    f, _ = window_features(ts, vals, n, cfg)
    col = {k: _col(k) for k in ("temperature_shift", "temperature_bend", "humidity_shift")}
    assert np.isnan(f[:15, col["temperature_shift"]]).all()  # needs a full window
    np.testing.assert_allclose(f[15:, col["temperature_shift"]], 0.0, atol=1e-9)
    np.testing.assert_allclose(f[15:, col["temperature_bend"]], 0.0, atol=1e-9)
    # the offset fills the newest quarter (4 readings) from row 63: the whole step
    assert f[63, col["humidity_shift"]] == pytest.approx(1.0)
    assert abs(f[59, col["humidity_shift"]]) < 1e-9
    # a slope of +0.1 per reading from row 60: one quarter later, 4 x 0.1 per quarter
    assert f[67, _col("light_bend")] == pytest.approx(0.4)
    assert abs(f[59, _col("light_bend")]) < 1e-9


def test_shift_and_bend_are_undefined_across_a_long_gap_in_the_window():
    cfg = WindowConfig(window=16, spread_k=4, reset_gap_s=7200)
    ts = np.arange(60, dtype=np.int64) * P_MS
    ts[40:] += 20 * P_MS  # a 20-period outage, under the reset but over 1.5 windows
    vals = np.zeros((60, 4))
    f, _ = window_features(ts, vals, 60, cfg)
    for name in ("temperature_shift", "temperature_bend"):
        assert np.isfinite(f[39, _col(name)]) and np.isnan(f[40:55, _col(name)]).all()
        assert np.isfinite(f[56:, _col(name)]).all()  # the window is whole again


def test_directly_scored_features_set_their_channel_error():
    b = _quiet_bundle()
    b.params = {k: {m: np.zeros_like(v) for m, v in la.items()} for k, la in b.params.items()}
    z = np.zeros((1, N_FEATURES), np.float32)  # a zero net reconstructs 0: targets score 0
    z[0, _col("humidity_shift")] = 40.0  # 4 after the residual scale of 10
    err = channel_errors(b.params, b.spec, z, b.residual_scale)
    np.testing.assert_allclose(err, [[0.0, 16.0, 0.0, 0.0]])


def test_bundle_round_trip_and_incompatible_bundles_are_rejected(monkeypatch):
    b = _bundle()
    back = ModelBundle.from_bytes(b.to_bytes())
    assert back.spec == b.spec and back.device_thresholds == {1: 3.0}
    np.testing.assert_array_equal(back.residual_scale, b.residual_scale)
    assert back.threshold_for(1) == (3.0, False) and back.threshold_for(7) == (5.0, True)
    monkeypatch.setattr(serialization, "FORMAT_VERSION", 1)
    old = b.to_bytes()
    monkeypatch.undo()
    with pytest.raises(ModelBlobError, match="incompatible model blob format version 1"):
        ModelBundle.from_bytes(old)
    d = b.spec.to_dict()
    d.pop("kind")
    with pytest.raises(ValueError, match="retrain"):
        ModelSpec.from_dict(d)


def test_threshold_calibration_golden():
    q = target_quantile(1.0, 4)  # 0.75
    assert q == 0.75
    s = {1: np.array([1.0, 1.0, 1.0, 5.0] * 5), 2: np.array([2.0, 2.0, 2.0, 10.0] * 5)}
    thr = calibrate(s, q)
    # pooled scores: quantile 0.75 of {1,2 x15, 5, 10 x5} lies between 2 and 5
    assert thr.global_threshold == pytest.approx(np.quantile(np.concatenate(list(s.values())), q))
    # scale-free: both devices give u = [1,1,1,5]; Q = quantile(u, 0.75) = 2.0
    assert thr.scale_free_quantile == pytest.approx(2.0)
    assert thr.device == {1: pytest.approx(2.0), 2: pytest.approx(4.0)}


def test_held_out_scores_tied_at_the_calibrated_quantile_are_not_above_it():
    """Periodic readings give held-out scores tied at the top; the device threshold
    (scale-free quantile x scale) must not round below them (it did in 87 of these 2,000
    samples without the margin)."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        s = rng.exponential(1.0, 100)
        s[rng.choice(100, 9, replace=False)] = s.max()
        thr = calibrate({1: s}, 0.9996)
        assert not (s > thr.device[1]).any() and not (s > thr.global_threshold).any()


def test_validation_verdict_golden():
    assert validation_verdict(1.0, None, 0.05).ok
    assert validation_verdict(1.05, 1.0, 0.05).ok
    v = validation_verdict(1.2, 1.0, 0.05)
    assert not v.ok and "1.2 > 1.05" in v.reason
    assert not validation_verdict(float("nan"), 1.0, 0.05).ok
    few = validation_verdict(1.0, None, 0.05, n_validation=4, min_windows=100)
    assert not few.ok and few.reason == "calibrated on 4 held-out windows, fewer than 100"
    assert validation_verdict(1.0, None, 0.05, n_validation=100, min_windows=100).ok


def test_excluded_rows_are_left_out_of_the_context_but_count_for_the_gap():
    cfg = WindowConfig(window=8, spread_k=4)
    ts, vals = series(120, seed=4)
    ex = np.zeros(120, bool)
    ex[[30, 31, 32, 70]] = True
    f, n_ctx = window_features(ts, vals, 120, cfg, ex)
    keep = ~ex
    g, g_ctx = window_features(ts[keep], vals[keep], int(keep.sum()), cfg)
    others = [i for i, name in enumerate(FEATURE_NAMES) if name != "gap"]
    np.testing.assert_array_equal(f[keep][:, others], g[:, others])
    np.testing.assert_array_equal(n_ctx[keep], g_ctx)
    gap = FEATURE_NAMES.index("gap")
    assert f[33, gap] == pytest.approx(0.0) and g[30, gap] > 1.0  # row 33 follows row 32
    with pytest.raises(ValueError, match="excluded"):
        window_features(ts, vals, 120, cfg, ex[:-1])


def _bias(n=200, at=100, length=6, offset=50.0):
    ts, vals = series(n, seed=5)
    vals = vals.copy()
    vals[at : at + length, 0] += offset
    return ts, vals


def test_anomalies_stay_out_of_the_context_so_recovery_is_not_flagged(monkeypatch):
    from iot_fed.fl import stream_scoring

    b = _quiet_bundle()
    ts, vals = _bias()  # shorter than the window
    ep = np.arange(len(ts))
    out, hist = score_device(b, DeviceHistory.empty(), moteid=1, epochs=ep, ts_ms=ts, values=vals)
    assert out.flag[100:106].all() and not out.flag[:100].any()
    assert not out.flag[106:].any()  # back to normal: judged against the readings before
    assert hist.last_epoch == len(ts) - 1 and hist.excluded_run == 0
    monkeypatch.setattr(stream_scoring, "EXCLUDE_LEVEL", np.inf)  # the context takes all
    plain, _ = score_device(b, DeviceHistory.empty(), moteid=1, epochs=ep, ts_ms=ts, values=vals)
    assert plain.flag[106:].any()


def test_a_lasting_level_shift_enters_the_context_after_a_window():
    b = _quiet_bundle()
    ts, vals = _bias(length=100)  # shifted from row 100 to the end
    out, hist = score_device(
        b, DeviceHistory.empty(), moteid=1, epochs=np.arange(len(ts)), ts_ms=ts, values=vals
    )
    w = b.spec.window
    assert out.flag[100 : 100 + w].all()
    # after `window` readings left out, the shifted readings are the context
    assert len(hist.epochs) == w - 1 and hist.epochs[0] >= 100 + w
    assert hist.values[-1][0] == vals[-1, 0] and hist.excluded_run > w


@pytest.mark.parametrize("window", [8, 16])  # 16: the span limit meets the exclusions
def test_stream_equals_batch_while_anomalies_are_excluded(window):
    b = _quiet_bundle(window)
    ts, vals = _bias(length=30)
    vals = vals.copy()
    vals[[60, 61, 150], 1] += 80.0
    vals[170, 2] = np.nan  # a data fault right after
    ep = np.arange(len(ts))
    whole, h_whole = score_device(
        b, DeviceHistory.empty(), moteid=1, epochs=ep, ts_ms=ts, values=vals
    )
    assert whole.flag[100:130].all() and whole.flag[[60, 61, 150]].all()
    hist, parts = DeviceHistory.empty(), []
    for a, z in ((0, 61), (61, 62), (62, 105), (105, 106), (106, 171), (171, 200)):
        out, hist = score_device(b, hist, moteid=1, epochs=ep[a:z], ts_ms=ts[a:z], values=vals[a:z])
        hist = DeviceHistory.from_json(hist.to_json())
        parts.append(out)
    np.testing.assert_array_equal(np.concatenate([p.score for p in parts]), whole.score)
    np.testing.assert_array_equal(np.concatenate([p.flag for p in parts]), whole.flag)
    assert hist == h_whole


@pytest.mark.parametrize("window", [8, 16])
def test_many_devices_scored_together_get_exactly_what_each_gets_alone(window):
    """``score_many`` lays the devices' series end to end with a context break before
    each: scores, flags, reasons and next histories equal per-device ``score_device``."""
    from dataclasses import replace

    from iot_fed.fl.stream_scoring import DeviceReadings, score_many

    b = _quiet_bundle(window)
    b = replace(
        b,
        device_norms={3: Normalizer(b.norm.mean + 0.1, b.norm.std * 1.5)},
        device_thresholds={1: 3.0, 3: 3.0},  # 2, 4, 5: learning
    )
    devices = []
    for mote, seed in ((1, 5), (2, 6), (3, 7), (4, 8), (5, 9)):
        ts, vals = series(160, seed=seed)
        vals = vals.copy()
        if mote in (1, 3):
            vals[90:120, 0] += 50.0  # a bias: block iterations with exclusions
        if mote == 2:
            vals[[40, 41, 130], 1] += 80.0
            vals[70, 2] = np.nan  # a data fault
        if mote == 4:
            ts = ts.copy()
            ts[100:] += 7_200_000  # a gap over the reset gap
        devices.append((mote, np.arange(160), ts, vals))
    # each device's first 50 readings scored earlier: its history
    hists = {}
    for mote, ep, ts, vals in devices:
        _, hists[mote] = score_device(
            b, DeviceHistory.empty(), moteid=mote, epochs=ep[:50], ts_ms=ts[:50], values=vals[:50]
        )
    batch = [DeviceReadings(m, hists[m], ep[50:], ts[50:], v[50:]) for m, ep, ts, v in devices]
    batch.append(DeviceReadings(6, DeviceHistory.empty(), ep[:0], ts[:0], vals[:0]))  # none new
    together = score_many(b, batch)
    for r, (got, got_hist) in zip(batch, together, strict=True):
        alone, alone_hist = score_device(
            b, r.history, moteid=r.moteid, epochs=r.epochs, ts_ms=r.ts_ms, values=r.values
        )
        np.testing.assert_array_equal(got.score, alone.score)
        np.testing.assert_array_equal(got.channel_errors, alone.channel_errors)
        np.testing.assert_array_equal(got.flag, alone.flag)
        np.testing.assert_array_equal(got.threshold, alone.threshold)
        assert got.reason == alone.reason
        assert got_hist == alone_hist
    flags = {r.moteid: got.flag for r, (got, _) in zip(batch, together, strict=True)}
    assert flags[1][40:70].any() and flags[3][40:70].any() and flags[2][[20, 80]].all()
