"""The detection benchmark end to end on a tiny configuration, plus its data helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iot_fed.evaluation import datasets as ds
from iot_fed.evaluation.benchmark import DetectionBenchConfig, run_detection_benchmark
from iot_fed.evaluation.faults import FAULT_TYPES, FaultConfig
from iot_fed_tests.evaluation.helpers import make_frame


def test_split_in_time_per_device() -> None:
    f = make_frame(motes=2, n=100)
    train, test = ds.split_in_time(f, 0.7)
    assert len(train) == 140 and len(test) == 60
    for m in (1, 2):
        assert train.loc[train.moteid == m, "ts"].max() < test.loc[test.moteid == m, "ts"].min()
    capped, _ = ds.split_in_time(f, 0.7, max_train=20)
    assert capped.groupby("moteid").size().tolist() == [20, 20]
    assert (capped.groupby("moteid")["ts"].max() == train.groupby("moteid")["ts"].max()).all()


def test_partition_blocks() -> None:
    f = make_frame(motes=3, n=10).sort_values(["moteid", "ts"]).reset_index(drop=True)
    p = ds.Partition.of(f)
    assert p.moteids == [1, 2, 3]
    assert [len(x) for x in p.split(np.arange(30))] == [10, 10, 10]
    assert p.subset([2]).sum() == 10


def test_real_single_mote_loader(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("2,19.5572,39.0763\n4,19.2632,39.7217\n6,19.028,40.4328\n")
    df = ds.real_single_mote(path)
    assert list(df.columns) == [
        "ts",
        "epoch",
        "moteid",
        "temperature",
        "humidity",
        "light",
        "voltage",
        "label",
    ]
    assert (df["ts"].diff().dropna() == pd.Timedelta(seconds=62)).all()
    assert (df["light"] == 0).all() and df["voltage"].nunique() == 1


# Quality floors on the seeded tiny configuration below (deterministic given its seed).
# Measured: F1 federated 0.803, centralised 0.865, local-only 0.665, MAD 0.596; ROC-AUC
# 0.972 / 0.982 / 0.985 / 0.875; robust F1 (clean) fedavg 0.803, median 0.805. Each floor
# sits ~0.1 below its value: a regression in the detector, not float noise, trips it.
F1_FLOOR = {"federated": 0.70, "centralised": 0.75, "local_only": 0.55, "mad": 0.45}
ROC_AUC_FLOOR = {"federated": 0.90, "centralised": 0.90, "local_only": 0.90, "mad": 0.75}


@pytest.mark.slow
def test_benchmark_runs_end_to_end_on_a_tiny_config(tmp_path: Path) -> None:
    cfg = DetectionBenchConfig(
        motes=4,
        days=0.6,
        rounds=1,
        local_epochs=1,
        hidden=(8, 2, 8),
        window=8,
        failing=(1,),
        strategies=("fedavg", "median"),
        dp_noise=(0.0, 1.0),
        baseline_window=20,
        min_rows_per_device=50,
        methods=("federated", "centralised", "local_only", "mad", "pyod_iforest"),
        faults=FaultConfig(
            rates=dict.fromkeys(FAULT_TYPES, 0.02),
            segment_length={"stuck": 8, "drift": 10, "bias": 8, "noise": 5, "low_voltage": 15},
        ),
        work_dir=tmp_path,
    )
    results, md = run_detection_benchmark(cfg)
    json.dumps(results)  # JSON-ready for Dagster metadata
    assert results["dataset"]["devices"] == 4
    methods = results["methods"]
    assert set(methods) == {"federated", "centralised", "local_only", "mad", "pyod_iforest"}
    for name, res in methods.items():
        if "skipped" in res:  # the bench extra is not in the test environment
            assert name == "pyod_iforest"
            continue
        o = res["overall"]
        assert 0.0 <= o["f1"] <= 1.0 and 0.0 <= o["roc_auc"] <= 1.0 and 0.0 <= o["pr_auc"] <= 1.0
        assert o["f1"] >= F1_FLOOR.get(name, 0.0), (name, o["f1"])
        assert o["roc_auc"] >= ROC_AUC_FLOOR.get(name, 0.0), (name, o["roc_auc"])
        assert set(res["per_type"]) == set(FAULT_TYPES)
        assert res["false_alarms_per_device_day"] >= 0
        if name in ("federated", "centralised"):  # the model on the fault-free test period
            assert 0 <= res["false_alarms_per_device_day_no_faults"] < 2800
    assert "false_alarms_per_device_day_no_faults" not in methods["local_only"]
    assert set(results["robust"]["f1"]) == {"fedavg", "median"}
    assert set(results["robust"]["f1"]["median"]) == {"clean", "failing_1"}
    assert all(results["robust"]["f1"][s]["clean"] >= 0.70 for s in ("fedavg", "median"))
    assert set(results["dp"]["f1"]) == {"0.0", "1.0"}
    assert results["engine_vs_bare"]["ratio"] > 0
    plot = results["plot"]
    assert plot and all(len(v["score"]) > 0 and v["episodes"] for v in plot.values())
    assert "| federated |" in md and "Event recall" in md and "Robustness" in md
