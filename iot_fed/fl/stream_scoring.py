"""Score one device's readings in a stream or a batch, with the same result (numpy only).

``score_device(bundle, history, moteid=..., epochs=..., ts_ms=..., values=...)`` scores
new readings of one device (ascending, all newer than ``history``) and returns the
:class:`ScoredReadings` and the new :class:`DeviceHistory` (the last ``window - 1``
finite readings: the context the next call needs). Scoring a series in one call gives
exactly the same result as scoring it chunk by chunk while threading the history.

* A reading with a NaN / inf / missing channel is a *data fault*: score NaN, flagged,
  reason ``"data_fault:<channel> is nan"``; it never enters the history, so the readings
  after it are scored on clean context.
* A reading with fewer than ``window - 1`` readings of context (a new device, or after a
  gap longer than the window's reset gap) is scored with the global threshold and reason
  ``"fallback:short_history"``. A device with no calibrated threshold of its own is
  scored with the global threshold too (reason ``"fallback:no_device_threshold"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from iot_fed.fl.detector import channel_errors, standardize
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.window_features import CHANNELS, window_features

__all__ = ["CHANNELS", "DeviceHistory", "ScoredReadings", "score_device"]


@dataclass(frozen=True)
class DeviceHistory:
    """The most recent readings of one device that the model's window needs (its context)."""

    epochs: tuple[int, ...]
    ts_ms: tuple[int, ...]
    values: tuple[tuple[float, float, float, float], ...]

    def to_json(self) -> str:
        return json.dumps(
            {"epochs": list(self.epochs), "ts_ms": list(self.ts_ms), "values": self.values}
        )

    @classmethod
    def from_json(cls, text: str) -> DeviceHistory:
        """Parse :meth:`to_json` output; anything else raises ``ValueError`` saying why."""
        try:
            d = json.loads(text)
            hist = cls(
                tuple(int(e) for e in d["epochs"]),
                tuple(int(t) for t in d["ts_ms"]),
                tuple(tuple(float(v) for v in row) for row in d["values"]),  # type: ignore[misc]
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"not a DeviceHistory: {exc!r}") from None
        if not len(hist.epochs) == len(hist.ts_ms) == len(hist.values):
            raise ValueError("not a DeviceHistory: epochs, ts_ms and values differ in length")
        if any(len(row) != 4 for row in hist.values):
            raise ValueError("not a DeviceHistory: each values row needs 4 channels")
        return hist

    @property
    def last_epoch(self) -> int | None:
        """The newest epoch in the context, None when empty."""
        return self.epochs[-1] if self.epochs else None

    @classmethod
    def empty(cls) -> DeviceHistory:
        return cls((), (), ())


@dataclass(frozen=True)
class ScoredReadings:
    score: np.ndarray
    """(n,) float64; NaN for a data-fault reading."""
    channel_errors: np.ndarray
    """(n, 4) float64, per-channel contribution, CHANNELS order (NaN on a data fault)."""
    flag: np.ndarray
    """(n,) bool: anomaly (score > threshold) OR data fault."""
    threshold: np.ndarray
    """(n,) float64: the threshold applied to each reading."""
    reason: tuple[str | None, ...]


def _fault_reason(row: np.ndarray) -> str | None:
    for c, v in zip(CHANNELS, row, strict=True):
        if not np.isfinite(v):
            return f"data_fault:{c} is {'nan' if np.isnan(v) else 'inf'}"
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
    """Score one device's new readings; see the module docstring."""
    if bundle.norm is None or bundle.threshold is None:
        raise ValueError("bundle lacks a normaliser or a global threshold: not calibrated")
    ep = np.asarray(epochs, np.int64).reshape(-1)
    ts = np.asarray(ts_ms, np.int64).reshape(-1)
    x = np.asarray(values, np.float64).reshape(-1, len(CHANNELS))
    n = ep.shape[0]
    if ts.shape[0] != n or x.shape[0] != n:
        raise ValueError(f"{n} epochs, {ts.shape[0]} timestamps, {x.shape[0]} value rows")
    ok = np.isfinite(x).all(axis=1)
    h_ep = np.asarray(history.epochs, np.int64)
    h_ts = np.asarray(history.ts_ms, np.int64)
    h_x = np.asarray(history.values, np.float64).reshape(-1, len(CHANNELS))
    all_ts = np.concatenate([h_ts, ts[ok]])
    all_x = np.concatenate([h_x, x[ok]])
    feats, n_ctx = window_features(all_ts, all_x, int(ok.sum()), bundle.spec.window_config())
    err = channel_errors(
        bundle.params,
        bundle.spec,
        standardize(bundle.norm_for(moteid), feats),
        bundle.residual_scale,
    )
    dev_thr, no_own = bundle.threshold_for(moteid)
    full = n_ctx >= bundle.spec.window - 1
    score = np.full(n, np.nan)
    errors = np.full((n, len(CHANNELS)), np.nan)
    thr = np.full(n, float(bundle.threshold))
    score[ok] = err.max(axis=1) if err.size else np.zeros(0)
    errors[ok] = err
    thr_ok = np.where(full, dev_thr, float(bundle.threshold))
    thr[ok] = thr_ok
    flag = ~ok.copy()
    flag[ok] = score[ok] > thr_ok
    reason: list[str | None] = [None] * n
    j = 0
    for i in range(n):
        if not ok[i]:
            reason[i] = _fault_reason(x[i])
            continue
        if not full[j]:
            reason[i] = "fallback:short_history"
        elif no_own:
            reason[i] = "fallback:no_device_threshold"
        j += 1
    keep = bundle.spec.window - 1
    new_hist = DeviceHistory(
        tuple(int(e) for e in np.concatenate([h_ep, ep[ok]])[-keep:]),
        tuple(int(t) for t in all_ts[-keep:]),
        tuple(tuple(float(v) for v in row) for row in all_x[-keep:]),  # type: ignore[misc]
    )
    return ScoredReadings(score, errors, flag, thr, tuple(reason)), new_hist
