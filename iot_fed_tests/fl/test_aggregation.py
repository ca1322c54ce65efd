import numpy as np
import pytest

from iot_fed.fl.aggregation import AggregationConfig, AggregationError, aggregate
from iot_fed.fl.pytrees import flatten_single, flatten_stacked, stack_params, unstack_params
from iot_fed.fl.spec import ModelSpec


def _tree(w, b):
    return {"layer_0": {"w": np.array(w, np.float32), "b": np.array(b, np.float32)}}


def _random_stacked(d, seed=0, spec=ModelSpec(hidden=(8,), n_inputs=6, n_outputs=4)):
    rng = np.random.default_rng(seed)
    return {
        k: {m: rng.normal(size=(d, *shape)).astype(np.float32) for m, shape in leaves.items()}
        for k, leaves in spec.param_shapes().items()
    }


def test_fedavg_golden_two_tiny_pytrees():
    stacked = stack_params([_tree([[1.0, 2.0]], [0.0]), _tree([[3.0, 6.0]], [4.0])])
    out, info = aggregate(stacked, [1, 3], "fedavg")
    np.testing.assert_array_equal(out["layer_0"]["w"], [[2.5, 5.0]])
    np.testing.assert_array_equal(out["layer_0"]["b"], [3.0])
    assert out["layer_0"]["w"].dtype == np.float32
    assert info["n_devices"] == 2 and info["total_weight"] == 4.0


def test_fedavg_equals_sample_weighted_mean_and_ignores_zero_weights():
    stacked = _random_stacked(7)
    w = np.array([10, 0, 3, 250, 1, 0, 77])
    out, info = aggregate(stacked, w, "fedavg")
    for k, layer in stacked.items():
        for m, v in layer.items():
            ref = np.tensordot(w.astype(np.float64), v.astype(np.float64), axes=1) / w.sum()
            np.testing.assert_array_equal(out[k][m], ref.astype(np.float32))
    assert info["n_zero_weight"] == 2


def test_all_zero_weights_is_a_clear_error():
    with pytest.raises(AggregationError, match="all device weights are zero"):
        aggregate(_random_stacked(3), [0, 0, 0])
    with pytest.raises(AggregationError, match="weights"):
        aggregate(_random_stacked(3), [1, 2])
    with pytest.raises(AggregationError, match="strategy"):
        aggregate(_random_stacked(3), [1, 2, 3], "mean")


def test_robust_strategies_survive_a_scaled_device_fedavg_does_not():
    rng = np.random.default_rng(1)
    honest = _random_stacked(1, seed=2)
    stacked = {
        k: {
            m: v + 0.01 * rng.normal(size=(10, *v.shape[1:])).astype(np.float32)
            for m, v in layer.items()
        }
        for k, layer in honest.items()
    }
    for layer in stacked.values():
        for m in layer:
            layer[m][4] *= 1e6  # one poisoned device
    target, _ = flatten_single(
        {k: {m: v[0] for m, v in layer.items()} for k, layer in honest.items()}
    )
    w = np.full(10, 100)
    err = {}
    for strategy in ("fedavg", "median", "trimmed_mean"):
        out, info = aggregate(stacked, w, strategy, trim_ratio=0.1)
        err[strategy] = float(np.max(np.abs(flatten_single(out)[0] - target)))
    assert err["fedavg"] > 1e3
    assert err["median"] < 0.05 and err["trimmed_mean"] < 0.05
    assert info["n_trimmed_each_side"] == 1


def test_median_and_trimmed_mean_values():
    stacked = stack_params([_tree([[v]], [v]) for v in (1.0, 2.0, 3.0, 4.0, 100.0)])
    med, _ = aggregate(stacked, [1, 1, 1, 1, 1], "median")
    trim, _ = aggregate(stacked, [1, 1, 1, 1, 1], "trimmed_mean", trim_ratio=0.2)
    assert med["layer_0"]["w"][0, 0] == 3.0
    assert trim["layer_0"]["b"][0] == pytest.approx(3.0)
    # zero-weight devices do not vote
    med0, _ = aggregate(stacked, [0, 0, 1, 1, 1], "median")
    assert med0["layer_0"]["w"][0, 0] == 4.0


def test_dp_noise_has_the_configured_scale():
    spec = ModelSpec(hidden=(32, 16), n_inputs=6, n_outputs=4)
    g = {k: {m: v[0] for m, v in layer.items()} for k, layer in _random_stacked(1, 3, spec).items()}
    stacked = stack_params([g] * 10)  # zero updates: the output is g + noise
    z, clip = 1.0, 2.0
    noise = []
    for seed in range(20):
        out, info = aggregate(
            stacked,
            np.arange(1, 11),
            "fedavg",
            global_params=g,
            dp_clip_norm=clip,
            dp_noise_multiplier=z,
            seed=seed,
        )
        noise.append(flatten_single(out)[0] - flatten_single(g)[0])
    noise = np.concatenate(noise)
    expected = z * clip / 10
    assert info["dp_noise_std"] == pytest.approx(expected)
    assert info["dp_clip_norm"] == clip and info["dp_noise_multiplier"] == z
    assert noise.std() == pytest.approx(expected, rel=0.03)
    assert abs(noise.mean()) < 3 * expected / np.sqrt(noise.size)


def test_dp_clipping_bounds_each_update():
    spec = ModelSpec(hidden=(8,), n_inputs=6, n_outputs=4)
    g = {k: {m: v[0] for m, v in layer.items()} for k, layer in _random_stacked(1, 4, spec).items()}
    stacked = _random_stacked(6, 5, spec)
    stacked = {k: {m: v * 50 for m, v in layer.items()} for k, layer in stacked.items()}
    out, info = aggregate(stacked, [5, 5, 5, 5, 5, 5], global_params=g, dp_clip_norm=0.5)
    update = flatten_single(out)[0] - flatten_single(g)[0]
    assert np.linalg.norm(update) <= 0.5 + 1e-5
    assert info["n_clipped"] == 6 and info["dp_noise_std"] == 0.0
    with pytest.raises(AggregationError, match="global_params"):
        aggregate(stacked, [1] * 6, dp_clip_norm=0.5)


def test_config_from_settings_and_pytree_helpers():
    class S:
        aggregation_strategy, trim_ratio, dp_clip_norm, dp_noise_multiplier = "median", 0.2, None, 0

    cfg = AggregationConfig.from_settings(S())
    stacked = _random_stacked(5)
    out, info = cfg.aggregate(stacked, [1] * 5)
    assert info["strategy"] == "median"
    assert len(unstack_params(stacked)) == 5
    mat, layout = flatten_stacked(stacked)
    assert mat.shape == (5, ModelSpec(hidden=(8,), n_inputs=6, n_outputs=4).n_params())
