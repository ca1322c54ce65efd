"""Fleet tail quantiles from per-device samples, plain or robust (numpy only).

The detector's residual scales and thresholds are extreme quantiles (about 1 - 1/2,800)
of held-out normal values, taken over the fleet. With FedAvg they are the empirical
quantile of all devices' values pooled (``pooling="pooled"``). With a robust strategy
(``"median"``, ``"trimmed_mean"``; Krum uses ``"median"``) a minority of failing devices,
whose values are far out, must not move them, as they cannot move the model parameters:

* :func:`trimmed_pool_quantile` (residual scales): per column, the ``f`` devices with the
  heaviest tail are left out and the rest are pooled. ``f = floor(trim_ratio * k)`` is
  the number of faulty devices the strategy tolerates, as Krum's ``f``. Pooling (not a
  median of device quantiles) keeps features whose tail is heavy on many healthy devices
  (a dark mote's light run length) at their fleet scale.
* :func:`combined_tail_quantile` (thresholds): each device's own quantile, extrapolated
  from an exponential tail (:func:`tail_quantile`: a few hundred readings cannot reach
  the target empirically), combined by the median / trimmed mean across devices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TAIL_LEVEL = 0.9
"""Values above a device's ``TAIL_LEVEL`` quantile fit its exponential tail."""
MIN_TAIL_ROWS = 20
"""A device with fewer rows does not take part in a robust combination."""
MIN_ROBUST_DEVICES = 5
"""With fewer devices (of ``MIN_TAIL_ROWS``) a robust tail is no estimate: they are pooled."""
POOLING = ("pooled", "median", "trimmed_mean")


def pooling_for(strategy: str) -> str:
    """The tail pooling that matches an aggregation strategy (Krum: the median)."""
    return {"fedavg": "pooled", "trimmed_mean": "trimmed_mean"}.get(strategy, "median")


def tail_quantile(x: np.ndarray, q: float, level: float = TAIL_LEVEL) -> np.ndarray:
    """Per column of ``x`` ``(n, d)`` (or ``(n,)``): the ``q`` quantile extrapolated from
    an exponential fit of the excesses over the ``level`` quantile ``u``:
    ``u + mean_excess * ln((1 - level) / (1 - q))``; the empirical one if ``q <= level``."""
    a = np.asarray(x, np.float64)
    if q <= level:
        return np.quantile(a, q, axis=0)
    u = np.quantile(a, level, axis=0)
    over = a > u
    n_over = over.sum(axis=0)
    beta = np.where(over, a - u, 0.0).sum(axis=0) / np.maximum(n_over, 1)
    return u + beta * np.log((1.0 - level) / (1.0 - q))


def _big(samples: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(s, np.float64) for s in samples if len(s) >= MIN_TAIL_ROWS]


def n_trimmed(k: int, trim_ratio: float) -> int:
    """How many of ``k`` devices a robust tail leaves out (at most ``(k - 1) // 2``)."""
    return min(int(np.floor(trim_ratio * k)), max((k - 1) // 2, 0))


def trimmed_pool_quantile(samples: Sequence[np.ndarray], q: float, trim_ratio: float) -> np.ndarray:
    """Per column, the empirical ``q`` quantile of the pooled samples of all devices but
    the ``n_trimmed`` with the largest :func:`tail_quantile` (see the module docstring)."""
    parts = [np.asarray(s, np.float64).reshape(len(s), -1) for s in samples if len(s)]
    if not parts:
        raise ValueError("no samples to take a quantile of")
    big = _big(parts)
    t = n_trimmed(len(big), trim_ratio) if len(big) >= MIN_ROBUST_DEVICES else 0
    if t == 0:
        return np.quantile(np.concatenate(parts), q, axis=0)
    tails = np.stack([tail_quantile(s, q) for s in big])  # (devices, columns)
    out = np.empty(tails.shape[1])
    for j in range(tails.shape[1]):
        keep = np.argsort(tails[:, j], kind="stable")[: len(big) - t]
        out[j] = np.quantile(np.concatenate([big[i][:, j] for i in keep]), q)
    return out


def combined_tail_quantile(
    samples: Sequence[np.ndarray], q: float, pooling: str = "median", trim_ratio: float = 0.1
) -> float:
    """The median (or trimmed mean) over devices of each one's :func:`tail_quantile` of
    a 1-d sample; the pooled empirical quantile for ``"pooled"`` or too few devices."""
    if pooling not in POOLING:
        raise ValueError(f"pooling must be one of {POOLING}, got {pooling!r}")
    parts = [np.asarray(s, np.float64).reshape(-1) for s in samples if len(s)]
    if not parts:
        raise ValueError("no samples to take a quantile of")
    big = _big(parts)
    if pooling == "pooled" or len(big) < MIN_ROBUST_DEVICES:
        return float(np.quantile(np.concatenate(parts), q))
    per = np.sort([float(tail_quantile(s, q)) for s in big])
    if pooling == "median":
        return float(np.median(per))
    t = n_trimmed(len(per), trim_ratio)
    return float(per[t : len(per) - t].mean())
