import numpy as np
import pytest

from iot_fed.fl.normalization import Normalizer, SufficientStats, make_xy

from .synthetic import device_readings


def test_sufficient_stats_merge_equals_pooled_data():
    parts = [device_readings(n, d) for d, n in enumerate([50, 1, 300, 7])]
    merged = SufficientStats.total(SufficientStats.from_array(p) for p in parts)
    pooled = np.concatenate(parts).astype(np.float64)
    mean, std = merged.mean_std()
    assert merged.count == len(pooled)
    np.testing.assert_allclose(mean, pooled.mean(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(std, pooled.std(axis=0), rtol=1e-6)
    assert (SufficientStats.from_array(parts[0]) + SufficientStats.from_array(parts[1])).count == 51
    again = SufficientStats.from_dict(merged.to_dict())
    np.testing.assert_array_equal(again.sum, merged.sum)


def test_constant_feature_std_is_floored_and_normalisation_round_trips():
    x = device_readings(100, 0)
    x[:, 3] = 2.5  # dead-constant voltage
    norm = SufficientStats.from_array(x).normalizer(min_std=1e-3)
    assert norm.std[3] == pytest.approx(1e-3)
    z = norm.apply(x)
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(z[:, :3].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :3].std(axis=0), 1, rtol=1e-4)
    np.testing.assert_allclose(norm.invert(z), x, rtol=1e-5, atol=1e-4)
    xin, y = make_xy(x, norm)
    np.testing.assert_array_equal(y, xin[:, :4])
    assert Normalizer.from_dict(norm.to_dict()).std[3] == norm.std[3]


def test_empty_stats_cannot_normalise():
    with pytest.raises(ValueError, match="zero samples"):
        SufficientStats.zeros(6).mean_std()
    with pytest.raises(ValueError, match="no statistics"):
        SufficientStats.total([])
