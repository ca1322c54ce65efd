"""Training benchmark: the federated round's cost, and iot_fed against Flower.

Not a test. ``assets_data/bench-venv/bin/python bench/bench_train.py [--parts
round,flower] [--quick] [--repeats R]`` (the bench venv has Flower; with ``.venv`` the
``flower`` part records why Flower could not run). Prints tables; writes
``bench/results/train.json`` (sections ``round`` and ``flower``).

``round``: one round, vmapped (one jitted call) vs a per-device Python loop.
For each model (bench default hidden=(32,), project default (32, 16)) and each scenario
(devices x samples) it reports compile time (first call minus best steady call), best and
median wall time of the round (padding + transfer + compute), samples/s and achieved
GFLOP/s (analytic: 2*in*out per layer per sample, x3 for forward + backward, real samples
only). The loop baseline calls the same jitted optimiser step per mini-batch; for large
device counts it runs on a prefix of devices until a time cap and is extrapolated.
Aggregation of 10,000 stacked models is timed for each strategy.

``flower`` (:mod:`flower_engine`): the same federated job (generated partition, model,
:func:`iot_fed.fl.rounds.client_update` / ``server_update``) on iot_fed's engine and on
Flower's simulation engine (Ray): wall time per round (first, median of the later ones),
total, and the final model's F1 / ROC-AUC on the same fault-injected test data.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import parts_parser, run_parts
from flower_engine import flower

from iot_fed.fl.aggregation import aggregate
from iot_fed.fl.model import init_params
from iot_fed.fl.spec import ModelSpec
from iot_fed.fl.training import TrainConfig, train_devices


def make_data(
    d: int, n: int, seed: int = 0, spec: ModelSpec | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random standardised inputs of the detector's shape (window features -> targets)."""
    spec = spec or ModelSpec()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(d, n, spec.n_inputs)).astype(np.float32)
    return [(x[i], np.ascontiguousarray(x[i, :, : spec.n_outputs])) for i in range(d)]


def bare_round(spec: ModelSpec, cfg: TrainConfig) -> Any:
    """The reference bare-JAX sketch: jit(vmap(scan)) without masks, padding or evaluation."""
    tx = optax.adam(cfg.learning_rate)
    act = jax.nn.relu

    def loss(p: Any, xb: jax.Array, yb: jax.Array) -> jax.Array:
        h = xb
        names = spec.layer_names()
        for name in names[:-1]:
            h = act(h @ p[name]["w"] + p[name]["b"])
        out = h @ p[names[-1]]["w"] + p[names[-1]]["b"]
        return jnp.mean(jnp.square(out - yb))

    def one(g: Any, x: jax.Array, y: jax.Array) -> Any:
        b = cfg.batch_size
        xs, ys = x.reshape(-1, b, x.shape[-1]), y.reshape(-1, b, y.shape[-1])

        def body(c: Any, batch: Any) -> Any:
            p, s = c
            grads = jax.grad(loss)(p, *batch)
            u, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(body, (g, tx.init(g)), (xs, ys))[0][0]

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))


def timed(fn: Any, repeats: int) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, times


