"""Detection benchmark: the federated window detector vs references and baselines.

``run_detection_benchmark(config) -> (results, markdown)`` (the Dagster asset
``anomaly_benchmark`` and ``bench/bench_detection.py``):

1. clean generated readings of ``motes`` motes over ``days``; per device the first
   ``train_fraction`` (by time) trains, the rest is tested; every 10th epoch of the training
   part is held out (as in the product) and calibrates the thresholds;
2. labelled faults are injected into the test part only; test rows are scored as the
   product's stream scores them (:func:`iot_fed.fl.stream_scoring.score_series`): the
   device's preceding readings (train tail included) are the context, readings flagged
   well above their threshold left out;
3. every method is calibrated to the same false-alarm target on clean data and judged on
   event recall and delay per fault type, reading recall, false alarms per device-day on
   the clean test readings (and, for the federated and centralised models, on the same
   test period with no fault injected), and overall precision / recall / F1 / PR-AUC /
   ROC-AUC;
4. robustness: 5 and 10 failing motes (dying battery, stuck sensors) poison training; the
   global model's F1 on the healthy motes' test rows per aggregation strategy;
5. DP: F1 at noise multipliers ``dp_noise`` with clip norm ``dp_clip_norm``;
6. the engine's client update timed beside a bare ``jit(vmap)`` sketch of the same model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iot_fed.evaluation import baselines as bl
from iot_fed.evaluation import datasets as ds
from iot_fed.evaluation import methods as mt
from iot_fed.evaluation.faults import FAULT_TYPES, FaultConfig, inject_faults
from iot_fed.evaluation.metrics import binary_report, event_report
from iot_fed.evaluation.report import detection_markdown
from iot_fed.fl.holdout import held_out
from iot_fed.fl.rounds import DeviceData, ServerConfig, device_data
from iot_fed.fl.spec import ModelSpec
from iot_fed.fl.training import TrainConfig
from iot_fed.fl.window_features import window_features
from iot_fed.readings import CHANNELS, epoch_ms

METHODS = ("federated", "local_only", "centralised", "zscore", "mad", "river_hst", "pyod_iforest")


def _default_faults() -> FaultConfig:
    return FaultConfig(rates=dict.fromkeys(FAULT_TYPES, 0.02))


@dataclass(frozen=True)
class DetectionBenchConfig:
    """Every knob of the detection benchmark (defaults: the full 54-mote run)."""

    motes: int = 54
    days: float = 2.0
    seed: int = 7
    train_fraction: float = 0.6
    max_train_per_device: int | None = 3000
    min_rows_per_device: int = 100
    rounds: int = 4
    local_epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    hidden: tuple[int, ...] = (32, 4, 32)
    activation: str = "relu"
    window: int = 32
    false_alarms_per_device_day: float = 1.0
    readings_per_device_day: int = 2800
    faults: FaultConfig = field(default_factory=_default_faults)
    baseline_window: int = 32
    failing: tuple[int, ...] = (5, 10)
    failing_fraction: float = 0.5
    strategies: tuple[str, ...] = ("fedavg", "median", "trimmed_mean", "krum")
    trim_ratio: float = 0.2
    dp_noise: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    dp_clip_norm: float = 1.0
    methods: tuple[str, ...] = METHODS
    work_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> DetectionBenchConfig:
        base = cls(
            motes=settings.generator_motes,
            seed=settings.generator_seed,
            window=settings.model_window,
            false_alarms_per_device_day=settings.false_alarms_per_device_day,
            readings_per_device_day=settings.readings_per_device_day,
        )
        return replace(base, **overrides)

    def setup(self) -> mt.Setup:
        spec = ModelSpec(hidden=self.hidden, activation=self.activation, window=self.window)
        tcfg = TrainConfig(
            optimizer=self.optimizer,
            learning_rate=self.learning_rate,
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            evaluate=False,
        )
        server = ServerConfig(
            false_alarms_per_device_day=self.false_alarms_per_device_day,
            readings_per_device_day=self.readings_per_device_day,
        )
        return mt.Setup(spec, tcfg, self.rounds, server, self.seed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["faults"] = self.faults.to_dict()
        d["work_dir"] = None if self.work_dir is None else str(self.work_dir)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass
class Prepared:
    """Train/test split with faults injected into the test part, as window features."""

    train: pd.DataFrame
    test: pd.DataFrame
    fault_type: np.ndarray
    events: list[dict[str, Any]]
    moteids: list[int]
    devices: list[DeviceData]
    test_feats: list[np.ndarray]
    """Window features of the test rows (every reading in the context; the baselines)."""
    test_series: list[mt.Series]
    """Per device: the training then test readings, to score the test rows as a stream."""
    clean_series: list[mt.Series]
    """The same readings without the injected faults (false alarms on clean data)."""
    test_slices: list[slice]


def split(frame: pd.DataFrame, cfg: DetectionBenchConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, test = ds.split_in_time(frame, cfg.train_fraction, cfg.max_train_per_device)
    ctr, cte = train["moteid"].value_counts(), test["moteid"].value_counts()
    ok = [
        m
        for m in ctr.index
        if ctr[m] >= cfg.min_rows_per_device and cte.get(m, 0) >= cfg.min_rows_per_device
    ]
    keep = lambda f: f[f["moteid"].isin(ok)].reset_index(drop=True)  # noqa: E731
    return keep(train), keep(test)


def featurise(
    train: pd.DataFrame, test: pd.DataFrame, spec: ModelSpec
) -> tuple[list[int], list[DeviceData], list[np.ndarray], list[mt.Series], list[slice]]:
    """Per device: training/held-out window features, test features (train as context),
    the raw series to score the test rows on, and the test rows' positions."""
    ids, devs = [], []
    for m, tr in train.groupby("moteid", sort=True):
        v_tr = tr[list(CHANNELS)].to_numpy(np.float64)
        hold = held_out(tr["epoch"].to_numpy())
        devs.append(device_data(int(m), epoch_ms(tr["ts"]), v_tr, hold, spec))
        ids.append(int(m))
    tests, series, slices = test_part(train, test, spec)
    return ids, devs, tests, series, slices


