"""anomaly_benchmark materializes on a tiny configuration and reports every method."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from iot_fed.config import get_settings
from iot_fed.defs.assets.benchmark import anomaly_benchmark
from iot_fed.defs.resources import SettingsResource


@pytest.mark.slow  # the detection benchmark end to end (~10 s)
def test_anomaly_benchmark_tiny(monkeypatch, tmp_path):
    monkeypatch.setenv("IOT_FED_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    cfg = {
        "ops": {
            "anomaly_benchmark": {
                "config": {
                    "motes": 3,
                    "days": 0.5,
                    "rounds": 1,
                    "failing_motes": 1,
                    "sensitivity_magnitudes": [1.0, 2.0],
                }
            }
        }
    }
    res = dg.materialize(
        [anomaly_benchmark], resources={"settings": SettingsResource()}, run_config=cfg
    )
    assert res.success
    md = res.asset_materializations_for_node("anomaly_benchmark")[0].metadata["report"].value
    for method in ("federated", "local_only", "centralised", "zscore", "mad"):
        assert f"| {method} |" in md
    meta = res.asset_materializations_for_node("anomaly_benchmark")[0].metadata
    assert "Magnitude reaching event recall" in meta["sensitivity"].value
    assert meta["sensitivity_plot"].value.startswith("![recall vs magnitude](data:image/png")
    results = json.loads((tmp_path / "benchmarks" / "anomaly_benchmark.json").read_text())
    table = results["sensitivity"]["table"]
    assert {r["method"] for r in table} >= {"federated", "centralised", "mad"}
