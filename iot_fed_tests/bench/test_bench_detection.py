"""``bench/bench_detection.py --quick --section``: the methods at their calibrated
thresholds, one run per seed (figures present and in range, never their values)."""

from __future__ import annotations

import pytest

from iot_fed_tests.bench.helpers import run_quick


@pytest.mark.slow
def test_calibrated_figures_per_seed_and_method() -> None:
    args = ("--section", "calibrated", "--seeds", "7,1", "--methods", "federated,mad")
    doc = run_quick("bench_detection.py", "detection", 600, *args)
    assert set(doc) == {"calibrated"}, "only the asked section is written"
    per_seed = doc["calibrated"]["per_seed"]
    assert set(per_seed) == {"7", "1"}
    for methods in per_seed.values():
        assert set(methods) == {"federated", "mad"}
        for fig in methods.values():
            assert 0.0 <= fig["f1"] <= 1.0 and 0.0 <= fig["pr_auc"] <= 1.0
            assert fig["false_alarms_per_device_day"] >= 0.0
        assert methods["federated"]["clean_false_alarms_per_device_day"] >= 0.0
        assert methods["mad"]["clean_false_alarms_per_device_day"] is None  # models only
