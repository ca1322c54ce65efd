"""The detection benchmark end to end on a tiny configuration, plus its data helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from iot_fed.evaluation import datasets as ds
from iot_fed.evaluation.benchmark import DetectionBenchConfig, run_detection_benchmark
from iot_fed.evaluation.faults import FAULT_TYPES, FaultConfig
from iot_fed_tests.evaluation.conftest import make_frame


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


def test_benchmark_runs_end_to_end_on_a_tiny_config(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    epochs = np.arange(1, 1201)
    hod = (epochs * 31 / 3600) % 24
    temp = 21 + 3 * np.sin(2 * np.pi * hod / 24) + rng.normal(0, 0.1, epochs.size)
    real = tmp_path / "real.csv"
    pd.DataFrame({"e": epochs, "t": temp, "h": 60 - temp}).to_csv(real, header=False, index=False)
    cfg = DetectionBenchConfig(
        motes=4,
        days=0.4,
        rounds=2,
        hidden=(8,),
        failing_motes=1,
        baseline_window=20,
        faults=FaultConfig(
            rates=dict.fromkeys(FAULT_TYPES, 0.02),
            segment_length={"stuck": 8, "drift": 10, "bias": 8, "noise": 5, "low_voltage": 15},
        ),
        real_data_path=real,
        work_dir=tmp_path,
    )
    results, md = run_detection_benchmark(cfg)
    json.dumps(results)  # JSON-ready for Dagster metadata

    gen = results["datasets"]["generated"]
    assert gen["devices"] == 4
    assert set(gen["methods"]) == {
        "federated",
        "federated_device_thr",
        "local_only",
        "centralised",
        "zscore",
        "mad",
    }
    for res in gen["methods"].values():
        assert set(res["metrics"]) == {*FAULT_TYPES, "all"}
        for m in res["metrics"].values():
            assert 0.0 <= m["f1"] <= 1.0 and 0.0 <= m["roc_auc"] <= 1.0
    assert all(n > 0 for n in gen["injected"].values())
    fd = results["failing_device"]
    assert len(fd["failing_motes"]) == 1 and fd["garbage_rows"] > 0
    assert set(fd["runs"]) == {
        f"{k}/{s}" for k in ("clean", "failing") for s in ("fedavg", "median", "trimmed_mean")
    }
    assert all(len(r["f1"]) == 2 for r in fd["runs"].values())
    real_res = results["datasets"]["real_single_mote"]
    assert set(real_res["methods"]) == {"local_only", "zscore", "mad"}
    assert "| federated |" in md and "Failing devices" in md and "real_single_mote" in md


def test_missing_real_file_is_reported_not_fatal(tmp_path: Path) -> None:
    from iot_fed.evaluation.report import detection_markdown

    res = {"datasets": {"real_single_mote": {"skipped": "x not found"}}}
    assert "skipped: x not found" in detection_markdown(res)
