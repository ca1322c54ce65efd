"""One federated round, written once: a client update and a server update.

Shaped like fedjax/optax algorithms. The product (:mod:`iot_fed.federation`), the
detection benchmark and the Flower comparison all call these two functions, so there is
one copy of the normaliser floor, the thresholds and the validation verdict.

* :func:`client_update` — every device trains locally from the global params on its own
  window features, all devices in ONE ``jit(vmap)`` call (:func:`train_devices`);
  it returns the stacked params, sample counts, losses and each device's sufficient
  statistics (never raw readings).
* :func:`server_update` — aggregation (fedavg / median / trimmed mean / Krum, optional
  DP), the normaliser from the accumulated statistics, the residual scales and the
  per-device + global thresholds calibrated on held-out normal readings, and the
  validation verdict against the parent model. Returns a ready :class:`ModelBundle`.

JAX is imported only by :func:`client_update` (lazily), so servers that only aggregate
and calibrate stay numpy-only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iot_fed.fl.aggregation import AggregationConfig
from iot_fed.fl.detector import (
    Thresholds,
    calibrate,
    channel_errors,
    combine,
    model_xy,
    residual_channel_errors,
    residual_scale,
    residuals,
    split_rows,
    standardize,
    standardize_by,
    target_quantile,
)
from iot_fed.fl.forward import forward_numpy
from iot_fed.fl.normalization import Normalizer, SufficientStats
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.spec import ModelSpec, Params
from iot_fed.fl.tails import pooling_for
from iot_fed.fl.window_features import DIRECT, N_FEATURES, PER_CHANNEL, window_features
from iot_fed.readings import CHANNELS

_LEVEL = np.array([0.5, 1.0, 10.0, 0.01])
_STEP = np.array([0.01, 0.02, 1.0, 0.001])
FEATURE_STD_FLOOR = np.concatenate(
    [np.array([_STEP[i], _STEP[i], 0.1, 0.1, _STEP[i]]) for i in range(len(CHANNELS))]
    + [_LEVEL, np.array([0.1, 0.1, 0.1])]
    + [np.array([_STEP[i], _STEP[i]]) for i in range(len(CHANNELS))]
)
"""Smallest std per window feature (raw units): diff, dev, spread, run, trend per channel,
then the levels, gap and time of day, then shift and bend per channel. A fleet where a
feature is nearly constant must not turn tiny changes into huge z-scores."""
assert FEATURE_STD_FLOOR.shape == (N_FEATURES,) and len(PER_CHANNEL) == 5 and len(DIRECT) == 2


@dataclass(frozen=True)
class DeviceData:
    """One device's raw window features: training rows and held-out normal rows."""

    moteid: int
    train: np.ndarray
    held_out: np.ndarray

    @property
    def n(self) -> int:
        return int(self.train.shape[0])


def device_data(
    moteid: int,
    ts_ms: np.ndarray,
    values: np.ndarray,
    held_out: np.ndarray,
    spec: ModelSpec,
) -> DeviceData:
    """Window features of one device's series, split into training and held-out rows.

    ``values`` must be finite (data faults removed); ``held_out`` is a boolean row mask.
    The features of every row use the whole series as context.
    """
    f, _ = window_features(ts_ms, values, len(ts_ms), spec.window_config())
    h = np.asarray(held_out, bool)
    return DeviceData(int(moteid), f[~h], f[h])


def feature_stats(feats: np.ndarray) -> SufficientStats:
    """Sufficient statistics over the rows whose every feature is defined."""
    f = np.asarray(feats, np.float64).reshape(-1, N_FEATURES)
    return SufficientStats.from_array(f[np.isfinite(f).all(axis=1)])


MIN_DEVICE_ROWS = 50
"""Below this many complete rows a device uses the fleet normaliser."""


def device_normalizer(stats: SufficientStats, fleet: Normalizer) -> Normalizer:
    """A device's own normaliser (its data, never pooled; floored like the fleet's), or the
    fleet's when it has too few readings. Per-device standardisation lets one shared
    model judge every device relative to its own normal levels and dynamics."""
    if stats.count < MIN_DEVICE_ROWS:
        return fleet
    return stats.normalizer(FEATURE_STD_FLOOR)


