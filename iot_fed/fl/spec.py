"""The model's shape: :class:`ModelSpec` and the layer layout of a params pytree.

Numpy-only (no JAX import) so Spark executors and MongoDB code can use it.

A params pytree is a plain ``dict``: ``{"layer_0": {"w": (in, out), "b": (out,)}, ...}``.
A *stacked* pytree has the same keys with a leading device axis on every leaf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from iot_fed.fl.window_features import (
    N_CHANNEL_FEATURES,
    N_DIRECT_FEATURES,
    N_MODEL_INPUTS,
    WindowConfig,
)

Params = dict[str, dict[str, Any]]
"""A params pytree: ``{"layer_<i>": {"w": array, "b": array}}``."""

ACTIVATIONS = ("relu", "tanh", "gelu", "silu")
KIND = "window_ae/3"
"""The model family and feature-set version (2: linear run length; 3: ``shift`` and
``bend``, scored directly); a bundle of another kind is not loadable."""


@dataclass(frozen=True)
class ModelSpec:
    """Feedforward autoencoder over window features ``n_inputs -> hidden... -> n_outputs``
    (see :mod:`iot_fed.fl.window_features`; ``window``/``spread_k`` fix the context; the
    directly scored features are not inputs, :attr:`n_features` counts them too)."""

    hidden: tuple[int, ...] = (32, 16)
    activation: str = "relu"
    n_inputs: int = N_MODEL_INPUTS
    n_outputs: int = N_CHANNEL_FEATURES
    window: int = 32
    spread_k: int = 8
    kind: str = KIND

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if any(h < 1 for h in self.hidden) or self.n_inputs < 1 or self.n_outputs < 1:
            raise ValueError(f"layer sizes must be >= 1: {self}")
        if self.kind != KIND:
            raise ValueError(f"model kind {self.kind!r} is not supported (this code: {KIND!r})")
        if self.n_outputs > self.n_inputs:
            raise ValueError(f"n_outputs must be <= n_inputs: {self}")
        self.window_config()  # validates window / spread_k

    def window_config(self) -> WindowConfig:
        return WindowConfig(window=self.window, spread_k=self.spread_k)

    @property
    def sizes(self) -> tuple[int, ...]:
        """All layer widths, inputs first: ``(n_inputs, *hidden, n_outputs)``."""
        return (self.n_inputs, *self.hidden, self.n_outputs)

    @property
    def n_features(self) -> int:
        """Window features per reading (the normaliser's width): the model's inputs, then
        the directly scored features, which are not inputs."""
        return self.n_inputs + N_DIRECT_FEATURES

    @property
    def n_residuals(self) -> int:
        """Residuals per reading: the reconstructed targets, then the directly scored
        features (:func:`iot_fed.fl.detector.residuals`)."""
        return self.n_outputs + N_DIRECT_FEATURES

    @property
    def n_layers(self) -> int:
        return len(self.hidden) + 1

    def layer_names(self) -> list[str]:
        return [f"layer_{i}" for i in range(self.n_layers)]

    def param_shapes(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """Expected shape of every leaf of a (single-device) params pytree."""
        s = self.sizes
        return {
            name: {"w": (s[i], s[i + 1]), "b": (s[i + 1],)}
            for i, name in enumerate(self.layer_names())
        }

    def n_params(self) -> int:
        return sum(
            int(np.prod(shp)) for layer in self.param_shapes().values() for shp in layer.values()
        )

    def flops_per_sample(self) -> int:
        """Multiply-adds x 2 of one forward pass (``2 * in * out`` per layer)."""
        s = self.sizes
        return sum(2 * s[i] * s[i + 1] for i in range(len(s) - 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "hidden": list(self.hidden),
            "activation": self.activation,
            "n_inputs": self.n_inputs,
            "n_outputs": self.n_outputs,
            "window": self.window,
            "spread_k": self.spread_k,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        if d.get("kind") != KIND:
            raise ValueError(
                f"model kind {d.get('kind')!r} is not {KIND!r} (a per-reading model from an "
                "older version?); retrain to get a compatible model"
            )
        return cls(
            window=int(d["window"]),
            spread_k=int(d["spread_k"]),
            hidden=tuple(d["hidden"]),
            activation=str(d["activation"]),
            n_inputs=int(d["n_inputs"]),
            n_outputs=int(d["n_outputs"]),
        )

    @classmethod
    def from_settings(cls, settings: Any) -> ModelSpec:
        """Build from :class:`iot_fed.config.Settings` (``model_hidden``, ``model_activation``)."""
        return cls(
            hidden=tuple(settings.model_hidden),
            activation=settings.model_activation,
            window=getattr(settings, "model_window", 32),
        )
