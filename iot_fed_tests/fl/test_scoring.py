import subprocess
import sys

import numpy as np
import pytest

from iot_fed.fl.aggregation import aggregate
from iot_fed.fl.model import init_params, reconstruction_error
from iot_fed.fl.normalization import SufficientStats, make_xy
from iot_fed.fl.scoring import (
    calibrate_threshold,
    combine_thresholds,
    flag,
    score_batch,
    score_readings,
)
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.spec import ModelSpec
from iot_fed.fl.training import TrainConfig, evaluate_devices, train_devices

from .synthetic import device_columns, device_readings


def test_scoring_module_does_not_import_jax():
    code = (
        "import sys, iot_fed.fl, iot_fed.fl.scoring, iot_fed.fl.serialization, "
        "iot_fed.fl.aggregation; assert 'jax' not in sys.modules, 'jax imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_score_batch_matches_jax_and_bundle_applies_normalisation():
    spec = ModelSpec(hidden=(16, 8), activation="gelu", n_inputs=6, n_outputs=4)
    params = init_params(spec, 1)
    raw = device_readings(200, 0)
    norm = SufficientStats.from_array(raw).normalizer()
    x, y = make_xy(raw, norm)
    expected = np.asarray(reconstruction_error(params, x, y, "gelu"))
    bundle = ModelBundle(
        spec,
        {k: {m: np.asarray(v) for m, v in la.items()} for k, la in params.items()},
        norm,
        threshold=0.5,
    )
    np.testing.assert_allclose(score_batch(bundle, raw), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(score_batch(params, x, spec=spec), expected, rtol=1e-5, atol=1e-6)
    back = ModelBundle.from_bytes(bundle.to_bytes())
    np.testing.assert_allclose(score_batch(back, raw), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="spec"):
        score_batch(params, x)


def test_flag_and_thresholds():
    s = np.array([0.1, 0.5, 2.0, np.nan, np.inf])
    np.testing.assert_array_equal(flag(s, 0.5), [False, False, True, True, True])
    assert calibrate_threshold(np.arange(101.0), 0.99) == pytest.approx(99.0)
    assert calibrate_threshold([1.0, np.nan, 3.0], 0.5) == pytest.approx(2.0)
    assert combine_thresholds([1.0, 3.0, np.nan], [1, 3, 5]) == pytest.approx(2.5)
    assert combine_thresholds([1.0, 3.0, 9.0], [1, 3, 0], how="max") == 3.0
    with pytest.raises(ValueError):
        calibrate_threshold([np.nan], 0.9)


def test_trained_federated_model_flags_injected_spikes():
    raw = [device_readings(288, d, seed=11) for d in range(6)]
    norm = SufficientStats.total(SufficientStats.from_array(r) for r in raw).normalizer()
    data = [make_xy(r, norm) for r in raw]
    spec = ModelSpec(hidden=(16, 8), n_inputs=6, n_outputs=4)
    cfg = TrainConfig(learning_rate=5e-3, local_epochs=2, batch_size=32, threshold_quantile=0.99)
    g = init_params(spec, 0)
    for rnd in range(6):
        res = train_devices(g, data, spec, cfg, seed=rnd)
        g, _ = aggregate(res.params, res.n_samples)
    ev = evaluate_devices(g, data, spec, quantile=0.99)
    bundle = ModelBundle(spec, g, norm, combine_thresholds(ev.thresholds, ev.n_samples))
    # fresh normal readings vs the same readings with +15 degC spikes / a dying battery
    normal = device_readings(200, 2, seed=99)
    spikes = normal.copy()
    spikes[:, 0] += 15.0
    low_v = normal.copy()
    low_v[:, 3] = 2.2
    rate = {
        name: flag(score_batch(bundle, x), bundle.threshold).mean()
        for name, x in {"normal": normal, "spikes": spikes, "low_v": low_v}.items()
    }
    assert rate["normal"] < 0.1, rate
    assert rate["spikes"] > 0.9 and rate["low_v"] > 0.9, rate
    np.testing.assert_array_equal(
        score_readings(bundle, *device_columns(200, 2, seed=99)), score_batch(bundle, normal)
    )
