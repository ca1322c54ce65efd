"""Fleet tails: pooled for FedAvg, robust to failing devices for the robust strategies."""

import math
import subprocess
import sys

import numpy as np
import pytest

from iot_fed.fl.detector import calibrate
from iot_fed.fl.tails import (
    combined_tail_quantile,
    n_trimmed,
    pooling_for,
    tail_quantile,
    trimmed_pool_quantile,
)


def test_scoring_and_server_modules_do_not_import_jax():
    code = (
        "import sys, iot_fed.fl, iot_fed.fl.stream_scoring, iot_fed.fl.rounds, "
        "iot_fed.fl.tails, iot_fed.fl.forward, iot_fed.fl.serialization, "
        "iot_fed.fl.aggregation; assert 'jax' not in sys.modules, 'jax imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tail_quantile_golden():
    x = np.arange(10.0)
    # u = 0.9 quantile = 8.1; one excess (0.9); 8.1 + 0.9 ln(0.1 / 0.01)
    assert tail_quantile(x, 0.99) == pytest.approx(8.1 + 0.9 * math.log(10.0))
    assert tail_quantile(x, 0.5) == pytest.approx(4.5)  # below the tail level: empirical
    two = tail_quantile(np.stack([x, 2 * x], axis=1), 0.99)
    np.testing.assert_allclose(two, np.array([1.0, 2.0]) * two[0])
    # an exponential sample's extrapolated quantile is close to the true one
    e = np.random.default_rng(0).exponential(2.0, 20_000)
    assert tail_quantile(e, 1 - 1 / 2800) == pytest.approx(-2.0 * math.log(1 / 2800), rel=0.05)


def test_pooling_follows_the_strategy():
    assert pooling_for("fedavg") == "pooled"
    assert pooling_for("median") == pooling_for("krum") == "median"
    assert pooling_for("trimmed_mean") == "trimmed_mean"
    assert n_trimmed(54, 0.2) == 10 and n_trimmed(3, 0.49) == 1 and n_trimmed(2, 0.4) == 0


def _fleet(bad_offset):
    good = [np.arange(20.0) + i for i in range(4)]
    return good, [*good, np.arange(20.0) + bad_offset]


def test_trimmed_pool_leaves_out_the_heaviest_device_and_fedavg_pools_all():
    good, fleet = _fleet(1000.0)
    q = 0.99
    pooled_good = np.quantile(np.concatenate(good), q)
    assert trimmed_pool_quantile(fleet, q, 0.2)[0] == pytest.approx(pooled_good)
    assert trimmed_pool_quantile(fleet, q, 0.0)[0] == pytest.approx(
        np.quantile(np.concatenate(fleet), q)
    )
    assert trimmed_pool_quantile(fleet, q, 0.0)[0] > 1000


def test_combined_tail_is_the_median_of_device_tails():
    good, fleet = _fleet(1000.0)
    q = 0.999
    tails = sorted(float(tail_quantile(s, q)) for s in fleet)
    assert combined_tail_quantile(fleet, q, "median") == pytest.approx(tails[2])
    assert combined_tail_quantile(fleet, q, "trimmed_mean", 0.2) == pytest.approx(
        np.mean(tails[1:4])
    )
    assert combined_tail_quantile(fleet, q, "pooled") > 1000 > tails[3] - 1000
    with pytest.raises(ValueError):
        combined_tail_quantile(fleet, q, "mean")


def test_robust_calibration_ignores_a_failing_device():
    rng = np.random.default_rng(1)
    scores = {m: rng.exponential(1.0, 300) for m in range(1, 8)}
    healthy = calibrate(scores, 0.999, pooling="median")
    # a failing device: mostly normal, with a heavy tail of garbage
    bad = rng.exponential(1.0, 300)
    bad[::10] = 1e4
    robust = calibrate({**scores, 99: bad}, 0.999, pooling="median")
    plain = calibrate({**scores, 99: bad}, 0.999)
    assert robust.scale_free_quantile == pytest.approx(healthy.scale_free_quantile, rel=0.25)
    assert plain.scale_free_quantile > 100 * healthy.scale_free_quantile
    assert robust.global_threshold < 2 * healthy.global_threshold < plain.global_threshold
