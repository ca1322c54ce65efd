"""No verdict without calibration: a learning device is scored, not alarmed; the fixed
sanity rule alarms with or without a calibrated threshold."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from iot_fed.data.generator import FAIL_VOLTAGE
from iot_fed.fl.sanity import insane, sanity_reason
from iot_fed.fl.stream_scoring import (
    LEARNING_NO_THRESHOLD,
    LEARNING_SHORT_HISTORY,
    DeviceHistory,
    score_device,
)
from iot_fed_tests.fl.helpers import series
from iot_fed_tests.fl.test_window_detector import _bundle

NORMAL = np.array([20.0, 40.0, 100.0, 2.7])  # temperature, humidity, light, voltage


def _row(**kw: float) -> np.ndarray:
    row = NORMAL.copy()
    for i, c in enumerate(("temperature", "humidity", "light", "voltage")):
        row[i] = kw.get(c, row[i])
    return row


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (_row(voltage=2.21), "sanity:voltage 2.21 < 2.3"),
        (_row(humidity=101.5), "sanity:humidity 101.5 > 100"),
        (_row(humidity=-0.5), "sanity:humidity -0.5 < 0"),
        (_row(temperature=130.0), "sanity:temperature 130 > 125"),
        (_row(temperature=-41.0), "sanity:temperature -41 < -40"),
        (_row(light=-1.0), "sanity:light -1 < 0"),
        (_row(voltage=FAIL_VOLTAGE, humidity=100.0, temperature=125.0, light=0.0), None),
        (_row(humidity=np.nan), None),  # a data fault, told by the scorer
    ],
)
def test_sanity_rule_states_the_broken_rule(row, reason):
    assert sanity_reason(row) == reason
    assert insane(row[None, :])[0] == (reason is not None)


def test_sanity_rule_vectorised_equals_per_row():
    rng = np.random.default_rng(0)
    rows = NORMAL + rng.normal(0, [80.0, 60.0, 50.0, 0.5], (500, 4))
    rows[::7, 1] = np.nan
    assert insane(rows).tolist() == [sanity_reason(r) is not None for r in rows]


def _loud(device_thresholds: dict[int, float]):
    """A bundle under which every reading scores far above any threshold."""
    b = _bundle()
    return replace(
        b, residual_scale=np.full(b.spec.n_residuals, 1e-6), device_thresholds=device_thresholds
    )


def test_learning_device_is_scored_not_flagged_then_calibrated_is():
    ts, vals = series(60, seed=11)
    ep = np.arange(60)
    w = _bundle().spec.window
    # version 1 has no threshold for mote 7: learning
    before, hist = score_device(
        _loud({1: 3.0}), DeviceHistory.empty(), moteid=7, epochs=ep, ts_ms=ts, values=vals
    )
    assert (before.score > before.threshold).all()  # the model would alarm on every one
    assert not before.flag.any()
    assert before.reason == (LEARNING_NO_THRESHOLD,) * 60
    assert (before.threshold == 5.0).all()  # scored against the global threshold
    # version 2 carries mote 7's threshold: calibrated from its next reading on
    ts2, vals2 = series(70, seed=11)
    after, _ = score_device(
        _loud({1: 3.0, 7: 4.0}),
        hist,
        moteid=7,
        epochs=ep[-1] + 1 + np.arange(10),
        ts_ms=ts2[60:],
        values=vals2[60:],
    )
    assert after.flag.all() and after.reason == (None,) * 10
    assert (after.threshold == 4.0).all()
    # a calibrated device's short history is learning too
    fresh, _ = score_device(
        _loud({7: 4.0}), DeviceHistory.empty(), moteid=7, epochs=ep, ts_ms=ts, values=vals
    )
    assert fresh.reason[: w - 1] == (LEARNING_SHORT_HISTORY,) * (w - 1)
    assert fresh.flag.any()  # once the context is full
    for flag, reason in zip(fresh.flag, fresh.reason, strict=True):
        assert reason == (None if flag else LEARNING_SHORT_HISTORY)


@pytest.mark.parametrize("thresholds", [{1: 3.0}, {1: 3.0, 7: 1e9}], ids=["learning", "calibrated"])
def test_sanity_rule_flags_learning_and_calibrated_devices(thresholds):
    b = replace(_bundle(), device_thresholds=thresholds)
    ts, vals = series(80, seed=12)
    vals[50, 3] = 2.21  # a dying battery
    vals[60, 1] = 104.0  # impossible humidity
    vals[70, 0] = np.nan  # a data fault stays one
    out, hist = score_device(
        b, DeviceHistory.empty(), moteid=7, epochs=np.arange(80), ts_ms=ts, values=vals
    )
    assert out.reason[50] == "sanity:voltage 2.21 < 2.3"
    assert out.reason[60] == "sanity:humidity 104 > 100"
    assert out.reason[70] == "data_fault:temperature is nan"
    assert out.flag[[50, 60, 70]].all()
    assert np.isfinite(out.score[[50, 60]]).all()  # still scored
    assert out.flag.sum() == 3  # nothing else: learning, or a threshold nothing reaches
    assert np.isfinite(np.asarray(hist.values)).all()


def test_stream_equals_batch_with_learning_and_sanity():
    b = replace(_bundle(), device_thresholds={1: 3.0})
    ts, vals = series(200, seed=13)
    vals[[30, 120], 3] = 2.0
    vals[90, 2] = -5.0
    ep = np.arange(200)
    for mote in (1, 7):  # calibrated, learning
        whole, h_whole = score_device(
            b, DeviceHistory.empty(), moteid=mote, epochs=ep, ts_ms=ts, values=vals
        )
        hist, parts = DeviceHistory.empty(), []
        for a, z in ((0, 3), (3, 40), (40, 91), (91, 200)):
            out, hist = score_device(
                b, hist, moteid=mote, epochs=ep[a:z], ts_ms=ts[a:z], values=vals[a:z]
            )
            parts.append(out)
        np.testing.assert_array_equal(np.concatenate([p.flag for p in parts]), whole.flag)
        assert sum((p.reason for p in parts), ()) == whole.reason
        assert hist == h_whole
        assert whole.flag[[30, 90, 120]].all()


def test_the_scorers_rule_imports_no_data_package():
    """The rule takes the generator's FAIL_VOLTAGE from the reading contract: scoring
    stays free of pandera / Spark (the data package's imports)."""
    code = (
        "import sys, iot_fed.fl.stream_scoring\n"
        "print([m for m in ('iot_fed.data', 'pandera', 'pyspark', 'jax') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
