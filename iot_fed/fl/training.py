"""Local training of many devices as ONE jitted, vmapped JAX computation.

``train_devices`` pads every device's ``(X, Y)`` to a common, *bucketed* shape
``(devices, rows, features)`` and runs ``jax.jit(jax.vmap(train_one))`` over the device
axis, where ``train_one`` is a ``lax.scan`` over mini-batch steps (all local epochs):

* ragged data: valid rows come first; each epoch shuffles the valid rows and cuts
  ``rows / batch`` batches with a mask. The shuffle is a counter-based hash of
  ``(seed, device_id, epoch, row)`` computed on the host (:func:`epoch_orders`): XLA's CPU
  sort is ~100x slower than numpy's, and a hash keeps a device's order independent of
  which other devices share the round. A partially valid batch is a smaller batch
  (masked mean loss); a batch with no valid row skips the update entirely (params *and*
  optimiser state unchanged), so a device with ``n`` samples does exactly
  ``ceil(n / batch)`` steps per epoch and a zero-sample device returns the global params
  unchanged (aggregation weight 0).
* recompiles: device count and steps per epoch are rounded up to buckets
  ``1..8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ...`` (3 significant bits, <= 25% waste)
  so successive rounds with slightly different sizes reuse the compiled code. Every trace
  bumps :func:`trace_counts` (a Python side effect inside the traced function), which tests
  use to prove that no recompilation happened.
* warm start from the given global params, optax optimiser by name (adam, sgd, adamw),
  optional FedProx term ``mu / 2 * ||w - w_global||^2``.

``train_devices(..., per_device_loop=True)`` is the per-device Python-loop reference that
calls the same jitted step per mini-batch (used by tests for vmap == loop, and by the
benchmark).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from iot_fed.fl.batching import bucket_size, epoch_orders
from iot_fed.fl.model import masked_mean_loss, reconstruction_error
from iot_fed.fl.spec import ModelSpec, Params

OPTIMIZERS = ("adam", "sgd", "adamw")
DeviceData = Sequence[tuple[np.ndarray, np.ndarray]]

_TRACES: Counter[str] = Counter()


def trace_counts() -> dict[str, int]:
    """How many times each jitted function was traced (== compiled) in this process."""
    return dict(_TRACES)


@dataclass(frozen=True)
class TrainConfig:
    """Local-training hyper-parameters (see ``iot_fed.config.Settings``)."""

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    local_epochs: int = 1
    batch_size: int = 50
    fedprox_mu: float = 0.0
    weight_decay: float = 1e-4
    momentum: float = 0.0
    min_device_bucket: int = 8
    min_step_bucket: int = 1
    device_chunk: int = 0
    """More devices than this are trained in chunks of this many device slots, one call
    each on the same compiled shape (memory bounded by the chunk, not the run); 0: one
    call. Results equal one call's: a device's shuffle depends on its id, not its slot."""
    evaluate: bool = True
    """Score every device's data with the global and the trained params (loss_before,
    loss_after); ~2 extra forward passes. ``False``: those fields are NaN."""

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.local_epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"invalid training config: {self}")

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> TrainConfig:
        base = cls(
            optimizer=settings.optimizer,
            learning_rate=settings.learning_rate,
            local_epochs=settings.local_epochs,
            batch_size=settings.batch_size,
            fedprox_mu=settings.fedprox_mu,
        )
        return replace(base, **overrides)


@dataclass
class TrainResult:
    """Per-device outcome of one local-training round (numpy, padding removed)."""

    params: Params
    """Stacked pytree: every leaf has a leading axis of length ``n_devices``."""
    n_samples: np.ndarray
    loss_before: np.ndarray
    """Mean score of the warm-start (global) params on the device's data; NaN if no data."""
    loss_after: np.ndarray

    @property
    def n_devices(self) -> int:
        return int(self.n_samples.shape[0])

    def device_params(self, i: int) -> Params:
        return {k: {n: v[i] for n, v in layer.items()} for k, layer in self.params.items()}


@dataclass
class EvalResult:
    """Per-device evaluation of one (global) model: its mean score on each device's data."""

    n_samples: np.ndarray
    loss: np.ndarray


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    if cfg.optimizer == "adam":
        return optax.adam(cfg.learning_rate)
    if cfg.optimizer == "adamw":
        return optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    return optax.sgd(cfg.learning_rate, momentum=cfg.momentum or None)


