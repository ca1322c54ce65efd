"""The detectors compared by the benchmark, each returning threshold-normalised test scores.

Every method returns per-test-row ``score / threshold`` (so a reading is flagged when the
value is > 1, and pooled ROC-AUC over devices with their own thresholds is meaningful):

* :func:`federated` — FedAvg-style rounds with ``train_devices`` + ``aggregate``; global
  threshold from ``combine_thresholds`` of the devices' training-score quantiles;
* :func:`local_only` — each device trains alone (own normaliser, own threshold) for the
  same number of epochs as the federation's rounds x local epochs;
* :func:`centralised` — one device holding all pooled training data (upper reference);
* :func:`baseline` — rolling z-score / MAD with a per-device training-quantile threshold.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from iot_fed.evaluation.baselines import rolling_mad, rolling_zscore
from iot_fed.fl.aggregation import aggregate
from iot_fed.fl.model import init_params
from iot_fed.fl.normalization import Normalizer, SufficientStats, make_xy
from iot_fed.fl.scoring import combine_thresholds, score_batch
from iot_fed.fl.spec import ModelSpec, Params
from iot_fed.fl.training import TrainConfig, evaluate_devices, train_devices

THRESHOLD_FLOOR = 1e-12


@dataclass(frozen=True)
class Setup:
    """Model, local-training and federation knobs shared by every learned method."""

    spec: ModelSpec
    train: TrainConfig
    rounds: int
    seed: int = 0


@dataclass
class Scored:
    """A method's threshold-normalised test scores plus timing and extras."""

    scores: np.ndarray
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def _to_numpy(p: Params) -> Params:
    return {k: {m: np.asarray(v) for m, v in layer.items()} for k, layer in p.items()}


def pooled_normalizer(train_x: Sequence[np.ndarray]) -> Normalizer:
    """Global normaliser from the devices' summed sufficient statistics (no pooling)."""
    return SufficientStats.total(SufficientStats.from_array(x) for x in train_x).normalizer()


def global_threshold(
    params: Params,
    data: Sequence[tuple[np.ndarray, np.ndarray]],
    setup: Setup,
    how: str = "weighted_mean",
) -> float:
    """Combine per-device training-score quantiles of one model into a global threshold."""
    ev = evaluate_devices(params, data, setup.spec, quantile=setup.train.threshold_quantile)
    return max(combine_thresholds(ev.thresholds, ev.n_samples, how), THRESHOLD_FLOOR)


RoundHook = Callable[[int, Params, float], None]


def federated(
    train_x: Sequence[np.ndarray],
    moteids: Sequence[int],
    norm: Normalizer,
    setup: Setup,
    strategy: str = "fedavg",
    trim_ratio: float = 0.1,
    threshold_how: str = "weighted_mean",
    on_round: RoundHook | None = None,
) -> tuple[Params, float, dict[str, Any]]:
    """Run ``setup.rounds`` federated rounds from a fresh init; return (params, threshold, info).

    ``on_round(r, params, threshold)`` is called after every round (for F1-over-rounds).
    """
    data = [make_xy(x, norm, setup.spec.n_outputs) for x in train_x]
    g = _to_numpy(init_params(setup.spec, setup.seed))
    round_s: list[float] = []
    thr = float("nan")
    for r in range(setup.rounds):
        t0 = time.perf_counter()
        res = train_devices(
            g, data, setup.spec, setup.train, seed=setup.seed * 1000 + r, device_ids=list(moteids)
        )
        g, _ = aggregate(res.params, res.n_samples, strategy, trim_ratio=trim_ratio)
        round_s.append(time.perf_counter() - t0)
        if on_round is not None or r == setup.rounds - 1:
            thr = global_threshold(g, data, setup, threshold_how)
        if on_round is not None:
            on_round(r, g, thr)
    return (
        g,
        thr,
        {
            "round_seconds": round_s,
            "strategy": strategy,
            "threshold_how": threshold_how,
            "threshold": thr,
        },
    )


def score_global(
    params: Params, norm: Normalizer, threshold: float, test_x: np.ndarray, spec: ModelSpec
) -> np.ndarray:
    return score_batch(params, test_x, spec=spec, norm=norm) / threshold


