"""The temporal detector's numpy side: window features -> autoencoder residuals -> score.

Why this model
--------------
The detector is an MLP autoencoder over the *window features* of
:mod:`iot_fed.fl.window_features` (per channel: level, change since the previous reading,
deviation from the window median, rolling spread, run length of identical values, trend
across the window, level shift against the window's trend, change of slope; plus gap and
time of day). Each fault type moves at least one of them far from normal: spikes and bias
onsets ``diff``/``dev``, small offsets ``shift``, stuck-at ``run``/``spread``, noise
``spread``/``diff``, drift ``trend``/``bend``, dying batteries ``level`` (and the
temperature/humidity/voltage relation). The autoencoder learns the joint normal
distribution (diurnal levels, how temperature and humidity move together, which channels
are often flat, e.g. light at night), so a reading is judged against what is normal for
*that* combination, not per feature alone; and it is tiny, averages well and trains for
all devices in one ``jit(vmap)``. The benchmark (``bench/bench_detection.py``) compares it
with rolling z-score/MAD, River and PyOD; the per-reading MLP of earlier versions could
not see stuck-at, drift or noise.

Score
-----
Features are standardised with the device's own normaliser (its sufficient statistics; the
fleet's is the fallback). The residuals are ``recon - z`` of the ``n_outputs``
reconstructed channel features, then ``-z`` of the directly scored ones (``shift``,
``bend``: about 0 on normal readings, so their standardised value is the surprise; the
autoencoder neither reconstructs nor sees them). Each is divided by ``residual_scale``:
its target quantile of absolute values on held-out normal readings, fleet-wide, so every
feature is on the same "how rare" scale. A channel's error (``channel_errors``, CHANNELS
order) is the max of its features' squared standardised residuals, and the reading's score
is the **max over channels**: one broken feature of one channel is enough, and a feature
with heavy normal tails (light switching, heating steps) does not hide the others.
(Averaging instead of the max diluted the stuck-at signal, which lives in one feature,
``run``, by five.)

Thresholds
----------
Per device, calibrated on its held-out normal readings at the false-alarm target
(``false_alarms_per_device_day / readings_per_device_day``): a device's scale is the
median of its held-out scores, the fleet's scale-free quantile ``Q`` at the target is taken
over all devices' ``score / scale`` (many readings, so an extreme quantile is stable), and
the device threshold is ``Q * scale`` (every threshold raised by :data:`THRESHOLD_RTOL`
against float rounding). The global threshold (fallback for a device with
no calibration yet, or with a short history) is the target quantile of all held-out scores.

Under a robust aggregation strategy the fleet-wide quantiles (residual scales, ``Q``, the
global threshold) are robust too (:mod:`iot_fed.fl.tails`): failing devices' held-out
readings would otherwise inflate them and blind the detector on every healthy device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from iot_fed.fl.forward import forward_numpy
from iot_fed.fl.normalization import Normalizer
from iot_fed.fl.spec import ModelSpec, Params
from iot_fed.fl.tails import combined_tail_quantile, trimmed_pool_quantile
from iot_fed.fl.window_features import DIRECT, DIRECT_COLUMNS, PER_CHANNEL
from iot_fed.readings import CHANNELS

N_CHANNELS = len(CHANNELS)
MIN_RESIDUAL_SCALE = 1e-3
THRESHOLD_FLOOR = 1e-9
THRESHOLD_RTOL = 1e-12
"""Thresholds are raised by this relative margin: a device's threshold is the scale-free
quantile times its scale, which can round one ulp below the very held-out score it came
from, and ``score > threshold`` then flagged held-out readings tied at that quantile (a
fresh clone's promotion-replay test refused its first version on 9 such readings)."""


def standardize(norm: Normalizer, feats: np.ndarray) -> np.ndarray:
    """``(f - mean) / std`` as float32; undefined (NaN) features become 0 (the mean)."""
    return standardize_by(norm.mean, norm.std, feats)


def standardize_by(mean: np.ndarray, std: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """:func:`standardize` with ``mean`` and ``std`` per feature, or per row and feature
    (rows of several devices, each with its own normaliser)."""
    z = (np.asarray(feats, np.float64) - mean) / std
    return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def model_xy(spec: ModelSpec, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The autoencoder's inputs and targets of standardised features ``(n, N_FEATURES)``:
    every feature but the directly scored ones (last), and the channel features (first)."""
    return np.ascontiguousarray(z[:, : spec.n_inputs]), np.ascontiguousarray(z[:, : spec.n_outputs])


def residuals(params: Params, spec: ModelSpec, z: np.ndarray) -> np.ndarray:
    """Residuals ``(n, n_residuals)`` of standardised features (float64): the
    reconstruction's ``recon - z`` of the ``n_outputs`` targets, then ``0 - z`` of the
    directly scored features (:data:`~iot_fed.fl.window_features.DIRECT`, expected 0)."""
    recon = forward_numpy(params, z[:, : spec.n_inputs], spec.activation).astype(np.float64)
    targets = np.asarray(z[:, : spec.n_outputs], np.float64)
    return np.concatenate([recon - targets, -np.asarray(z[:, DIRECT_COLUMNS], np.float64)], 1)


def channel_errors(
    params: Params,
    spec: ModelSpec,
    z: np.ndarray,
    residual_scale: np.ndarray | None = None,
) -> np.ndarray:
    """Per-channel max squared standardised residual ``(n, 4)`` of standardised inputs."""
    return residual_channel_errors(residuals(params, spec, z), residual_scale)


def residual_channel_errors(r: np.ndarray, residual_scale: np.ndarray | None) -> np.ndarray:
    """:func:`channel_errors` of residuals already computed."""
    if residual_scale is not None:
        r = r / residual_scale
    sq, k, d = np.square(r), N_CHANNELS * len(PER_CHANNEL), N_CHANNELS * len(DIRECT)
    rebuilt = sq[:, :k].reshape(len(r), N_CHANNELS, -1).max(axis=2)
    direct = sq[:, k : k + d].reshape(len(r), N_CHANNELS, -1).max(axis=2)
    return np.maximum(rebuilt, direct)


def split_rows(rows: np.ndarray, lengths: Sequence[int]) -> list[np.ndarray]:
    """``rows`` of several devices stacked in order, back into one array per device."""
    return np.split(rows, np.cumsum(lengths)[:-1])


def combine(errors: np.ndarray) -> np.ndarray:
    """A reading's score from its channel errors: the max over channels."""
    return errors.max(axis=1) if errors.size else np.zeros(errors.shape[0])


def residual_scale(
    res: Sequence[np.ndarray],
    n_residuals: int,
    quantile: float,
    pooling: str = "pooled",
    trim_ratio: float = 0.1,
) -> np.ndarray:
    """Each residual's ``quantile`` of absolute values (:func:`residuals`) over held-out
    normal inputs (fleet-wide, floored): a standardised residual of 1 is as rare as the
    target. ``res`` per device; a robust ``pooling`` leaves out the heaviest-tailed
    devices (:func:`iot_fed.fl.tails.trimmed_pool_quantile`)."""
    res = [np.abs(r) for r in res if len(r)]
    if not res:
        return np.ones(n_residuals)
    trim = 0.0 if pooling == "pooled" else trim_ratio
    return np.maximum(trimmed_pool_quantile(res, quantile, trim), MIN_RESIDUAL_SCALE)


def target_quantile(false_alarms_per_day: float, readings_per_day: int) -> float:
    """The score quantile that leaves ``false_alarms_per_day`` of a day's readings above."""
    q = 1.0 - float(false_alarms_per_day) / float(readings_per_day)
    if not 0.0 < q < 1.0:
        raise ValueError("false-alarm target must be below one alarm per reading")
    return q


@dataclass(frozen=True)
class Thresholds:
    """The global threshold and per-device ones (devices with held-out readings)."""

    global_threshold: float
    device: dict[int, float]
    quantile: float
    scale_free_quantile: float


def calibrate(
    scores: Mapping[int, np.ndarray],
    quantile: float,
    min_readings: int = 20,
    pooling: str = "pooled",
    trim_ratio: float = 0.1,
) -> Thresholds:
    """Thresholds from held-out normal scores per device (see the module docstring).

    The fleet quantiles (global threshold, ``Q``) are pooled (empirical), or with a robust
    ``pooling`` the median / trimmed mean of the devices' own tails
    (:func:`iot_fed.fl.tails.combined_tail_quantile`), taken on ``sqrt(score)`` (a
    residual's scale, whose tail is near exponential) and squared back."""
    good = {m: s[np.isfinite(s)] for m, s in scores.items()}
    if not any(s.size for s in good.values()):
        raise ValueError("no held-out scores to calibrate thresholds on")

    def fq(xs: list[np.ndarray]) -> float:
        if pooling == "pooled":
            return float(np.quantile(np.concatenate(xs), quantile))
        return combined_tail_quantile([np.sqrt(x) for x in xs], quantile, pooling, trim_ratio) ** 2

    up = 1.0 + THRESHOLD_RTOL
    glob = max(fq(list(good.values())), THRESHOLD_FLOOR) * up
    scale = {
        m: max(float(np.median(s)), THRESHOLD_FLOOR)
        for m, s in good.items()
        if s.size >= min_readings
    }
    if not scale:
        return Thresholds(glob, {}, quantile, float("nan"))
    # devices whose scale is far off the fleet's (failing motes) do not set the fleet's Q
    typical = float(np.median(list(scale.values())))
    pool = [m for m in scale if scale[m] <= 10.0 * typical] or list(scale)
    qf = fq([good[m] / scale[m] for m in pool])
    return Thresholds(glob, {int(m): qf * sc * up for m, sc in scale.items()}, quantile, qf)
