"""The detectors compared by the benchmark; every learned one runs the ``fl`` round code.

Each method returns, per test row, ``score / threshold`` of its own calibrated threshold
(flagged when > 1; pooled ROC/PR-AUC over devices stay meaningful):

* :func:`run_federated` — :func:`iot_fed.fl.rounds.client_update` +
  :func:`~iot_fed.fl.rounds.server_update` for ``rounds`` rounds (the product's code);
* :func:`run_local_only` — each device alone, same epochs per sample, own normaliser,
  own calibration;
* :func:`run_centralised` — one model on the pooled data, same epochs per sample, early
  stopping on the held-out validation loss (the upper reference);
* baselines in :mod:`iot_fed.evaluation.baselines`, calibrated with the same rule on their
  training-part scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from iot_fed.fl.aggregation import AggregationConfig
from iot_fed.fl.detector import calibrate, model_xy
from iot_fed.fl.model import init_params
from iot_fed.fl.rounds import (
    DeviceData,
    ServerConfig,
    client_update,
    initial_normalizer,
    server_update,
    validation_loss,
)
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.spec import ModelSpec, Params
from iot_fed.fl.stream_scoring import Series as StreamSeries
from iot_fed.fl.stream_scoring import score_many_series
from iot_fed.fl.training import TrainConfig


@dataclass(frozen=True)
class Setup:
    """Model, local-training and federation knobs shared by every learned method."""

    spec: ModelSpec
    train: TrainConfig
    rounds: int
    server: ServerConfig = field(default_factory=ServerConfig)
    seed: int = 0


@dataclass
class Scored:
    """A method's threshold-normalised test scores plus timing and extras."""

    scores: np.ndarray
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    bundle: ModelBundle | None = None
    """The one model behind the scores (federated, centralised), to score more data."""


def _np(p: Params) -> Params:
    return {k: {m: np.asarray(v) for m, v in layer.items()} for k, layer in p.items()}


class Series(NamedTuple):
    """One device's readings in time order; the last ``n_new`` are scored."""

    ts_ms: np.ndarray
    values: np.ndarray
    n_new: int


def normalised_test_scores(
    bundle: ModelBundle, series: Sequence[Series], ids: Sequence[int]
) -> np.ndarray:
    """Each device's new readings scored as the product's stream scores them
    (:func:`iot_fed.fl.stream_scoring.score_series`: anomalies stay out of the context),
    over the threshold applied to each."""
    many = [StreamSeries(m, s.ts_ms, s.values, s.n_new) for m, s in zip(ids, series, strict=True)]
    out = [res.score / res.threshold for res in score_many_series(bundle, many)]
    return np.concatenate(out) if out else np.zeros(0)


RoundHook = Callable[[int, ModelBundle], None]


def federate(
    devices: Sequence[DeviceData],
    setup: Setup,
    strategy: str = "fedavg",
    *,
    dp_clip_norm: float | None = None,
    dp_noise_multiplier: float = 0.0,
    trim_ratio: float = 0.1,
    on_round: RoundHook | None = None,
) -> tuple[ModelBundle, dict[str, Any]]:
    """``setup.rounds`` rounds of the product's round from a fresh init."""
    agg = AggregationConfig(strategy, trim_ratio, dp_clip_norm, dp_noise_multiplier)
    scfg = replace(setup.server, aggregation=agg)
    params = _np(init_params(setup.spec, setup.seed))
    norm = initial_normalizer(devices)
    held = {d.moteid: d.held_out for d in devices}
    bundle: ModelBundle | None = None
    client_s, server_s = [], []
    for r in range(setup.rounds):
        t0 = time.perf_counter()
        upd = client_update(
            params,
            norm,
            devices,
            setup.spec,
            setup.train,
            seed=setup.seed * 1000 + r,
            device_norms=bundle.device_norms if bundle is not None else None,
        )
        t1 = time.perf_counter()
        out = server_update(
            upd, held, setup.spec, scfg, parent=bundle, global_params=params, seed=r
        )
        server_s.append(time.perf_counter() - t1)
        client_s.append(t1 - t0)
        bundle, params, norm = out.bundle, out.bundle.params, out.bundle.norm
        if on_round is not None:
            on_round(r, bundle)
    assert bundle is not None
    return bundle, {
        "client_seconds": [round(t, 4) for t in client_s],
        "server_seconds": [round(t, 4) for t in server_s],
        "strategy": strategy,
        "global_threshold": bundle.threshold,
    }


def run_federated(
    devices: Sequence[DeviceData], test_series: Sequence[Series], setup: Setup, **kw: Any
) -> Scored:
    t0 = time.perf_counter()
    bundle, info = federate(devices, setup, **kw)
    secs = time.perf_counter() - t0
    return Scored(
        normalised_test_scores(bundle, test_series, [d.moteid for d in devices]),
        secs,
        info,
        bundle,
    )