class _Trainer:
    """The jitted functions for one (spec, hyper-parameters) pair; built once, cached."""

    def __init__(self, spec: ModelSpec, cfg: TrainConfig) -> None:
        self.spec, self.cfg = spec, cfg
        tx = make_optimizer(cfg)
        act, mu, bsz, evaluate = spec.activation, cfg.fedprox_mu, cfg.batch_size, cfg.evaluate

        def loss_fn(p: Params, g: Params, xb: jax.Array, yb: jax.Array, mb: jax.Array):
            loss = masked_mean_loss(p, xb, yb, mb, act)
            if mu > 0:
                sq = sum(
                    jnp.sum(jnp.square(a - b))
                    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(g), strict=True)
                )
                loss = loss + 0.5 * mu * sq
            return loss

        def step(p: Params, s: Any, g: Params, xb: jax.Array, yb: jax.Array, mb: jax.Array):
            loss, grads = jax.value_and_grad(loss_fn)(p, g, xb, yb, mb)
            updates, s_new = tx.update(grads, s, p)
            p_new = optax.apply_updates(p, updates)
            has = jnp.any(mb)
            keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(has, new, old))
            return keep(p_new, p), keep(s_new, s), loss

        def evaluate_one(p: Params, x: jax.Array, y: jax.Array, n: jax.Array) -> jax.Array:
            """Mean score over the first ``n`` rows."""
            _TRACES["evaluate"] += 1
            err = reconstruction_error(p, x, y, act)
            valid = jnp.arange(x.shape[0]) < n
            return jnp.sum(jnp.where(valid, err, 0.0)) / jnp.maximum(n, 1)

        def train_one(g: Params, x: jax.Array, y: jax.Array, n: jax.Array, order: jax.Array):
            _TRACES["train_devices"] += 1
            idx = order.reshape(-1, bsz)  # (epochs * steps, batch)
            batches = (x[idx], y[idx], idx < n)  # one gather per round, outside the scan

            def body(carry, batch):
                p, s, loss = step(*carry, g, *batch)
                return (p, s), loss

            (p, _), _ = jax.lax.scan(body, (g, tx.init(g)), batches)
            if not evaluate:
                nan = jnp.full((), jnp.nan, x.dtype)
                return p, nan, nan
            return p, evaluate_one(g, x, y, n), evaluate_one(p, x, y, n)

        self.train_many = jax.jit(jax.vmap(train_one, in_axes=(None, 0, 0, 0, 0)))
        self.evaluate_many = jax.jit(jax.vmap(evaluate_one, in_axes=(None, 0, 0, 0)))
        self.step = jax.jit(step)
        self.opt_init = jax.jit(tx.init)
        self.evaluate_one = jax.jit(evaluate_one)


@functools.lru_cache(maxsize=16)
def _get_trainer(spec: ModelSpec, cfg: TrainConfig) -> _Trainer:
    return _Trainer(spec, cfg)


def _trainer_for(spec: ModelSpec, cfg: TrainConfig) -> _Trainer:
    # the bucket minima and the chunk are not part of the compiled computation's identity
    return _get_trainer(spec, replace(cfg, min_device_bucket=1, min_step_bucket=1, device_chunk=0))


def _as_f32(params: Params) -> Params:
    return {
        k: {n: np.asarray(v, np.float32) for n, v in layer.items()} for k, layer in params.items()
    }


