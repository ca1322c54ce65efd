"""Detection benchmark: federated vs local-only vs centralised vs statistical baselines.

``run_detection_benchmark(config) -> (results dict, markdown str)`` (used by the Dagster
asset ``anomaly_benchmark`` and by ``bench/bench_detection.py``):

1. clean generated readings of ``motes`` motes over ``days`` (and, when ``real_data_path``
   is given and exists, the real single-mote Intel Lab series);
2. per device, the first ``train_fraction`` of readings (by time) train, the rest test
   (same split for every method); labelled faults are injected into the test part only;
3. every method scores the same test rows; precision / recall / F1 / ROC-AUC per fault
   type (each type evaluated on normal rows + its own rows) and over all rows;
4. failing devices: ``failing_motes`` motes' training data turns into the dying-battery
   pattern (the last ``failing_fraction`` of their window); the global model's F1 on the
   healthy motes' test data is tracked over rounds for each aggregation strategy, next
   to the clean run. Robust strategies combine thresholds with the median, FedAvg with
   the sample-weighted mean. The normaliser is built from in-range readings (as the
   product's training windows do), but the garbage itself is fed to local training, i.e.
   the experiment assumes the range check missed it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iot_fed.data.parse import mark_faults
from iot_fed.evaluation import datasets as ds
from iot_fed.evaluation import methods as mt
from iot_fed.evaluation.faults import FAULT_TYPES, FaultConfig, dying_battery, inject_faults
from iot_fed.evaluation.metrics import binary_report, per_fault_report
from iot_fed.evaluation.report import detection_markdown
from iot_fed.fl.spec import ModelSpec, Params
from iot_fed.fl.training import TrainConfig

METHODS = ("federated", "local_only", "centralised", "zscore", "mad")
"""``federated`` also yields ``federated_device_thr`` (same model, per-device thresholds)."""


def _default_faults() -> FaultConfig:
    return FaultConfig(rates=dict.fromkeys(FAULT_TYPES, 0.02))


@dataclass(frozen=True)
class DetectionBenchConfig:
    """Every knob of the detection benchmark (defaults: the full 54-mote run)."""

    motes: int = 54
    days: float = 2.0
    seed: int = 7
    train_fraction: float = 0.7
    max_train_per_device: int | None = 2000
    min_rows_per_device: int = 50
    rounds: int = 10
    local_epochs: int = 1
    batch_size: int = 50
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    hidden: tuple[int, ...] = (32, 16)
    activation: str = "relu"
    threshold_quantile: float = 0.99
    faults: FaultConfig = field(default_factory=_default_faults)
    baseline_window: int = 60
    failing_motes: int = 5
    failing_fraction: float = 0.5
    strategies: tuple[str, ...] = ("fedavg", "median", "trimmed_mean")
    trim_ratio: float = 0.1
    real_data_path: Path | None = None
    real_max_rows: int | None = None
    work_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> DetectionBenchConfig:
        """Model / training knobs from :class:`iot_fed.config.Settings`; the rest default."""
        base = cls(
            motes=settings.generator_motes,
            seed=settings.generator_seed,
            max_train_per_device=settings.training_window,
            local_epochs=settings.local_epochs,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            optimizer=settings.optimizer,
            hidden=tuple(settings.model_hidden),
            activation=settings.model_activation,
            threshold_quantile=settings.threshold_quantile,
            trim_ratio=settings.trim_ratio,
        )
        return replace(base, **overrides)

    def setup(self) -> mt.Setup:
        spec = ModelSpec(hidden=self.hidden, activation=self.activation)
        tcfg = TrainConfig(
            optimizer=self.optimizer,
            learning_rate=self.learning_rate,
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            threshold_quantile=self.threshold_quantile,
        )
        return mt.Setup(spec, tcfg, self.rounds, self.seed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["faults"] = self.faults.to_dict()
        d["hidden"] = list(self.hidden)
        d["strategies"] = list(self.strategies)
        for k in ("real_data_path", "work_dir"):
            d[k] = None if d[k] is None else str(d[k])
        return d


@dataclass
class Prepared:
    """One dataset split, with faults injected into the test part."""

    train: pd.DataFrame
    test: pd.DataFrame
    fault_type: np.ndarray
    part_train: ds.Partition
    part_test: ds.Partition
    train_x: list[np.ndarray]
    test_x_all: np.ndarray
    test_x: list[np.ndarray]


def prepare(frame: pd.DataFrame, cfg: DetectionBenchConfig, faults: FaultConfig) -> Prepared:
    train, test = ds.split_in_time(frame, cfg.train_fraction, cfg.max_train_per_device)
    counts_tr, counts_te = train["moteid"].value_counts(), test["moteid"].value_counts()
    ok = [
        m
        for m in counts_tr.index
        if counts_tr[m] >= cfg.min_rows_per_device
        and counts_te.get(m, 0) >= cfg.min_rows_per_device
    ]
    train = train[train["moteid"].isin(ok)].reset_index(drop=True)
    test = test[test["moteid"].isin(ok)].reset_index(drop=True)
    inj = inject_faults(test, faults, seed=cfg.seed)
    test = inj.frame
    pt, pe = ds.Partition.of(train), ds.Partition.of(test)
    if pt.moteids != pe.moteids:
        raise ValueError("train and test must hold the same devices")
    test_x_all = ds.features(test)
    return Prepared(
        train,
        test,
        inj.fault_type,
        pt,
        pe,
        pt.split(ds.features(train)),
        test_x_all,
        pe.split(test_x_all),
    )


def _report(fault_type: np.ndarray, scored: mt.Scored) -> dict[str, Any]:
    s = scored.scores
    rep = per_fault_report(fault_type, ~(s <= 1.0), s, types=list(FAULT_TYPES))
    return {"metrics": rep, "seconds": round(scored.seconds, 3), **scored.info}


def compare_methods(
    p: Prepared, cfg: DetectionBenchConfig, channels: list[str], methods: tuple[str, ...] = METHODS
) -> dict[str, Any]:
    """Score every method on the prepared test set; per-fault-type metrics per method."""
    setup = cfg.setup()
    out: dict[str, Any] = {}
    for name in methods:
        if name == "federated":
            for k, sc in mt.run_federated(p.train_x, p.test_x, p.part_train.moteids, setup).items():
                out[k] = _report(p.fault_type, sc)
            continue
        if name == "local_only":
            sc = mt.run_local_only(p.train_x, p.test_x, p.part_train.moteids, setup)
        elif name == "centralised":
            sc = mt.run_centralised(p.train_x, p.test_x_all, setup)
        else:
            sc = mt.run_baseline(
                name, p.train, p.test, channels, cfg.baseline_window, cfg.threshold_quantile
            )
        out[name] = _report(p.fault_type, sc)
    return out


def failing_device_experiment(p: Prepared, cfg: DetectionBenchConfig) -> dict[str, Any]:
    """F1 of the global model over rounds: clean run vs poisoned runs per strategy."""
    setup = cfg.setup()
    rng = np.random.default_rng([cfg.seed, 99])
    ids = p.part_train.moteids
    k = min(cfg.failing_motes, max(len(ids) - 1, 0))
    failing = sorted(int(m) for m in rng.choice(ids, size=k, replace=False))
    healthy_rows = ~p.part_test.subset(failing)
    ft = p.fault_type[healthy_rows]
    test_x = p.test_x_all[healthy_rows]

    poisoned, garbage = dying_battery(p.train, failing, cfg.failing_fraction, seed=cfg.seed)
    clean_norm = mt.pooled_normalizer(p.train_x)
    poisoned_x = p.part_train.split(ds.features(poisoned))
    in_range = ~mark_faults(poisoned.copy())["fault"].to_numpy()
    poisoned_norm = mt.pooled_normalizer(
        [x[in_range[s]] for x, s in zip(poisoned_x, p.part_train.slices, strict=True)]
    )

    def track(train_x: list[np.ndarray], norm: Any, strategy: str) -> dict[str, Any]:
        f1s: list[float] = []
        aucs: list[float] = []

        def hook(_r: int, params: Params, thr: float) -> None:
            s = mt.score_global(params, norm, thr, test_x, setup.spec)
            rep = binary_report(ft != "", ~(s <= 1.0), s)
            f1s.append(round(rep["f1"], 4))
            aucs.append(round(rep["roc_auc"], 4))

        how = "weighted_mean" if strategy == "fedavg" else "median"
        _, _, info = mt.federated(train_x, ids, norm, setup, strategy, cfg.trim_ratio, how, hook)
        return {
            "f1": f1s,
            "roc_auc": aucs,
            "threshold_how": how,
            "threshold": info["threshold"],
            "seconds": round(sum(info["round_seconds"]), 3),
        }

    runs: dict[str, Any] = {}
    for strategy in cfg.strategies:
        runs[f"clean/{strategy}"] = track(p.train_x, clean_norm, strategy)
    for strategy in cfg.strategies:
        runs[f"failing/{strategy}"] = track(poisoned_x, poisoned_norm, strategy)
    return {
        "failing_motes": failing,
        "garbage_rows": int(garbage.sum()),
        "failing_fraction": cfg.failing_fraction,
        "trim_ratio": cfg.trim_ratio,
        "evaluated_on": "test rows of the healthy motes",
        "runs": runs,
    }


def _dataset_info(p: Prepared) -> dict[str, Any]:
    ft = pd.Series(p.fault_type)
    return {
        "devices": len(p.part_train.moteids),
        "train_rows": len(p.train),
        "test_rows": len(p.test),
        "injected": {t: int((ft == t).sum()) for t in FAULT_TYPES},
    }


def run_detection_benchmark(
    config: DetectionBenchConfig | None = None,
) -> tuple[dict[str, Any], str]:
    """Run the whole benchmark; return ``(results, markdown table)``."""
    cfg = config or DetectionBenchConfig()
    t0 = time.perf_counter()
    results: dict[str, Any] = {"config": cfg.to_dict(), "datasets": {}}

    frame = ds.generated_readings(cfg.motes, cfg.days, cfg.seed, cfg.work_dir)
    gen = prepare(frame, cfg, cfg.faults)
    channels = list(cfg.faults.channels)
    results["datasets"]["generated"] = {
        **_dataset_info(gen),
        "methods": compare_methods(gen, cfg, channels),
    }
    results["failing_device"] = failing_device_experiment(gen, cfg)

    path = cfg.real_data_path
    if path is not None and Path(path).exists():
        real = ds.real_single_mote(Path(path), max_rows=cfg.real_max_rows)
        rf = replace(
            cfg.faults,
            channels=("temperature", "humidity"),
            low_voltage_channels=("temperature", "humidity"),
        )
        rp = prepare(real, replace(cfg, max_train_per_device=None), rf)
        results["datasets"]["real_single_mote"] = {
            **_dataset_info(rp),
            "path": str(path),
            "note": "one mote: federated = local-only = centralised, so only the local MLP "
            "runs; ts reconstructed from epoch x 31 s; light=0, voltage constant; "
            "faults on temperature/humidity only",
            "methods": compare_methods(
                rp,
                replace(cfg, max_train_per_device=None),
                ["temperature", "humidity"],
                ("local_only", "zscore", "mad"),
            ),
        }
    elif path is not None:
        results["datasets"]["real_single_mote"] = {"skipped": f"{path} not found"}
    results["seconds"] = round(time.perf_counter() - t0, 2)
    return results, detection_markdown(results)