def initial_normalizer(devices: Sequence[DeviceData]) -> Normalizer:
    """Before any global model: a normaliser merged from the devices' statistics."""
    return SufficientStats.total(feature_stats(d.train) for d in devices).normalizer(
        FEATURE_STD_FLOOR
    )


@dataclass(frozen=True)
class ClientUpdate:
    """What the devices send back after local training (stacked over devices)."""

    moteids: tuple[int, ...]
    params: Params
    n_samples: np.ndarray
    loss_before: np.ndarray
    loss_after: np.ndarray
    stats: tuple[SufficientStats, ...]
    norm: Normalizer
    """The fleet normaliser (fallback for a device without statistics of its own)."""
    device_norms: dict[int, Normalizer] = field(default_factory=dict)
    """The normaliser each device trained with: its own (see :func:`device_normalizer`)."""

    def device_params(self, i: int) -> Params:
        return {k: {n: v[i] for n, v in layer.items()} for k, layer in self.params.items()}


def client_update(
    global_params: Params,
    norm: Normalizer,
    devices: Sequence[DeviceData],
    spec: ModelSpec,
    cfg: Any,
    *,
    seed: int = 0,
    device_norms: Mapping[int, Normalizer] | None = None,
) -> ClientUpdate:
    """Local training of every device from ``global_params`` in one vmapped call.

    A device standardises with the global model's normaliser for it (``device_norms``)
    when there is one, so warm-started params see the inputs they were trained on;
    otherwise with its own (:func:`device_normalizer`)."""
    known = device_norms or {}
    from iot_fed.fl.training import train_devices  # JAX only here

    data, norms = [], {}
    stats = tuple(feature_stats(d.train) for d in devices)
    for d, st in zip(devices, stats, strict=True):
        own = known.get(d.moteid)
        norms[d.moteid] = own if own is not None else device_normalizer(st, norm)
        z = standardize(norms[d.moteid], d.train)
        data.append(model_xy(spec, z))
    res = train_devices(
        global_params, data, spec, cfg, seed=seed, device_ids=[d.moteid for d in devices]
    )
    return ClientUpdate(
        moteids=tuple(d.moteid for d in devices),
        params=res.params,
        n_samples=res.n_samples,
        loss_before=res.loss_before,
        loss_after=res.loss_after,
        stats=stats,
        norm=norm,
        device_norms=norms,
    )


@dataclass(frozen=True)
class ServerConfig:
    """Aggregation, false-alarm target and promotion tolerance of the server update."""

    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    false_alarms_per_device_day: float = 1.0
    readings_per_device_day: int = 2800
    promotion_tolerance: float = 0.05
    min_calibration_windows: int = 0

    @property
    def quantile(self) -> float:
        return target_quantile(self.false_alarms_per_device_day, self.readings_per_device_day)

    def verdict(
        self, val_loss: float | None, parent: float | None, n_validation: int | None
    ) -> Verdict:
        """:func:`validation_verdict` with this config's tolerance and calibration minimum."""
        return validation_verdict(
            val_loss, parent, self.promotion_tolerance, n_validation, self.min_calibration_windows
        )

    @classmethod
    def from_settings(cls, settings: Any) -> ServerConfig:
        return cls(
            aggregation=AggregationConfig.from_settings(settings),
            false_alarms_per_device_day=settings.false_alarms_per_device_day,
            readings_per_device_day=settings.readings_per_device_day,
            promotion_tolerance=settings.promotion_tolerance,
            min_calibration_windows=settings.min_calibration_windows,
        )


@dataclass(frozen=True)
class Verdict:
    """May the new global model replace the parent (held-out validation loss)?"""

    ok: bool
    reason: str


@dataclass(frozen=True)
class ServerUpdate:
    """The new global model and how it was made."""

    bundle: ModelBundle
    norm_stats: SufficientStats
    aggregation: dict[str, Any]
    thresholds: Thresholds
    val_loss: float
    parent_val_loss: float | None
    n_validation: int
    verdict: Verdict