def run_local_only(
    devices: Sequence[DeviceData], test_series: Sequence[Series], setup: Setup
) -> Scored:
    """Each device alone for ``rounds x local_epochs`` epochs; own normaliser and threshold."""
    t0 = time.perf_counter()
    bundles = local_only_bundles(devices, setup)
    scores = [
        normalised_test_scores(b, [ser], [d.moteid])
        for b, d, ser in zip(bundles, devices, test_series, strict=True)
    ]
    epochs = setup.train.local_epochs * setup.rounds
    return Scored(np.concatenate(scores), time.perf_counter() - t0, {"epochs": epochs})


def local_only_bundles(devices: Sequence[DeviceData], setup: Setup) -> list[ModelBundle]:
    """One calibrated bundle per device, trained on that device alone."""
    cfg = replace(setup.train, local_epochs=setup.train.local_epochs * setup.rounds)
    bundles = []
    g = _np(init_params(setup.spec, setup.seed))
    norms = [initial_normalizer([d]) for d in devices]
    # one vmapped call per distinct normaliser is impossible; train all at once instead by
    # giving every device its own standardised data (client_update standardises with norm)
    from iot_fed.fl.detector import standardize
    from iot_fed.fl.training import train_devices

    data = []
    for d, nm in zip(devices, norms, strict=True):
        z = standardize(nm, d.train)
        data.append(model_xy(setup.spec, z))
    res = train_devices(
        g, data, setup.spec, cfg, seed=setup.seed, device_ids=[d.moteid for d in devices]
    )
    from iot_fed.fl.rounds import calibrate_bundle

    for i, (d, nm) in enumerate(zip(devices, norms, strict=True)):
        b = ModelBundle(setup.spec, res.device_params(i), nm)
        calibrate_bundle(b, {d.moteid: d.held_out}, setup.server.quantile)
        bundles.append(b)
    return bundles


def run_centralised(
    devices: Sequence[DeviceData], test_series: Sequence[Series], setup: Setup
) -> Scored:
    """:func:`centralised_bundle`'s scores of the test series."""
    t0 = time.perf_counter()
    bundle, info = centralised_bundle(devices, setup)
    scores = normalised_test_scores(bundle, test_series, [d.moteid for d in devices])
    return Scored(scores, time.perf_counter() - t0, info, bundle)


def centralised_bundle(
    devices: Sequence[DeviceData], setup: Setup
) -> tuple[ModelBundle, dict[str, Any]]:
    """Pooled data (each device standardised by its own normaliser, as in the federation),
    ``rounds x local_epochs`` epochs in ``rounds`` chunks, keeping the chunk with the best
    held-out validation loss (early stopping); per-device calibration."""
    from iot_fed.fl.detector import standardize
    from iot_fed.fl.rounds import calibrate_bundle, device_normalizer, feature_stats
    from iot_fed.fl.training import train_devices

    fleet = initial_normalizer(devices)
    norms = {d.moteid: device_normalizer(feature_stats(d.train), fleet) for d in devices}
    z = np.concatenate([standardize(norms[d.moteid], d.train) for d in devices])
    data = [model_xy(setup.spec, z)]
    params = _np(init_params(setup.spec, setup.seed))
    held = {d.moteid: d.held_out for d in devices}
    best: tuple[float, ModelBundle] | None = None
    history = []
    for r in range(setup.rounds):
        res = train_devices(params, data, setup.spec, setup.train, seed=setup.seed + r)
        params = res.device_params(0)
        b = ModelBundle(setup.spec, params, fleet, device_norms=norms)
        vl = validation_loss(b, held, fleet)
        history.append(round(vl, 5))
        if best is None or vl < best[0]:
            best = (vl, b)
    assert best is not None
    bundle = best[1]
    calibrate_bundle(bundle, held, setup.server.quantile)
    return bundle, {"epochs": setup.rounds * setup.train.local_epochs, "val_loss": history}


def calibrated_baseline(
    train_scores: Sequence[np.ndarray],
    test_scores: Sequence[np.ndarray],
    ids: Sequence[int],
    quantile: float,
) -> np.ndarray:
    """Baseline scores normalised by thresholds calibrated with the detector's rule on the
    (clean) training-part scores."""
    thr = calibrate({m: s for m, s in zip(ids, train_scores, strict=True)}, quantile)
    out = []
    for m, s in zip(ids, test_scores, strict=True):
        out.append(s / thr.device.get(m, thr.global_threshold))
    return np.concatenate(out)
