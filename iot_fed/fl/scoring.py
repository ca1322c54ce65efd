"""Anomaly scoring with numpy only (importable without JAX, e.g. on Spark executors).

``score_batch`` runs the same forward pass as :mod:`iot_fed.fl.model` on a whole batch
(vectorised, no per-row calls): features -> standardise -> MLP -> mean squared error of
the 4 reconstructed sensor channels in standardised units. ``flag`` compares to a
threshold; ``calibrate_threshold`` picks a quantile of training scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from iot_fed.fl.features import features_from_columns
from iot_fed.fl.normalization import Normalizer
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.spec import ModelSpec, Params


def _gelu(x: np.ndarray) -> np.ndarray:  # tanh approximation, as jax.nn.gelu(approximate=True)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


_ACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "gelu": _gelu,
    "silu": lambda x: x * (0.5 * (1.0 + np.tanh(0.5 * x))),  # x * sigmoid(x), overflow-free
}


def forward_numpy(params: Params, x: np.ndarray, activation: str) -> np.ndarray:
    """Reconstruction of standardised inputs ``(n, n_inputs) -> (n, n_outputs)``, float32."""
    act = _ACT[activation]
    h = np.asarray(x, np.float32)
    n_layers = len(params)
    for i in range(n_layers):
        layer = params[f"layer_{i}"]
        h = h @ np.asarray(layer["w"], np.float32) + np.asarray(layer["b"], np.float32)
        if i < n_layers - 1:
            h = act(h)
    return h


def reconstruction_error_numpy(
    params: Params, x: np.ndarray, y: np.ndarray, activation: str
) -> np.ndarray:
    return np.mean(np.square(forward_numpy(params, x, activation) - y), axis=-1)


def score_batch(
    model: ModelBundle | Params,
    features: np.ndarray,
    *,
    spec: ModelSpec | None = None,
    norm: Normalizer | None = None,
) -> np.ndarray:
    """Anomaly scores ``(n,)`` for raw features ``(n, 6)`` (see ``features_from_columns``).

    ``model`` is a :class:`ModelBundle` (its spec and normalisation are used) or a params
    pytree with ``spec``; without a normaliser the features are taken as standardised.
    """
    if isinstance(model, ModelBundle):
        params, spec, norm = model.params, model.spec, norm or model.norm
    else:
        params = model
        if spec is None:
            raise ValueError("score_batch with a params pytree needs spec=")
    x = np.asarray(features, np.float32)
    if x.ndim != 2 or x.shape[1] != spec.n_inputs:
        raise ValueError(f"expected features of shape (n, {spec.n_inputs}), got {x.shape}")
    if norm is not None:
        x = norm.apply(x)
    return reconstruction_error_numpy(params, x, x[:, : spec.n_outputs], spec.activation)


def score_readings(
    bundle: ModelBundle, temperature: Any, humidity: Any, light: Any, voltage: Any, ts: Any
) -> np.ndarray:
    """Columns in, scores out: ``features_from_columns`` + :func:`score_batch`."""
    return score_batch(bundle, features_from_columns(temperature, humidity, light, voltage, ts))


def flag(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean anomaly flags: score above threshold; non-finite scores are flagged too."""
    return ~(np.asarray(scores) <= threshold)


def calibrate_threshold(scores: np.ndarray, quantile: float = 0.99) -> float:
    """``quantile`` of the finite scores (linear interpolation, as ``np.quantile``)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError("quantile must be in (0, 1)")
    s = np.asarray(scores, np.float64).reshape(-1)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("no finite scores to calibrate a threshold on")
    return float(np.quantile(s, quantile))


def combine_thresholds(thresholds: Any, weights: Any, how: str = "weighted_mean") -> float:
    """Global threshold from per-device thresholds (only scalars leave devices).

    ``weighted_mean`` (by sample count, default), ``median`` or ``max`` (most
    conservative); devices with weight 0 or a NaN threshold are ignored.
    """
    t = np.asarray(thresholds, np.float64).reshape(-1)
    w = np.asarray(weights, np.float64).reshape(-1)
    ok = np.isfinite(t) & (w > 0)
    if not ok.any():
        raise ValueError("no device with data and a finite threshold")
    t, w = t[ok], w[ok]
    if how == "weighted_mean":
        return float(np.sum(t * w) / np.sum(w))
    if how == "median":
        return float(np.median(t))
    if how == "max":
        return float(np.max(t))
    raise ValueError(f"how must be weighted_mean, median or max, got {how!r}")