def bench_round(
    spec: ModelSpec, cfg: TrainConfig, d: int, n: int, repeats: int, loop_cap_s: float | None
) -> dict[str, Any]:
    g = init_params(spec, 0)
    data = make_data(d, n, spec=spec)
    samples = d * n * cfg.local_epochs
    flops = samples * 3 * spec.flops_per_sample()

    def ours() -> Any:
        return train_devices(g, data, spec, cfg, seed=1)

    # same-conditions baseline (others may share the CPU): the bare sketch, timed interleaved
    # with ours so both see the same load; only when N is a multiple of the batch
    bare_fn = None
    if n % cfg.batch_size == 0:
        bare = bare_round(spec, cfg)
        xs = jnp.asarray(np.stack([x for x, _ in data]))
        ys = jnp.asarray(np.stack([y for _, y in data]))
        bare_fn = lambda: jax.block_until_ready(bare(g, xs, ys))  # noqa: E731
        bare_fn()
    t0 = time.perf_counter()
    ours()
    first = time.perf_counter() - t0
    times, bt = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours()
        times.append(time.perf_counter() - t0)
        if bare_fn is not None:
            t0 = time.perf_counter()
            bare_fn()
            bt.append(time.perf_counter() - t0)
    best, med = min(times), statistics.median(times)
    bare_best = min(bt) if bt else None
    row: dict[str, Any] = {
        "hidden": list(spec.hidden),
        "devices": d,
        "samples": n,
        "epochs": cfg.local_epochs,
        "batch": cfg.batch_size,
        "compile_s": max(first - best, 0.0),
        "vmap_best_s": best,
        "vmap_median_s": med,
        "vmap_samples_per_s": samples / best,
        "vmap_gflops": flops / best / 1e9,
        "bare_sketch_best_s": bare_best,
        "loadavg_1m": os.getloadavg()[0],
    }
    if loop_cap_s is not None:
        # warm up the per-step jit
        train_devices(g, data[:2], spec, cfg, seed=1, per_device_loop=True)
        loop_times = []
        for _ in range(max(1, min(repeats, 2))):
            t0 = time.perf_counter()
            done = 0
            chunk = max(1, min(d, 54))
            while done < d and time.perf_counter() - t0 < loop_cap_s:
                train_devices(g, data[done : done + chunk], spec, cfg, seed=1, per_device_loop=True)
                done += min(chunk, d - done)
            loop_times.append((time.perf_counter() - t0) * d / done)
        row.update(
            loop_best_s=min(loop_times),
            loop_extrapolated=done < d,
            loop_devices_run=done,
            speedup=min(loop_times) / best,
        )
    return row


def bench_aggregation(spec: ModelSpec, d: int, repeats: int) -> list[dict[str, Any]]:
    g = init_params(spec, 0)
    rng = np.random.default_rng(0)
    stacked = {
        k: {
            m: (np.asarray(v)[None] + 0.01 * rng.normal(size=(d, *np.shape(v)))).astype(np.float32)
            for m, v in layer.items()
        }
        for k, layer in g.items()
    }
    w = rng.integers(1, 500, size=d)
    cases = {
        "fedavg": {},
        "median": {"strategy": "median"},
        "trimmed_mean": {"strategy": "trimmed_mean", "trim_ratio": 0.1},
        "fedavg+dp": {"global_params": g, "dp_clip_norm": 1.0, "dp_noise_multiplier": 1.0},
    }
    rows = []
    for name, kw in cases.items():
        _, times = timed(lambda kw=kw: aggregate(stacked, w, **kw), repeats)
        rows.append(
            {
                "hidden": list(spec.hidden),
                "strategy": name,
                "devices": d,
                "n_params": spec.n_params(),
                "best_s": min(times),
                "median_s": statistics.median(times),
            }
        )
    return rows


def round_part(args: argparse.Namespace) -> dict[str, Any]:
    """vmapped round vs loop per scenario and model, then aggregation of 10,000 models."""
    repeats = args.repeats or (2 if args.quick else 5)
    cfg = TrainConfig(optimizer="adam", local_epochs=1, batch_size=50)
    scenarios = [(54, 500, 30.0), (1000, 200, 10.0), (10_000, 200, None)]
    specs = [ModelSpec(hidden=(32,)), ModelSpec(hidden=(32, 4, 32))]
    if args.quick:  # one small scenario, one model: compilation dominates a quick run
        scenarios, specs = [(54, 200, 1.0)], specs[:1]
    rounds, aggs = [], []
    for spec in specs:
        for d, n, cap in scenarios:
            row = bench_round(spec, cfg, d, n, repeats, cap)
            rounds.append(row)
            print(_fmt_round(row), flush=True)
    for spec in specs:
        for row in bench_aggregation(spec, 1000 if args.quick else 10_000, repeats):
            aggs.append(row)
            print(
                f"aggregate {row['strategy']:<13} hidden={row['hidden']} d={row['devices']} "
                f"P={row['n_params']}: best {row['best_s'] * 1e3:.1f} ms, "
                f"median {row['median_s'] * 1e3:.1f} ms",
                flush=True,
            )
    print()
    print(_table(rounds, aggs))
    return {
        "backend": jax.default_backend(),
        "config": {
            "optimizer": cfg.optimizer,
            "epochs": cfg.local_epochs,
            "batch": cfg.batch_size,
            "repeats": repeats,
            "quick": args.quick,
        },
        "rounds": rounds,
        "aggregation": aggs,
    }


