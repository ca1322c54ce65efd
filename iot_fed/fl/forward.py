"""The model's forward pass in numpy (no JAX): what scoring runs on Spark executors and
in the HTTP server. Same layers and activations as :mod:`iot_fed.fl.model`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from iot_fed.fl.spec import Params


def _gelu(x: np.ndarray) -> np.ndarray:  # tanh approximation, as jax.nn.gelu(approximate=True)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


_ACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "gelu": _gelu,
    "silu": lambda x: x * (0.5 * (1.0 + np.tanh(0.5 * x))),  # x * sigmoid(x), overflow-free
}


def dense(h: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``h @ w + b`` with one fixed summation order for every row, so a reading's score does
    not depend on which other rows share its batch: BLAS picks its kernel and blocking by
    the batch's shape (one row, a micro-batch, a whole series), and its sums then differ in
    the last bits between stream and batch scoring on some CPUs."""
    out = np.broadcast_to(b, (h.shape[0], w.shape[1])).copy()
    for j in range(w.shape[0]):
        out += h[:, j, None] * w[j]
    return out


def forward_numpy(params: Params, x: np.ndarray, activation: str) -> np.ndarray:
    """Reconstruction of standardised inputs ``(n, n_inputs) -> (n, n_outputs)``, float32;
    each row's result is the same whatever rows it is computed with."""
    act = _ACT[activation]
    h = np.asarray(x, np.float32)
    n_layers = len(params)
    for i in range(n_layers):
        layer = params[f"layer_{i}"]
        h = dense(h, np.asarray(layer["w"], np.float32), np.asarray(layer["b"], np.float32))
        if i < n_layers - 1:
            h = act(h)
    return h


def reconstruction_error_numpy(
    params: Params, x: np.ndarray, y: np.ndarray, activation: str
) -> np.ndarray:
    """Per-row mean squared error of the reconstruction of ``x`` against ``y``."""
    return np.mean(np.square(forward_numpy(params, x, activation) - y), axis=-1)