def test_part(
    train: pd.DataFrame, test: pd.DataFrame, spec: ModelSpec, features: bool = True
) -> tuple[list[np.ndarray], list[mt.Series], list[slice]]:
    """Per training device (moteid order): the test rows' window features (``features``,
    else empty), the training-then-test series to score them on, and their positions."""
    tests, series, slices = [], [], []
    te_m = test["moteid"].to_numpy()
    for m, tr in train.groupby("moteid", sort=True):
        idx = np.flatnonzero(te_m == m)
        te = test.iloc[idx]
        ts = np.concatenate([epoch_ms(tr["ts"]), epoch_ms(te["ts"])])
        vals = np.concatenate(
            [tr[list(CHANNELS)].to_numpy(np.float64), te[list(CHANNELS)].to_numpy(np.float64)]
        )
        if features:
            tests.append(window_features(ts, vals, len(te), spec.window_config())[0])
        series.append(mt.Series(ts, vals, len(te)))
        slices.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tests, series, slices


def prepare(frame: pd.DataFrame, cfg: DetectionBenchConfig, faults: FaultConfig) -> Prepared:
    train, test = split(frame, cfg)
    inj = inject_faults(test, faults, seed=cfg.seed)
    spec = cfg.setup().spec
    ids, devs, tests, series, slices = featurise(train, inj.frame, spec)
    clean = test_part(train, test, spec, features=False)[1]
    return Prepared(
        train, inj.frame, inj.fault_type, inj.events, ids, devs, tests, series, clean, slices
    )


