"""The one federated round: client update (JAX) and server update (numpy)."""

import numpy as np
import pytest

from iot_fed.fl.aggregation import AggregationConfig
from iot_fed.fl.model import init_params
from iot_fed.fl.normalization import SufficientStats
from iot_fed.fl.rounds import (
    ClientUpdate,
    ServerConfig,
    client_update,
    device_data,
    device_scores,
    initial_normalizer,
    server_update,
)
from iot_fed.fl.spec import ModelSpec
from iot_fed.fl.training import TrainConfig, trace_counts
from iot_fed.fl.window_features import DIRECT_COLUMNS, N_CHANNEL_FEATURES, N_FEATURES
from iot_fed_tests.fl.helpers import series

SPEC = ModelSpec(hidden=(8,), window=8, spread_k=4)


def _devices(k, n=200):
    out = []
    for m in range(1, k + 1):
        ts, vals = series(n, seed=m)
        out.append(device_data(m, ts, vals, np.arange(n) % 10 == 0, SPEC))
    return out


def _np(p):
    return {k: {m: np.asarray(v) for m, v in la.items()} for k, la in p.items()}


def test_server_update_on_tiny_golden_inputs():
    devs = _devices(3, 250)
    norm = initial_normalizer(devs)
    g = _np(init_params(SPEC, 0))
    # three "trained" models: the global params shifted by 0, 1 and 3; weights 1, 1, 2
    shifts = np.array([0.0, 1.0, 3.0])
    stacked = {
        k: {m: np.stack([v + s for s in shifts]).astype(np.float32) for m, v in la.items()}
        for k, la in g.items()
    }
    upd = ClientUpdate(
        moteids=(1, 2, 3),
        params=stacked,
        n_samples=np.array([1.0, 1.0, 2.0]),
        loss_before=np.zeros(3),
        loss_after=np.zeros(3),
        stats=tuple(SufficientStats.zeros(N_FEATURES) for _ in range(3)),
        norm=norm,
    )
    held = {d.moteid: d.held_out for d in devs}
    for strategy, expect in (("fedavg", 1.75), ("median", 1.0), ("krum", 0.0)):
        cfg = ServerConfig(aggregation=AggregationConfig(strategy, trim_ratio=0.0))
        out = server_update(upd, held, SPEC, cfg)
        w = out.bundle.params["layer_0"]["w"]
        np.testing.assert_allclose(w, g["layer_0"]["w"] + expect, rtol=1e-5, atol=1e-5)
        assert out.bundle.norm is norm  # no statistics sent: the clients' normaliser stays
        assert set(out.bundle.device_thresholds) == {1, 2, 3}
        assert out.verdict.ok and out.parent_val_loss is None
        # held-out false alarms per device stay at about the target (here: the maximum)
        for d in devs:
            s = device_scores(out.bundle, d.held_out, d.moteid)
            assert (s > out.bundle.device_thresholds[d.moteid]).mean() <= 0.1
    parent = out.bundle
    again = server_update(upd, held, SPEC, ServerConfig(), parent=parent)
    assert again.parent_val_loss is not None and np.isfinite(again.val_loss)


def test_client_update_trains_and_does_not_recompile_across_device_counts():
    cfg = TrainConfig(local_epochs=1, batch_size=32, min_device_bucket=8, min_step_bucket=8)
    g = _np(init_params(SPEC, 0))
    devs = _devices(7)
    norm = initial_normalizer(devs)
    first = client_update(g, norm, devs[:5], SPEC, cfg, seed=0)
    before = trace_counts()
    second = client_update(g, norm, devs, SPEC, cfg, seed=1)
    third = client_update(g, norm, devs[:3], SPEC, cfg, seed=2)
    assert trace_counts() == before
    assert first.params["layer_0"]["w"].shape[0] == 5 and second.n_samples.shape == (7,)
    assert third.moteids == (1, 2, 3)
    assert (second.loss_after < second.loss_before).mean() > 0.5
    assert all(s.count > 0 for s in second.stats)


def test_robust_strategies_keep_the_normaliser_away_from_failing_devices():
    devs = _devices(5, 150)
    g = _np(init_params(SPEC, 0))
    stats = [SufficientStats.from_array(np.nan_to_num(d.train)) for d in devs]
    bad = SufficientStats.from_array(np.nan_to_num(devs[0].train) + 1000.0)
    upd = ClientUpdate(
        moteids=(1, 2, 3, 4, 5),
        params={k: {m: np.stack([v] * 5) for m, v in la.items()} for k, la in g.items()},
        n_samples=np.ones(5),
        loss_before=np.zeros(5),
        loss_after=np.zeros(5),
        stats=(bad, *stats[1:]),
        norm=initial_normalizer(devs),
    )
    held = {d.moteid: d.held_out for d in devs}
    med = server_update(upd, held, SPEC, ServerConfig(AggregationConfig("median")))
    avg = server_update(upd, held, SPEC, ServerConfig(AggregationConfig("fedavg")))
    assert np.abs(med.bundle.norm.mean).max() < 200 < np.abs(avg.bundle.norm.mean).max()
    with pytest.raises(ValueError):
        ServerConfig(false_alarms_per_device_day=5000.0).quantile  # noqa: B018


def test_robust_strategies_keep_residual_scales_and_thresholds_away_from_failing_devices():
    devs = _devices(6, 250)
    g = _np(init_params(SPEC, 0))
    upd = ClientUpdate(
        moteids=tuple(d.moteid for d in devs),
        params={k: {m: np.stack([v] * 6) for m, v in la.items()} for k, la in g.items()},
        n_samples=np.ones(6),
        loss_before=np.zeros(6),
        loss_after=np.zeros(6),
        stats=tuple(SufficientStats.zeros(N_FEATURES) for _ in devs),
        norm=initial_normalizer(devs),
    )
    clean = {d.moteid: d.held_out for d in devs}
    broken = dict(clean)
    bad = np.nan_to_num(devs[0].held_out).copy()
    bad[::3, :N_CHANNEL_FEATURES] += 500.0  # a failing mote: every third held-out reading
    bad[::3, DIRECT_COLUMNS] += 500.0  # is garbage on every scored feature
    broken[devs[0].moteid] = bad
    out = {}
    for strategy in ("fedavg", "median", "trimmed_mean"):
        cfg = ServerConfig(AggregationConfig(strategy, trim_ratio=0.2))
        out[strategy] = [server_update(upd, h, SPEC, cfg).bundle for h in (clean, broken)]

    def top(b):  # the healthy devices' largest held-out score over their own threshold
        return max(
            float(np.max(device_scores(b, d.held_out, d.moteid))) / b.threshold_for(d.moteid)[0]
            for d in devs[1:]
        )

    for strategy in ("median", "trimmed_mean"):
        ok, hit = out[strategy]
        ratio = hit.residual_scale / ok.residual_scale  # no scale inflated (fedavg: > 100)
        assert ratio.min() > 0.5 and ratio.max() < 2.0, ratio
        assert 0.5 < top(hit) / top(ok) < 2.0
    ok, hit = out["fedavg"]  # plain pooling: the failing mote's garbage sets the tails
    assert np.max(hit.residual_scale / ok.residual_scale) > 100
    assert top(hit) < 1e-3 * top(ok)