def _check(device_data: DeviceData, spec: ModelSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for i, (x, y) in enumerate(device_data):
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        if x.ndim != 2 or x.shape[1] != spec.n_inputs or y.shape != (x.shape[0], spec.n_outputs):
            raise ValueError(
                f"device {i}: expected X (n, {spec.n_inputs}) and Y "
                f"(n, {spec.n_outputs}), got {x.shape} and {y.shape}"
            )
        out.append((x, y))
    return out


def padded_shape(device_data: DeviceData, cfg: TrainConfig) -> tuple[int, int]:
    """``(device slots, rows per device)`` after bucketing: the compiled shape of a round."""
    max_n = max((len(x) for x, _ in device_data), default=0)
    steps = bucket_size(math.ceil(max_n / cfg.batch_size), cfg.min_step_bucket)
    return bucket_size(len(device_data), cfg.min_device_bucket), steps * cfg.batch_size


def _pad(data: list[tuple[np.ndarray, np.ndarray]], spec: ModelSpec, slots: int, rows: int):
    x = np.zeros((slots, rows, spec.n_inputs), np.float32)
    y = np.zeros((slots, rows, spec.n_outputs), np.float32)
    n = np.zeros(slots, np.int32)
    for i, (xi, yi) in enumerate(data):
        x[i, : len(xi)], y[i, : len(yi)], n[i] = xi, yi, len(xi)
    return x, y, n


def _ids(device_ids: Sequence[int] | None, d: int) -> np.ndarray:
    if device_ids is None:
        return np.arange(d, dtype=np.int64)
    if len(device_ids) != d:
        raise ValueError(f"{len(device_ids)} device_ids for {d} devices")
    return np.asarray(device_ids, np.int64)


def train_devices(
    global_params: Params,
    device_data: DeviceData,
    spec: ModelSpec,
    cfg: TrainConfig = TrainConfig(),
    seed: int = 0,
    device_ids: Sequence[int] | None = None,
    per_device_loop: bool = False,
) -> TrainResult:
    """Train every device from ``global_params`` in one jitted, vmapped call.

    ``device_data[i] = (X_i, Y_i)``: standardised inputs ``(n_i, n_inputs)`` and targets
    ``(n_i, n_outputs)`` (see :func:`iot_fed.fl.normalization.make_xy`); ``n_i`` may be 0.
    ``device_ids`` (stable ints, e.g. mote ids) seed each device's shuffling; default: index.
    Deterministic for a given seed. ``per_device_loop``: the reference instead, a Python
    loop over devices and mini-batches calling the same jitted step (same bucketed rows and
    batch order, so results agree to float tolerance; slow, for tests and the benchmark).
    """
    data = _check(device_data, spec)
    d = len(data)
    if d == 0:
        raise ValueError("no devices to train")
    ids = _ids(device_ids, d)
    if per_device_loop:
        return _train_loop(global_params, data, spec, cfg, seed, ids)
    slots, rows = padded_shape(data, cfg)
    chunk = cfg.device_chunk
    if not chunk or d <= chunk:
        return _train_call(global_params, data, ids, spec, cfg, seed, slots, rows)
    slots = bucket_size(chunk)  # every chunk (the last one too) has this compiled shape
    parts = [
        _train_call(
            global_params, data[i : i + chunk], ids[i : i + chunk], spec, cfg, seed, slots, rows
        )
        for i in range(0, d, chunk)
    ]
    return TrainResult(
        {
            k: {m: np.concatenate([p.params[k][m] for p in parts]) for m in layer}
            for k, layer in parts[0].params.items()
        },
        np.concatenate([p.n_samples for p in parts]),
        np.concatenate([p.loss_before for p in parts]),
        np.concatenate([p.loss_after for p in parts]),
    )


def _train_call(
    global_params: Params,
    data: list[tuple[np.ndarray, np.ndarray]],
    ids: np.ndarray,
    spec: ModelSpec,
    cfg: TrainConfig,
    seed: int,
    slots: int,
    rows: int,
) -> TrainResult:
    """One jitted, vmapped call over ``data`` padded to ``(slots, rows)``."""
    d = len(data)
    x, y, n = _pad(data, spec, slots, rows)
    order = np.tile(np.arange(rows, dtype=np.int32), (slots, cfg.local_epochs))
    order[:d] = epoch_orders(seed, ids, n[:d], rows, cfg.local_epochs).reshape(d, -1)
    tr = _trainer_for(spec, cfg)
    p, lb, la = jax.device_get(tr.train_many(_as_f32(global_params), x, y, n, order))
    return _result(p, n[:d], lb, la)


def _result(p: Any, n: np.ndarray, lb: Any, la: Any) -> TrainResult:
    d = len(n)
    empty = n == 0
    fix = lambda a: np.where(empty, np.nan, np.asarray(a, np.float64)[:d])  # noqa: E731
    params = {k: {m: np.asarray(v)[:d] for m, v in layer.items()} for k, layer in p.items()}
    return TrainResult(params, n.astype(np.int64), fix(lb), fix(la))


def _train_loop(
    global_params: Params,
    data: list[tuple[np.ndarray, np.ndarray]],
    spec: ModelSpec,
    cfg: TrainConfig,
    seed: int,
    ids: np.ndarray,
) -> TrainResult:
    """:func:`train_devices`' reference: one device and one mini-batch at a time."""
    _, rows = padded_shape(data, cfg)
    tr = _trainer_for(spec, cfg)
    g = jax.tree.map(jnp.asarray, _as_f32(global_params))
    outs = []
    for i, (xi, yi) in enumerate(data):
        x = np.zeros((rows, spec.n_inputs), np.float32)
        y = np.zeros((rows, spec.n_outputs), np.float32)
        ni = len(xi)
        x[:ni], y[:ni] = xi, yi
        order = epoch_orders(seed, ids[i : i + 1], np.array([ni]), rows, cfg.local_epochs)
        p, s = g, tr.opt_init(g)
        for bidx in order.reshape(-1, cfg.batch_size):
            mb = bidx < ni
            if mb.any():
                p, s, _ = tr.step(p, s, g, x[bidx], y[bidx], mb)
        lb = tr.evaluate_one(g, x, y, np.int32(ni))
        la = tr.evaluate_one(p, x, y, np.int32(ni))
        outs.append((jax.device_get(p), float(lb), float(la)))
    n = np.array([len(xi) for xi, _ in data], np.int32)
    stacked = {
        k: {m: np.stack([o[0][k][m] for o in outs]) for m in ("w", "b")} for k in spec.layer_names()
    }
    return _result(stacked, n, [o[1] for o in outs], [o[2] for o in outs])


def evaluate_devices(
    params: Params,
    device_data: DeviceData,
    spec: ModelSpec,
    min_device_bucket: int = 8,
) -> EvalResult:
    """Score one model (e.g. the global one) on every device's data in one vmapped call.

    Returns the per-device mean score (validation loss).
    """
    data = _check(device_data, spec)
    d = len(data)
    if d == 0:
        raise ValueError("no devices to evaluate")
    cfg = TrainConfig(min_device_bucket=min_device_bucket)
    slots, rows = padded_shape(data, cfg)
    x, y, n = _pad(data, spec, slots, rows)
    tr = _trainer_for(spec, cfg)
    loss = jax.device_get(tr.evaluate_many(_as_f32(params), x, y, n))
    empty = n[:d] == 0
    return EvalResult(n[:d].astype(np.int64), np.where(empty, np.nan, loss[:d]))
