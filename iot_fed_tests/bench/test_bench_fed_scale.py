"""``bench/bench_fed_scale.py --quick``: one tiny round through the real daemon, measured
end to end (counts and presence of every figure, never their values). The benchmark starts
the MongoDB server it needs through the project's service manager (``manager.session``)."""

from __future__ import annotations

import pytest

from iot_fed_tests.bench.helpers import run_quick


@pytest.mark.services
@pytest.mark.slow
def test_a_tiny_round_is_measured_stage_by_stage() -> None:
    row = run_quick("bench_fed_scale.py", "fed_scale", timeout_s=540)["devices_60"]
    assert "error" not in row, row
    assert row["devices"] == 60
    assert row["readings"] == 60 * row["per_device"]
    # the sensor's decision launched the round; its runs trained, aggregated and checked
    assert row["runs_in_round"] >= 1
    assert row["sensor_tick_s"] >= 0
    for stage in ("training_s", "aggregation_s", "check_s"):
        assert row[stage] is not None and row[stage] >= 0, stage
    assert row["round_s"] >= row["training_s"]
    # the run worker's database calls were counted through the daemon, batched per device
    assert row["run_calls"].get("find", 0) > 0
    assert row["run_calls"].get("insert", 0) + row["run_calls"].get("update", 0) > 0
    assert row["sensor_tick_calls"].get("find", 0) >= 2  # landed counts and offsets
    roles = row["peak_rss_mb"]
    assert "mongodb server" in roles and "daemon" in roles
    assert any(r.startswith("run worker") for r in roles)
    assert row["version"] is not None and row["version_document_bytes"] > 0
    assert row["device_params_documents"] in (0, 60)
    flops = row["flops"]
    assert flops["round_flops"] > 0 and flops["achieved_flops_per_s"] > 0
    assert row["matmul_flops_per_s"] > 0
    assert row["goals_met"]["round_s"] is None  # goals only at 10,000 and 100,000 devices
    assert row["goals_met"]["version_document"] is True