def evaluate(
    p: Prepared, s: np.ndarray, cfg: DetectionBenchConfig, rows: np.ndarray | None = None
) -> dict[str, Any]:
    """Every metric of one method's normalised test scores (flag: > 1)."""
    flags = ~(s <= 1.0)
    ft = p.fault_type
    normal = ft == ""
    rep = binary_report(~normal, flags, s)
    types = list(FAULT_TYPES)
    ev = event_report(flags, p.events, types)
    for t in types:
        sel = ft == t
        ev[t]["reading_recall"] = float(flags[sel].mean()) if sel.any() else None
    per_day = cfg.readings_per_device_day
    fa = float(flags[normal].mean()) * per_day if normal.any() else None
    # clean readings whose window still holds an injected reading (the recovery after an
    # episode) are counted above; here only readings more than a window after an episode
    # (their context can still reach back into it when flagged readings were left out)
    after = np.zeros(len(s), bool)
    for e in p.events:
        end = e["position"] + e["length"]
        after[end : end + cfg.window - 1] = True
    clean_ctx = normal & ~after
    fa_ctx = float(flags[clean_ctx].mean()) * per_day if clean_ctx.any() else None
    rep_ctx = binary_report(~normal[~(normal & after)], flags[~(normal & after)])
    overall = {k: rep[k] for k in ("precision", "recall", "f1", "pr_auc", "roc_auc")}
    overall["f1_clean_context"] = rep_ctx["f1"]
    return {
        "overall": overall,
        "false_alarms_per_device_day": fa,
        "false_alarms_per_device_day_clean_context": fa_ctx,
        "per_type": ev,
    }


def baseline_scores(
    kind: str, p: Prepared, cfg: DetectionBenchConfig, test: pd.DataFrame | None = None
) -> np.ndarray:
    """Rolling z-score / MAD of ``test`` (default: the prepared test rows, same order),
    each device's training tail as the window context, calibrated on the training part."""
    test = p.test if test is None else test
    both = pd.concat([p.train.assign(_test=False), test.assign(_test=True)], ignore_index=True)
    chans = list(CHANNELS)
    fn = {"zscore": bl.rolling_zscore, "mad": bl.rolling_mad}[kind]
    s = fn(both, chans, cfg.baseline_window)
    is_test = both["_test"].to_numpy()
    m = both["moteid"].to_numpy()
    tr = [s[~is_test & (m == i)] for i in p.moteids]
    te = [s[is_test & (m == i)] for i in p.moteids]
    return mt.calibrated_baseline(tr, te, p.moteids, cfg.setup().server.quantile)


FeatureScorer = Callable[[Sequence[np.ndarray]], np.ndarray]
"""Per-device window features of test rows -> calibrated scores, concatenated."""


def library_scorer(kind: str, p: Prepared, cfg: DetectionBenchConfig) -> FeatureScorer:
    """River HalfSpaceTrees / PyOD IsolationForest fitted on the standardised training
    window features (benchmark-only extra; raises ImportError without it)."""
    from iot_fed.fl.detector import standardize
    from iot_fed.fl.rounds import initial_normalizer

    norm = initial_normalizer(p.devices)
    tr = [standardize(norm, d.train) for d in p.devices]
    rng = np.random.default_rng(cfg.seed)
    pool = np.concatenate(tr)
    fit = pool[rng.choice(len(pool), size=min(len(pool), 20_000), replace=False)]
    if kind == "pyod_iforest":
        from pyod.models.iforest import IForest

        model = IForest(n_estimators=100, random_state=cfg.seed).fit(fit)
        score = model.decision_function
    else:
        from river import anomaly

        z = np.clip((fit + 5.0) / 10.0, 0.0, 1.0)
        hst = anomaly.HalfSpaceTrees(n_trees=25, height=8, window_size=250, seed=cfg.seed)
        for row in z[:5000]:
            hst.learn_one(dict(enumerate(row)))

        def score(a: np.ndarray) -> np.ndarray:
            zz = np.clip((a + 5.0) / 10.0, 0.0, 1.0)
            return np.array([hst.score_one(dict(enumerate(r))) for r in zz])

    cal = [
        score(x[d.train.shape[0] - min(300, d.train.shape[0]) :])
        for x, d in zip(tr, p.devices, strict=True)
    ]
    q = cfg.setup().server.quantile

    def scorer(test_feats: Sequence[np.ndarray]) -> np.ndarray:
        te = [score(standardize(norm, f)) for f in test_feats]
        return mt.calibrated_baseline(cal, te, p.moteids, q)

    return scorer


