"""Numpy helpers for params pytrees (``{"layer_i": {"w", "b"}}``), single or stacked.

Numpy-only. Leaves are visited in sorted key order, so flatten/unflatten agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from iot_fed.fl.spec import Params

Layout = list[tuple[str, str, tuple[int, ...]]]
"""``(layer, leaf, per-device shape)`` of every leaf, in flattening order."""


def leaf_items(params: Params) -> list[tuple[str, str, np.ndarray]]:
    return [(k, m, np.asarray(params[k][m])) for k in sorted(params) for m in sorted(params[k])]


def to_numpy(params: Params, dtype: type | None = None) -> Params:
    return {k: {m: np.asarray(v, dtype) for m, v in layer.items()} for k, layer in params.items()}


def stack_params(trees: Sequence[Params]) -> Params:
    """List of single-device pytrees -> one stacked pytree (leading device axis)."""
    if not trees:
        raise ValueError("nothing to stack")
    return {
        k: {m: np.stack([np.asarray(t[k][m]) for t in trees]) for m in layer}
        for k, layer in trees[0].items()
    }


def unstack_params(stacked: Params) -> list[Params]:
    d = n_stacked(stacked)
    return [
        {k: {m: v[i] for m, v in layer.items()} for k, layer in stacked.items()} for i in range(d)
    ]


def n_stacked(stacked: Params) -> int:
    sizes = {v.shape[0] for _, _, v in leaf_items(stacked)}
    if len(sizes) != 1:
        raise ValueError(f"leaves disagree on the device axis: {sorted(sizes)}")
    return sizes.pop()


def flatten_stacked(stacked: Params) -> tuple[np.ndarray, Layout]:
    """Stacked pytree -> ``(devices, n_params)`` float32 matrix and its layout."""
    items = leaf_items(stacked)
    d = n_stacked(stacked)
    layout = [(k, m, v.shape[1:]) for k, m, v in items]
    mat = np.concatenate([np.asarray(v, np.float32).reshape(d, -1) for _, _, v in items], axis=1)
    return mat, layout


def flatten_single(params: Params) -> tuple[np.ndarray, Layout]:
    items = leaf_items(params)
    layout = [(k, m, v.shape) for k, m, v in items]
    return np.concatenate([np.asarray(v, np.float32).reshape(-1) for _, _, v in items]), layout


def unflatten(vec: np.ndarray, layout: Layout) -> Params:
    """``(n_params,)`` vector (or ``(devices, n_params)`` matrix) -> pytree."""
    out: Params = {}
    off = 0
    lead = vec.shape[:-1]
    for k, m, shape in layout:
        size = int(np.prod(shape))
        out.setdefault(k, {})[m] = vec[..., off : off + size].reshape(*lead, *shape)
        off += size
    if off != vec.shape[-1]:
        raise ValueError(f"layout has {off} values, vector has {vec.shape[-1]}")
    return out
