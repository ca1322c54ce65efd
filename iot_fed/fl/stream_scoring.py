"""Scoring of one device's readings with its recent history (numpy only, no JAX).

PROVISIONAL (branch i11): the contract of CONTRACTS.md section 1 on top of today's
per-reading model (:mod:`iot_fed.fl.scoring`). Branch i10 replaces this file with the
temporal model; callers rely only on the names and signatures below.

Here a reading's score does not depend on its history (the per-reading model needs no
context); the history still keeps the last :data:`WINDOW` valid readings so that the
stateful stream and the API thread it exactly as the temporal model will need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from iot_fed.fl.features import features_from_columns
from iot_fed.fl.scoring import forward_numpy
from iot_fed.fl.serialization import ModelBundle

CHANNELS = ("temperature", "humidity", "light", "voltage")
WINDOW = 8


@dataclass(frozen=True)
class DeviceHistory:
    """The most recent readings of one device that the model's window needs (its context)."""

    epochs: tuple[int, ...]  # ascending
    ts_ms: tuple[int, ...]  # reading time, ms since epoch
    values: tuple[tuple[float, float, float, float], ...]  # CHANNELS order

    def to_json(self) -> str:
        return json.dumps(
            {"epochs": list(self.epochs), "ts_ms": list(self.ts_ms), "values": self.values}
        )

    @classmethod
    def from_json(cls, text: str) -> DeviceHistory:
        d = json.loads(text)
        return cls(
            tuple(int(e) for e in d["epochs"]),
            tuple(int(t) for t in d["ts_ms"]),
            tuple(tuple(float(x) for x in v) for v in d["values"]),  # type: ignore[misc]
        )

    @classmethod
    def empty(cls) -> DeviceHistory:
        return cls((), (), ())

    @property
    def last_epoch(self) -> int | None:
        return self.epochs[-1] if self.epochs else None


@dataclass(frozen=True)
class ScoredReadings:
    score: np.ndarray  # (n,) float64; NaN for a data-fault reading
    channel_errors: np.ndarray  # (n, 4) float64, per-channel contribution, CHANNELS order
    flag: np.ndarray  # (n,) bool: anomaly (score > threshold) OR data fault
    threshold: np.ndarray  # (n,) float64: the threshold applied to each reading
    reason: tuple[str | None, ...]  # None normally; e.g. "data_fault:humidity is nan"


def device_threshold(bundle: ModelBundle, moteid: int) -> float:
    """Per-device threshold from ``bundle.meta["device_thresholds"]``, else the global one."""
    per_device = (bundle.meta or {}).get("device_thresholds") or {}
    t = per_device.get(str(moteid))
    if t is None:
        t = bundle.threshold
    if t is None:
        raise ValueError("model bundle has no anomaly threshold")
    return float(t)


def _fault_reason(row: np.ndarray) -> str | None:
    for name, v in zip(CHANNELS, row, strict=True):
        if not np.isfinite(v):
            return f"data_fault:{name} is {'nan' if np.isnan(v) else 'inf'}"
    return None


def score_device(
    bundle: ModelBundle,
    history: DeviceHistory,
    *,
    moteid: int,
    epochs: np.ndarray,
    ts_ms: np.ndarray,
    values: np.ndarray,
) -> tuple[ScoredReadings, DeviceHistory]:
    """Score one device's readings (ascending epochs, all newer than ``history``)."""
    epochs = np.asarray(epochs, np.int64).reshape(-1)
    ts_ms = np.asarray(ts_ms, np.int64).reshape(-1)
    values = np.asarray(values, np.float64).reshape(-1, len(CHANNELS))
    n = epochs.shape[0]
    if ts_ms.shape[0] != n or values.shape[0] != n:
        raise ValueError("epochs, ts_ms and values must have the same length")
    if n > 1 and np.any(np.diff(epochs) <= 0):
        raise ValueError("epochs must be strictly ascending")
    if n and history.last_epoch is not None and epochs[0] <= history.last_epoch:
        raise ValueError(f"epoch {int(epochs[0])} is not newer than the history")
    thr = device_threshold(bundle, moteid)
    reasons = [_fault_reason(v) for v in values]
    ok = np.array([r is None for r in reasons], bool)
    score = np.full(n, np.nan)
    errors = np.full((n, len(CHANNELS)), np.nan)
    if ok.any():
        v = values[ok]
        x = features_from_columns(v[:, 0], v[:, 1], v[:, 2], v[:, 3], ts_ms[ok] / 1000.0)
        if bundle.norm is not None:
            x = bundle.norm.apply(x)
        recon = forward_numpy(bundle.params, x, bundle.spec.activation)
        k = bundle.spec.n_outputs
        sq = np.square(recon - x[:, :k]).astype(np.float64) / k
        errors[ok] = sq[:, : len(CHANNELS)]
        score[ok] = np.float32(np.mean(np.square(recon - x[:, :k]), axis=-1))
    flags = ~ok | (score > thr)
    keep = np.flatnonzero(ok)
    new = DeviceHistory(
        (history.epochs + tuple(int(e) for e in epochs[keep]))[-WINDOW:],
        (history.ts_ms + tuple(int(t) for t in ts_ms[keep]))[-WINDOW:],
        (history.values + tuple(tuple(float(x) for x in values[i]) for i in keep))[-WINDOW:],  # type: ignore[operator]
    )
    return ScoredReadings(score, errors, flags, np.full(n, thr), tuple(reasons)), new