def compare_methods(p: Prepared, cfg: DetectionBenchConfig) -> dict[str, Any]:
    setup = cfg.setup()
    out: dict[str, Any] = {}
    for name in cfg.methods:
        t0 = time.perf_counter()
        info: dict[str, Any] = {}
        try:
            if name == "federated":
                sc = mt.run_federated(p.devices, p.test_series, setup)
                s, info = sc.scores, sc.info
                out["_plot"] = plot_data(p, s)
            elif name == "local_only":
                s = mt.run_local_only(p.devices, p.test_series, setup).scores
            elif name == "centralised":
                sc = mt.run_centralised(p.devices, p.test_series, setup)
                s, info = sc.scores, sc.info
            elif name in ("zscore", "mad"):
                s = baseline_scores(name, p, cfg)
            else:
                s = library_scorer(name, p, cfg)(p.test_feats)
        except ImportError as exc:
            out[name] = {"skipped": f"needs the bench extra: {exc}"}
            continue
        res = {**evaluate(p, s, cfg), "seconds": round(time.perf_counter() - t0, 2), **info}
        if name in ("federated", "centralised"):
            res["false_alarms_per_device_day_no_faults"] = no_fault_alarms(p, sc.bundle, cfg)
        out[name] = res
    return out


def no_fault_alarms(p: Prepared, bundle: Any, cfg: DetectionBenchConfig) -> float | None:
    """False alarms per device-day on the test period with no fault injected."""
    if bundle is None:
        return None
    s = mt.normalised_test_scores(bundle, p.clean_series, p.moteids)
    return float(np.mean(~(s <= 1.0))) * cfg.readings_per_device_day if s.size else None


def plot_data(p: Prepared, s: np.ndarray, devices: int = 3) -> dict[str, Any]:
    """Normalised federated scores over time and the injected episodes, for a few devices
    (the ones with the most event types)."""
    kinds: dict[int, set[str]] = {}
    for e in p.events:
        kinds.setdefault(int(e["moteid"]), set()).add(e["type"])
    pick = sorted(kinds, key=lambda m: (-len(kinds[m]), m))[:devices]
    out = {}
    for m in pick:
        sl = p.test_slices[p.moteids.index(m)]
        out[str(m)] = {
            "score": [round(float(v), 4) for v in s[sl]],
            "episodes": [
                {"type": e["type"], "start": e["position"] - sl.start, "length": e["length"]}
                for e in p.events
                if int(e["moteid"]) == m
            ],
        }
    return out


def run_detection_benchmark(
    config: DetectionBenchConfig | None = None, *, extras: bool = True
) -> tuple[dict[str, Any], str]:
    """Run the benchmark; ``extras`` adds robustness, DP and engine timing."""
    cfg = config or DetectionBenchConfig()
    t0 = time.perf_counter()
    frame = ds.generated_readings(cfg.motes, cfg.days, cfg.seed, cfg.work_dir)
    p = prepare(frame, cfg, cfg.faults)
    ft = pd.Series(p.fault_type)
    results: dict[str, Any] = {
        "config": cfg.to_dict(),
        "dataset": {
            "devices": len(p.moteids),
            "train_rows": len(p.train),
            "test_rows": len(p.test),
            "injected_rows": {t: int((ft == t).sum()) for t in FAULT_TYPES},
        },
        "methods": compare_methods(p, cfg),
    }
    results["plot"] = results["methods"].pop("_plot", {})
    if extras:
        from iot_fed.evaluation.stress import dp_tradeoff, robustness

        results["robust"] = robustness(p, cfg)
        results["dp"] = dp_tradeoff(p, cfg)
        from iot_fed.evaluation.engine_timing import engine_vs_bare

        results["engine_vs_bare"] = engine_vs_bare(p.devices, cfg.setup())
    results["seconds"] = round(time.perf_counter() - t0, 2)
    return results, detection_markdown(results)