def validation_verdict(
    val_loss: float | None,
    parent: float | None,
    tolerance: float,
    n_validation: int | None = None,
    min_windows: int = 0,
) -> Verdict:
    """Promote when the held-out loss is finite and within ``tolerance`` of the parent's,
    and the threshold was calibrated on at least ``min_windows`` held-out windows (fewer
    make it an extreme of a tiny sample: a first version calibrated on 4 windows flagged
    99 % of the readings it scored)."""
    if n_validation is not None and n_validation < min_windows:
        return Verdict(
            False, f"calibrated on {n_validation} held-out windows, fewer than {min_windows}"
        )
    if val_loss is None or not math.isfinite(val_loss):
        return Verdict(False, f"validation loss is {val_loss}")
    if parent is None or not math.isfinite(parent):
        return Verdict(True, f"no promoted model to compare with (val_loss {val_loss:.4g})")
    limit = parent * (1.0 + tolerance)
    rel = f"(promoted {parent:.4g} + {tolerance:.0%})"
    if val_loss <= limit:
        return Verdict(True, f"val_loss {val_loss:.4g} <= {limit:.4g} {rel}")
    return Verdict(False, f"val_loss {val_loss:.4g} > {limit:.4g} {rel}")


class StackedHeldOut:
    """Every device's held-out features in one array (rows in device order), with each row's
    device normaliser: one forward pass scores the fleet (rows are independent)."""

    def __init__(self, bundle: ModelBundle, held_out: Mapping[int, np.ndarray]) -> None:
        held = {int(m): f for m, f in held_out.items() if len(f)}
        self.ids = list(held)
        self.lengths = [len(f) for f in held.values()]
        self.feats = np.concatenate(list(held.values())) if held else np.zeros((0, N_FEATURES))
        norms = [bundle.norm_for(m) for m in self.ids]
        if norms:
            self.mean = np.repeat(np.stack([n.mean for n in norms]), self.lengths, axis=0)
            self.std = np.repeat(np.stack([n.std for n in norms]), self.lengths, axis=0)
        else:
            self.mean = self.std = np.zeros((0, N_FEATURES))

    def standardized(self) -> np.ndarray:
        return standardize_by(self.mean, self.std, self.feats)

    def per_device(self, rows: np.ndarray) -> dict[int, np.ndarray]:
        return dict(zip(self.ids, split_rows(rows, self.lengths), strict=True))


def validation_loss(
    bundle: ModelBundle, held_out: Mapping[int, np.ndarray], ref: Normalizer
) -> float:
    """Mean squared reconstruction error of held-out features in ``ref``'s units, so two
    models with different normalisers are compared fairly."""
    rows = StackedHeldOut(bundle, held_out)
    if not rows.ids:
        return float("nan")
    n_out = bundle.spec.n_outputs
    x, _ = model_xy(bundle.spec, rows.standardized())
    recon = forward_numpy(bundle.params, x, bundle.spec.activation)
    raw = recon * rows.std[:, :n_out] + rows.mean[:, :n_out]
    target = standardize(ref, rows.feats)[:, :n_out]
    err = np.square((raw - ref.mean[:n_out]) / ref.std[:n_out] - target).ravel()
    return float(np.mean(err)) if np.all(np.isfinite(err)) else float("inf")


def device_scores(bundle: ModelBundle, feats: np.ndarray, moteid: int) -> np.ndarray:
    """Scores of one device's raw window features under ``bundle`` (numpy)."""
    z = standardize(bundle.norm_for(moteid), feats)
    return combine(channel_errors(bundle.params, bundle.spec, z, bundle.residual_scale))