PARTS = {"round": round_part, "flower": flower}


def main() -> None:
    ap = parts_parser(__doc__, PARTS, "smaller scenarios, fewer repeats")
    ap.add_argument("--repeats", type=int, default=None, help="round: timed repeats")
    ap.add_argument("--devices", type=int, default=54, help="flower: clients")
    ap.add_argument("--samples", type=int, default=2000, help="flower: readings per device")
    ap.add_argument("--days", type=float, default=2.0, help="flower: generated days")
    ap.add_argument("--rounds", type=int, default=3, help="flower: rounds")
    ap.add_argument("--local-epochs", type=int, default=2, help="flower: local epochs")
    ap.add_argument("--client-cpus", type=float, default=1.0, help="flower: CPUs per client")
    ap.add_argument("--skip-flower", action="store_true", help="flower: iot_fed's side only")
    args = ap.parse_args()
    if args.quick:
        args.devices, args.samples, args.rounds, args.days = 6, 300, 2, 1.0
    run_parts("train", PARTS, args)


def _fmt_round(r: dict[str, Any]) -> str:
    s = (
        f"round hidden={r['hidden']} {r['devices']}x{r['samples']}: compile "
        f"{r['compile_s']:.2f} s, vmap best {r['vmap_best_s'] * 1e3:.1f} ms "
        f"(median {r['vmap_median_s'] * 1e3:.1f}), {r['vmap_samples_per_s'] / 1e6:.2f} "
        f"M samples/s, {r['vmap_gflops']:.2f} GFLOP/s"
    )
    if "loop_best_s" in r:
        s += (
            f"; loop {r['loop_best_s'] * 1e3:.0f} ms"
            f"{' (extrapolated)' if r['loop_extrapolated'] else ''}, x{r['speedup']:.1f}"
        )
    return s


def _table(rounds: list[dict[str, Any]], aggs: list[dict[str, Any]]) -> str:
    lines = [
        "| hidden | devices x samples | compile s | vmap best ms | vmap median ms | "
        "M samples/s | GFLOP/s | bare sketch ms | loop ms | speedup | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        loop = (
            f"{r['loop_best_s'] * 1e3:.0f}{'*' if r['loop_extrapolated'] else ''}"
            if "loop_best_s" in r
            else "-"
        )
        sp = f"{r['speedup']:.1f}x" if "speedup" in r else "-"
        bare = (
            f"{r['bare_sketch_best_s'] * 1e3:.1f}" if r["bare_sketch_best_s"] is not None else "-"
        )
        lines.append(
            f"| {tuple(r['hidden'])} | {r['devices']} x {r['samples']} | "
            f"{r['compile_s']:.2f} | {r['vmap_best_s'] * 1e3:.1f} | "
            f"{r['vmap_median_s'] * 1e3:.1f} | {r['vmap_samples_per_s'] / 1e6:.2f} | "
            f"{r['vmap_gflops']:.2f} | {bare} | {loop} | {sp} | {r['loadavg_1m']:.1f} |"
        )
    lines += ["", "| hidden | strategy | models | best ms | median ms |", "|---|---|---|---|---|"]
    for a in aggs:
        lines.append(
            f"| {tuple(a['hidden'])} | {a['strategy']} | {a['devices']} | "
            f"{a['best_s'] * 1e3:.1f} | {a['median_s'] * 1e3:.1f} |"
        )
    lines.append(
        "(* loop extrapolated from a prefix of devices under a time cap; bare sketch = "
        "jit(vmap(scan)) with no masks/padding/evaluation, timed in the same run; "
        "load = 1-min load average)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
