"""The engine's client update timed beside a bare ``jit(vmap)`` sketch of the same model.

The sketch trains the same MLP with the same optimiser, batch size and epochs on the same
padded arrays, without masks, bucketing, shuffling orders or host-side bookkeeping: what a
hand-written JAX round would cost. Both are timed warm (after one compiling call), best of
``repeats`` interleaved runs, in the same process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from iot_fed.fl.rounds import DeviceData, client_update, initial_normalizer


def _bare(spec: Any, cfg: Any) -> Any:
    import jax
    import jax.numpy as jnp
    import optax

    tx = optax.adam(cfg.learning_rate)
    names = spec.layer_names()

    def loss(p: Any, xb: Any, yb: Any) -> Any:
        h = xb
        for name in names[:-1]:
            h = jax.nn.relu(h @ p[name]["w"] + p[name]["b"])
        return jnp.mean(jnp.square(h @ p[names[-1]]["w"] + p[names[-1]]["b"] - yb))

    def one(g: Any, x: Any, y: Any) -> Any:
        b = cfg.batch_size
        xs = jnp.tile(x.reshape(-1, b, x.shape[-1]), (cfg.local_epochs, 1, 1))
        ys = jnp.tile(y.reshape(-1, b, y.shape[-1]), (cfg.local_epochs, 1, 1))

        def body(c: Any, batch: Any) -> Any:
            p, s = c
            grads = jax.grad(loss)(p, *batch)
            u, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (g, tx.init(g)), (xs, ys))
        return p

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))


def engine_vs_bare(devices: Sequence[DeviceData], setup: Any, repeats: int = 5) -> dict[str, Any]:
    """``{"engine_s", "bare_s", "ratio"}`` for one round over ``devices``."""
    import jax

    from iot_fed.fl.detector import model_xy, standardize
    from iot_fed.fl.model import init_params
    from iot_fed.fl.training import padded_shape

    spec, cfg = setup.spec, setup.train
    g = {k: {m: np.asarray(v) for m, v in la.items()} for k, la in init_params(spec, 0).items()}
    norm = initial_normalizer(devices)
    zs = [model_xy(spec, standardize(norm, d.train))[0] for d in devices]
    slots, rows = padded_shape([(z, z) for z in zs], cfg)
    x = np.zeros((len(devices), rows, spec.n_inputs), np.float32)
    for i, z in enumerate(zs):
        x[i, : len(z)] = z
    y = np.ascontiguousarray(x[:, :, : spec.n_outputs])
    bare = _bare(spec, cfg)

    def t_engine() -> None:
        client_update(g, norm, devices, spec, cfg, seed=0)

    def t_bare() -> None:
        jax.block_until_ready(bare(g, x, y))

    fns = {"engine_s": t_engine, "bare_s": t_bare}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # compile
    for _ in range(repeats):  # interleaved, so a busy machine slows both alike
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    best = {k: round(min(v), 4) for k, v in times.items()}
    return {
        **best,
        "ratio": round(best["engine_s"] / best["bare_s"], 3),
        "devices": len(devices),
        "rows": rows,
    }