def run_federated(
    train_x: Sequence[np.ndarray],
    test_x: Sequence[np.ndarray],
    moteids: Sequence[int],
    setup: Setup,
    **kwargs: Any,
) -> dict[str, Scored]:
    """The federated global model scored two ways: with the global threshold
    (``federated``) and with each device's own quantile of the global model's training
    scores (``federated_device_thr``; still only scalars leave a device)."""
    t0 = time.perf_counter()
    norm = pooled_normalizer(train_x)
    params, thr, info = federated(train_x, moteids, norm, setup, **kwargs)
    secs = time.perf_counter() - t0
    raw = [score_batch(params, x, spec=setup.spec, norm=norm) for x in test_x]
    data = [make_xy(x, norm, setup.spec.n_outputs) for x in train_x]
    ev = evaluate_devices(params, data, setup.spec, quantile=setup.train.threshold_quantile)
    dev_thr = np.maximum(np.nan_to_num(ev.thresholds, nan=np.inf), THRESHOLD_FLOOR)
    per_device = np.concatenate([r / t for r, t in zip(raw, dev_thr, strict=True)])
    return {
        "federated": Scored(np.concatenate(raw) / thr, secs, info),
        "federated_device_thr": Scored(per_device, secs, {"threshold": "per device"}),
    }


def run_local_only(
    train_x: Sequence[np.ndarray],
    test_x: Sequence[np.ndarray],
    moteids: Sequence[int],
    setup: Setup,
) -> Scored:
    """Each device trains alone for ``rounds x local_epochs`` epochs; own norm and threshold."""
    t0 = time.perf_counter()
    norms = [SufficientStats.from_array(x).normalizer() for x in train_x]
    data = [make_xy(x, nm, setup.spec.n_outputs) for x, nm in zip(train_x, norms, strict=True)]
    cfg = replace(setup.train, local_epochs=setup.train.local_epochs * setup.rounds)
    res = train_devices(
        _to_numpy(init_params(setup.spec, setup.seed)),
        data,
        setup.spec,
        cfg,
        seed=setup.seed,
        device_ids=list(moteids),
    )
    scores = []
    for i, (x, nm) in enumerate(zip(test_x, norms, strict=True)):
        thr = max(float(res.thresholds[i]), THRESHOLD_FLOOR)
        scores.append(score_batch(res.device_params(i), x, spec=setup.spec, norm=nm) / thr)
    secs = time.perf_counter() - t0
    return Scored(np.concatenate(scores), secs, {"epochs": cfg.local_epochs})


def run_centralised(train_x: Sequence[np.ndarray], test_x: np.ndarray, setup: Setup) -> Scored:
    """One device holding every device's training data, ``rounds x local_epochs`` epochs."""
    t0 = time.perf_counter()
    norm = pooled_normalizer(train_x)
    x, y = make_xy(np.concatenate(train_x), norm, setup.spec.n_outputs)
    cfg = replace(setup.train, local_epochs=setup.train.local_epochs * setup.rounds)
    res = train_devices(
        _to_numpy(init_params(setup.spec, setup.seed)), [(x, y)], setup.spec, cfg, seed=setup.seed
    )
    thr = max(float(res.thresholds[0]), THRESHOLD_FLOOR)
    secs = time.perf_counter() - t0
    return Scored(
        score_global(res.device_params(0), norm, thr, test_x, setup.spec),
        secs,
        {"epochs": cfg.local_epochs, "n_train": int(x.shape[0])},
    )


def run_baseline(
    kind: str,
    train: pd.DataFrame,
    test: pd.DataFrame,
    channels: Sequence[str],
    window: int,
    quantile: float,
) -> Scored:
    """Rolling ``zscore`` or ``mad`` over each device's train+test series (trailing window);
    per-device threshold: the ``quantile`` of its training-part scores."""
    fn = {"zscore": rolling_zscore, "mad": rolling_mad}[kind]
    t0 = time.perf_counter()
    both = pd.concat([train.assign(_test=False), test.assign(_test=True)], ignore_index=True)
    s = fn(both, channels, window)
    is_test = both["_test"].to_numpy()
    thr = pd.Series(s[~is_test]).groupby(both["moteid"].to_numpy()[~is_test]).quantile(quantile)
    test_thr = np.maximum(thr.reindex(test["moteid"].to_numpy()).to_numpy(), THRESHOLD_FLOOR)
    test_thr = np.nan_to_num(test_thr, nan=np.inf)  # a device with no training rows: never flags
    secs = time.perf_counter() - t0
    # ``both`` keeps test rows in the same order as ``test`` (appended after train)
    return Scored(s[is_test] / test_thr, secs, {"window": window})
