from dataclasses import replace

import numpy as np
import pytest

from iot_fed.fl.aggregation import aggregate
from iot_fed.fl.batching import bucket_size, epoch_orders
from iot_fed.fl.forward import reconstruction_error_numpy
from iot_fed.fl.model import init_params
from iot_fed.fl.normalization import SufficientStats, make_xy
from iot_fed.fl.spec import ModelSpec
from iot_fed.fl.training import (
    TrainConfig,
    _trainer_for,
    evaluate_devices,
    padded_shape,
    trace_counts,
    train_devices,
)
from iot_fed_tests.fl.helpers import TINY, TINY_SPEC

from .synthetic import device_readings

SPEC = ModelSpec(hidden=(8,), activation="relu", n_inputs=6, n_outputs=4)
CFG = TrainConfig(
    optimizer="adam", learning_rate=1e-2, local_epochs=2, batch_size=16, fedprox_mu=0.01
)
# most tests keep the largest device at 65..80 samples and <= 8 devices, so they share one
# compiled shape (8 device slots x 5 steps of 16 rows) and the folder stays fast


def _device_data(sizes, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        x = rng.normal(size=(n, 6)).astype(np.float32)
        out.append((x, x[:, :4].copy()))
    return out


def _max_diff(a, b):
    return max(float(np.max(np.abs(a[k][m] - b[k][m]))) for k in a for m in a[k])


def test_golden_single_sgd_step():
    # one sample, batch 1, sgd lr 0.1: out 1.75, y 1 -> dL/dout = 1.5, h = [5, 1]
    cfg = TrainConfig(optimizer="sgd", learning_rate=0.1, local_epochs=1, batch_size=1)
    res = train_devices(
        TINY, [(np.array([[1.0, 2.0]], np.float32), np.array([[1.0]], np.float32))], TINY_SPEC, cfg
    )
    p = res.device_params(0)
    np.testing.assert_allclose(p["layer_1"]["b"], [0.25 - 0.1 * 1.5], rtol=1e-6)
    np.testing.assert_allclose(
        p["layer_1"]["w"], [[0.5 - 0.1 * 7.5], [-1.0 - 0.1 * 1.5]], rtol=1e-6
    )
    # dL/dh = 1.5 * w1 = [0.75, -1.5]; both units active; dW0 = x^T dh
    np.testing.assert_allclose(
        p["layer_0"]["w"], TINY["layer_0"]["w"] - 0.1 * np.outer([1, 2], [0.75, -1.5]), rtol=1e-6
    )
    assert res.loss_before[0] == pytest.approx(0.5625)


def test_vmapped_equals_per_device_loop_with_ragged_and_empty_devices():
    # sizes: more than the batch, less than the batch, exactly one batch, zero, odd
    data = _device_data([70, 5, 16, 0, 33, 41])
    g = init_params(SPEC, 1)
    ids = [11, 3, 54, 7, 8, 9]
    vm = train_devices(g, data, SPEC, CFG, seed=5, device_ids=ids)
    lp = train_devices(g, data, SPEC, CFG, seed=5, device_ids=ids, per_device_loop=True)
    assert _max_diff(vm.params, lp.params) < 1e-5
    np.testing.assert_allclose(vm.loss_after, lp.loss_after, rtol=1e-5)
    np.testing.assert_array_equal(vm.n_samples, [70, 5, 16, 0, 33, 41])
    # the zero-sample device keeps the global params exactly and reports NaN losses
    for k in g:
        for m in g[k]:
            np.testing.assert_array_equal(vm.params[k][m][3], np.asarray(g[k][m]))
    assert np.isnan(vm.loss_before[3]) and np.isnan(vm.loss_after[3])
    assert np.all(vm.loss_after[[0, 1, 2, 4, 5]] < vm.loss_before[[0, 1, 2, 4, 5]])


def test_loss_after_is_the_trained_models_mean_score():
    data = _device_data([70, 5, 33])
    res = train_devices(init_params(SPEC, 1), data, SPEC, CFG, seed=0)
    for i, (x, _) in enumerate(data):
        s = reconstruction_error_numpy(res.device_params(i), x, x[:, :4], SPEC.activation)
        assert res.loss_after[i] == pytest.approx(s.mean(), rel=1e-5)


def test_deterministic_for_a_seed_and_seed_matters():
    data = _device_data([70, 23])
    g = init_params(SPEC, 0)
    a = train_devices(g, data, SPEC, CFG, seed=1)
    b = train_devices(g, data, SPEC, CFG, seed=1)
    c = train_devices(g, data, SPEC, CFG, seed=2)
    assert _max_diff(a.params, b.params) == 0.0
    assert _max_diff(a.params, c.params) > 0.0
    # a device's shuffle depends on its id, not on its position in the round
    swapped = train_devices(g, data[::-1], SPEC, CFG, seed=1, device_ids=[1, 0])
    assert (
        _max_diff(
            swapped.params,
            {k: {m: v[::-1] for m, v in layer.items()} for k, layer in a.params.items()},
        )
        < 1e-6
    )


def test_epoch_orders_shuffle_valid_rows_first():
    o = epoch_orders(3, np.array([0, 1, 2]), np.array([10, 0, 4]), rows=12, epochs=2)
    assert o.shape == (3, 2, 12)
    for e in range(2):
        assert sorted(o[0, e, :10]) == list(range(10))
        assert list(o[0, e, 10:]) == [10, 11]
        assert list(o[1, e]) == list(range(12))
        assert sorted(o[2, e, :4]) == [0, 1, 2, 3]
    assert list(o[0, 0]) != list(o[0, 1])  # reshuffled each epoch


def test_bucket_sizes():
    assert [bucket_size(n) for n in [0, 1, 5, 8, 9, 10, 11, 13, 17, 54, 1000, 10_000]] == [
        1,
        1,
        5,
        8,
        10,
        10,
        12,
        14,
        20,
        56,
        1024,
        10240,
    ]
    assert bucket_size(3, minimum=8) == 8
    for n in range(1, 3000):
        assert n <= bucket_size(n) <= max(8, 1.25 * n)


def test_second_round_with_other_sizes_does_not_recompile():
    cfg = CFG
    g = init_params(SPEC, 0)
    first = _device_data([70, 66, 30, 0, 50], seed=1)
    second = _device_data([71, 40, 7, 80, 49, 33], seed=2)  # more devices, other counts
    assert padded_shape(first, cfg) == padded_shape(second, cfg)
    r1 = train_devices(g, first, SPEC, cfg, seed=0)
    g2, _ = aggregate(r1.params, r1.n_samples, "fedavg")
    traces = trace_counts()["train_devices"]
    jitted = _trainer_for(SPEC, cfg).train_many
    cache = jitted._cache_size()
    r2 = train_devices(g2, second, SPEC, cfg, seed=7)
    assert trace_counts()["train_devices"] == traces
    assert jitted._cache_size() == cache
    assert r2.n_devices == 6


@pytest.mark.slow  # two more optimisers compiled and trained (adam's case is fast)
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_other_optimisers_reduce_the_loss(optimizer):
    data = _device_data([70, 48])
    cfg = TrainConfig(
        optimizer=optimizer,
        learning_rate=0.05,
        local_epochs=2,
        batch_size=16,
        momentum=0.9 if optimizer == "sgd" else 0.0,
    )
    res = train_devices(init_params(SPEC, 0), data, SPEC, cfg)
    assert np.all(res.loss_after < res.loss_before)


@pytest.mark.slow  # several rounds of training on generated sensor data
def test_federated_rounds_reduce_loss_on_sensor_like_data():
    raw = [device_readings(n, d, seed=3) for d, n in enumerate([300, 250, 120, 288, 60, 0])]
    norm = SufficientStats.total(SufficientStats.from_array(r) for r in raw).normalizer()
    data = [make_xy(r, norm) for r in raw]
    spec = ModelSpec(hidden=(16, 8), n_inputs=6, n_outputs=4)
    cfg = TrainConfig(learning_rate=5e-3, local_epochs=2, batch_size=32)
    g = init_params(spec, 0)
    start = evaluate_devices(g, data, spec)
    for rnd in range(5):
        res = train_devices(g, data, spec, cfg, seed=rnd)
        g, info = aggregate(res.params, res.n_samples, "fedavg")
        assert info["n_devices"] == 5 and info["n_zero_weight"] == 1
    end = evaluate_devices(g, data, spec)
    w = end.n_samples
    before = np.nansum(start.loss * w) / w.sum()
    after = np.nansum(end.loss * w) / w.sum()
    assert after < 0.5 * before, (before, after)
    assert np.isnan(end.loss[5]) and end.n_samples[5] == 0


def test_config_from_settings_and_evaluate_off():
    from iot_fed.config import load_settings

    settings = load_settings(optimizer="sgd", local_epochs=3, model_hidden="16,4")
    cfg = TrainConfig.from_settings(settings, evaluate=False)
    assert (cfg.optimizer, cfg.local_epochs, cfg.batch_size) == ("sgd", 3, settings.batch_size)
    assert ModelSpec.from_settings(settings).hidden == (16, 4)
    res = train_devices(
        init_params(SPEC, 0), _device_data([70, 9]), SPEC, replace(CFG, evaluate=False)
    )
    assert np.all(np.isnan(res.loss_after)) and np.all(np.isnan(res.loss_before))
    assert (
        _max_diff(
            res.params, train_devices(init_params(SPEC, 0), _device_data([70, 9]), SPEC, CFG).params
        )
        == 0.0
    )


def test_chunked_call_equals_one_call_and_reuses_one_shape():
    """A shard of more devices than ``device_chunk`` is trained chunk by chunk on one
    compiled shape (memory bounded by the chunk), with the results of one call."""
    data = _device_data([70, 5, 16, 0, 33, 41, 66, 12, 50, 9, 71])
    ids = list(range(100, 111))
    g = init_params(SPEC, 1)
    whole = train_devices(g, data, SPEC, CFG, seed=5, device_ids=ids)
    chunked_cfg = replace(CFG, device_chunk=4)
    traces = trace_counts()["train_devices"]
    chunked = train_devices(g, data, SPEC, chunked_cfg, seed=5, device_ids=ids)
    assert trace_counts()["train_devices"] - traces <= 1, "3 chunks, at most one new shape"
    assert _max_diff(whole.params, chunked.params) < 1e-5
    np.testing.assert_allclose(whole.loss_after, chunked.loss_after, rtol=1e-5)
    np.testing.assert_array_equal(chunked.n_samples, whole.n_samples)
    traces = trace_counts()["train_devices"]
    train_devices(g, data[:7], SPEC, chunked_cfg, seed=5, device_ids=ids[:7])  # another shard
    assert trace_counts()["train_devices"] == traces, "no recompilation across shards"