def calibrate_bundle(
    bundle: ModelBundle,
    held_out: Mapping[int, np.ndarray],
    quantile: float,
    pooling: str = "pooled",
    trim_ratio: float = 0.1,
) -> Thresholds:
    """Residual scales and thresholds of ``bundle`` from held-out normal features (in place).

    ``pooling`` (:func:`iot_fed.fl.tails.pooling_for` of the aggregation strategy) says how
    the devices' tails are combined: pooled for FedAvg, a median / trimmed mean of the
    per-device tails for the robust strategies, so failing devices cannot inflate them."""
    rows = StackedHeldOut(bundle, held_out)
    r = residuals(bundle.params, bundle.spec, rows.standardized())  # one forward pass
    per_device = split_rows(r, rows.lengths) if rows.ids else []
    rs = residual_scale(per_device, bundle.spec.n_residuals, quantile, pooling, trim_ratio)
    bundle.residual_scale = rs
    scores = rows.per_device(combine(residual_channel_errors(r, rs))) if rows.ids else {}
    thr = calibrate(scores, quantile, pooling=pooling, trim_ratio=trim_ratio)
    bundle.threshold, bundle.device_thresholds = thr.global_threshold, dict(thr.device)
    return thr


def robust_normalizer(stats: Sequence[SufficientStats]) -> Normalizer:
    """Median of the devices' means, and the median over devices of each one's mean
    square deviation from that centre: a minority of failing devices cannot move it."""
    means = np.stack([s.sum / s.count for s in stats])
    sq = np.stack([s.sumsq / s.count for s in stats])
    centre = np.median(means, axis=0)
    msd = np.maximum(sq - 2 * means * centre + centre**2, 0.0)
    return Normalizer(centre, np.maximum(np.sqrt(np.median(msd, axis=0)), FEATURE_STD_FLOOR))


def server_update(
    update: ClientUpdate,
    held_out: Mapping[int, np.ndarray],
    spec: ModelSpec,
    cfg: ServerConfig = ServerConfig(),
    *,
    parent: ModelBundle | None = None,
    prior_stats: SufficientStats | None = None,
    global_params: Params | None = None,
    seed: int = 0,
) -> ServerUpdate:
    """Aggregate, normalise, calibrate and judge one round's client updates.

    ``held_out``: per device, raw window features of held-out normal readings.
    ``prior_stats``: the statistics behind the parent's normaliser (the normaliser follows
    the fleet as data arrives). ``global_params``: the round's starting params (DP clipping).
    """
    params, info = cfg.aggregation.aggregate(
        update.params,
        update.n_samples,
        global_params=global_params
        if global_params is not None
        else (parent.params if parent else None),
        seed=seed,
    )
    parts = [s for s in update.stats if s.count] + ([prior_stats] if prior_stats else [])
    norm_stats = SufficientStats.total(parts) if parts else None
    if cfg.aggregation.strategy != "fedavg" and len(parts) > 2:
        norm = robust_normalizer([s for s in update.stats if s.count])
    else:
        norm = norm_stats.normalizer(FEATURE_STD_FLOOR) if norm_stats else update.norm
    # the normaliser each device trained with; a device's first one is kept from then on
    dev_norms = {**update.device_norms, **(parent.device_norms if parent is not None else {})}
    for m, st in zip(update.moteids, update.stats, strict=True):
        if int(m) not in dev_norms:
            dev_norms[int(m)] = device_normalizer(st, norm)
    bundle = ModelBundle(spec, params, norm, device_norms=dev_norms)
    held = {m: f for m, f in held_out.items() if len(f)}
    if held:
        agg = cfg.aggregation
        thr = calibrate_bundle(
            bundle, held, cfg.quantile, pooling_for(agg.strategy), agg.trim_ratio
        )
    else:  # no held-out data yet: calibrate on the training statistics' model scale
        thr = Thresholds(float("inf"), {}, cfg.quantile, float("nan"))
        bundle.residual_scale, bundle.threshold = np.ones(spec.n_residuals), float("inf")
    val = validation_loss(bundle, held, norm)
    parent_val = validation_loss(parent, held, norm) if parent else None
    n_val = int(sum(len(f) for f in held.values()))
    return ServerUpdate(
        bundle=bundle,
        norm_stats=norm_stats if norm_stats else SufficientStats.zeros(N_FEATURES),
        aggregation=info,
        thresholds=thr,
        val_loss=val,
        parent_val_loss=parent_val,
        n_validation=n_val,
        verdict=cfg.verdict(val, parent_val, n_val),
    )
