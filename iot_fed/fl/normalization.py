"""Federated-friendly feature normalisation from per-device sufficient statistics.

Each device reports only ``(count, sum, sum of squares)`` of its raw features; these add
up exactly, so the global mean/std equal those of the pooled data without ever pooling
readings. Accumulated in float64 to keep ``E[x^2] - E[x]^2`` accurate. Numpy-only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_MIN_STD = 1e-3
"""Floor for a feature's std (constant features would otherwise divide by zero)."""


@dataclass(frozen=True)
class SufficientStats:
    """Mergeable ``(count, sum, sum of squares)`` of an ``(n, d)`` feature matrix."""

    count: int
    sum: np.ndarray
    sumsq: np.ndarray

    @classmethod
    def zeros(cls, n_features: int) -> SufficientStats:
        return cls(0, np.zeros(n_features), np.zeros(n_features))

    @classmethod
    def from_array(cls, x: np.ndarray) -> SufficientStats:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected an (n, d) array, got shape {x.shape}")
        return cls(int(x.shape[0]), x.sum(axis=0), np.square(x).sum(axis=0))

    def merge(self, other: SufficientStats) -> SufficientStats:
        if self.sum.shape != other.sum.shape:
            raise ValueError(f"feature count mismatch: {self.sum.shape} vs {other.sum.shape}")
        return SufficientStats(
            self.count + other.count, self.sum + other.sum, self.sumsq + other.sumsq
        )

    __add__ = merge

    @classmethod
    def total(cls, stats: Iterable[SufficientStats]) -> SufficientStats:
        """Merge many devices' statistics (raises on an empty iterable)."""
        it = iter(stats)
        try:
            acc = next(it)
        except StopIteration:
            raise ValueError("no statistics to merge") from None
        for s in it:
            acc = acc.merge(s)
        return acc

    def mean_std(
        self, min_std: float | np.ndarray = DEFAULT_MIN_STD
    ) -> tuple[np.ndarray, np.ndarray]:
        """Population mean and std (std floored at ``min_std``, a scalar or per feature)."""
        if self.count <= 0:
            raise ValueError("cannot normalise from zero samples")
        mean = self.sum / self.count
        var = np.maximum(self.sumsq / self.count - np.square(mean), 0.0)
        return mean, np.maximum(np.sqrt(var), min_std)

    def normalizer(self, min_std: float | np.ndarray = DEFAULT_MIN_STD) -> Normalizer:
        mean, std = self.mean_std(min_std)
        return Normalizer(mean=mean, std=std)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sum": self.sum.tolist(), "sumsq": self.sumsq.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SufficientStats:
        return cls(
            int(d["count"]), np.asarray(d["sum"], np.float64), np.asarray(d["sumsq"], np.float64)
        )


@dataclass(frozen=True)
class Normalizer:
    """Per-feature standardisation ``(x - mean) / std``."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", np.asarray(self.mean, np.float64))
        object.__setattr__(self, "std", np.asarray(self.std, np.float64))
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ValueError("mean and std must be 1-d arrays of equal length")
        if np.any(self.std <= 0) or not np.all(np.isfinite(self.std)):
            raise ValueError("std must be finite and > 0")

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardise the leading ``k`` columns of ``x`` (``k = x.shape[-1]``); float32."""
        k = np.shape(x)[-1]
        return ((np.asarray(x, np.float64) - self.mean[:k]) / self.std[:k]).astype(np.float32)

    def invert(self, z: np.ndarray) -> np.ndarray:
        """Back to raw units (again for the leading ``k`` columns); float32."""
        k = np.shape(z)[-1]
        return (np.asarray(z, np.float64) * self.std[:k] + self.mean[:k]).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        return cls(mean=np.asarray(d["mean"]), std=np.asarray(d["std"]))


def make_xy(
    features: np.ndarray, norm: Normalizer, n_outputs: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs and reconstruction targets: standardised features and their first channels."""
    x = norm.apply(features)
    return x, np.ascontiguousarray(x[:, :n_outputs])
