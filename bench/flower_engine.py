"""The ``flower`` part of ``bench_train.py``: iot_fed's vmapped federated round vs Flower's
simulation engine (Ray).

Needs the optional ``bench`` extra (``flwr[simulation]``): run ``bench_train.py`` from an
environment that has it, e.g. ``assets_data/bench-venv/bin/python`` (created with
``UV_PROJECT_ENVIRONMENT=assets_data/bench-venv uv sync --locked --extra bench``; ``make
bench`` does). Section ``flower`` of ``bench/results/train.json``, one run per client
count (``runs.clients_54``, ...), and their ``summary``.

Both engines run the *same* federated job with the *same round code*: the same generated
partition (each mote's most recent ``--samples`` training readings as window features),
the same model spec, :func:`iot_fed.fl.rounds.client_update` as the local step (inside
each Flower client for its one device, with the same per-device shuffling seed) and
:func:`iot_fed.fl.rounds.server_update` as the server step (called from the Flower
strategy's ``aggregate_fit``: FedAvg, normaliser, per-device thresholds on held-out
readings). Reported: wall time per round (first round, which includes compilation / Ray
worker start-up, and the median of the later rounds), total wall time, and the final
global model's F1 / ROC-AUC on the same fault-injected test data.
Per-round time for Flower is measured by the strategy, from ``configure_fit`` (round
start) to the end of ``aggregate_fit``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import traceback
from typing import Any

import numpy as np
from common import machine_info, print_table, results_path

from iot_fed.evaluation import methods as mt
from iot_fed.evaluation.benchmark import DetectionBenchConfig, prepare
from iot_fed.evaluation.datasets import generated_readings
from iot_fed.evaluation.metrics import binary_report
from iot_fed.fl.model import init_params
from iot_fed.fl.rounds import ClientUpdate, DeviceData, client_update, server_update
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.spec import ModelSpec, Params


# --- shared helpers -------------------------------------------------------------------------
def to_list(p: Params, spec: ModelSpec) -> list[np.ndarray]:
    return [np.asarray(p[k][m], np.float32) for k in spec.layer_names() for m in ("w", "b")]


def from_list(arrs: list[np.ndarray], spec: ModelSpec) -> Params:
    it = iter(arrs)
    return {k: {"w": next(it), "b": next(it)} for k in spec.layer_names()}


def evaluate(bundle: ModelBundle, p: Any) -> dict[str, float]:
    s = mt.normalised_test_scores(bundle, p.test_series, p.moteids)
    rep = binary_report(p.fault_type != "", ~(s <= 1.0), s)
    return {k: round(float(rep[k] or 0.0), 4) for k in ("f1", "roc_auc", "precision", "recall")}


def summary(round_s: list[float]) -> dict[str, Any]:
    later = round_s[1:] or round_s
    return {
        "round_seconds": [round(t, 4) for t in round_s],
        "first_round_s": round(round_s[0], 4),
        "median_round_s": round(statistics.median(later), 4),
        "total_s": round(sum(round_s), 3),
    }


def server_step(
    results: list[tuple[int, Params, int]], devices: list[DeviceData], setup: mt.Setup, r: int
) -> ModelBundle:
    """The one server update on the clients' results ``(index, params, n)``."""
    from iot_fed.fl.rounds import feature_stats, initial_normalizer

    results = sorted(results)
    devs = [devices[i] for i, _, _ in results]
    stacked = {
        k: {m: np.stack([p[k][m] for _, p, _ in results]) for m in ("w", "b")}
        for k in setup.spec.layer_names()
    }
    n = np.array([c for _, _, c in results], np.float64)
    upd = ClientUpdate(
        moteids=tuple(d.moteid for d in devs),
        params=stacked,
        n_samples=n,
        loss_before=np.zeros(len(n)),
        loss_after=np.zeros(len(n)),
        stats=tuple(feature_stats(d.train) for d in devs),
        norm=initial_normalizer(devices),
    )
    held = {d.moteid: d.held_out for d in devs}
    return server_update(upd, held, setup.spec, setup.server, seed=r).bundle


# --- iot_fed engine --------------------------------------------------------------------------
def run_iot_fed(devices: list[DeviceData], setup: mt.Setup) -> tuple[ModelBundle, list[float]]:
    times: list[float] = []
    bundle, info = mt.federate(devices, setup)
    times = [c + s for c, s in zip(info["client_seconds"], info["server_seconds"], strict=True)]
    return bundle, times


# --- Flower ----------------------------------------------------------------------------------
_CACHE: dict[str, Any] = {}


def _partition(path: str) -> Any:
    if path not in _CACHE:
        _CACHE[path] = np.load(path)
    return _CACHE[path]


def start_ray(num_cpus: int, attempts: int = 3) -> dict[str, Any]:
    """Start a local Ray instance ourselves (Flower reuses an initialised one), retrying:
    on a loaded small machine the raylet can give up waiting for its dashboard agent
    (a hard-coded 15 s port-file wait in Ray 2.5x, ray-project/ray#65983)."""
    import ray

    errors = []
    for i in range(attempts):
        t0 = time.perf_counter()
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return {
                "ray_start_s": round(time.perf_counter() - t0, 2),
                "ray_attempts": i + 1,
                "ray_errors": errors,
            }
        except Exception as exc:  # record and retry; raised below if every attempt fails
            errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            ray.shutdown()
    raise RuntimeError(f"Ray did not start in {attempts} attempts: {errors}")


def run_flower(
    data_path: str,
    devices: list[DeviceData],
    setup: mt.Setup,
    num_cpus: int,
    client_cpus: float,
) -> tuple[ModelBundle, list[float]]:
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from iot_fed.fl.normalization import Normalizer

    spec, tcfg, seed = setup.spec, setup.train, setup.seed

    class JaxClient(NumPyClient):
        def __init__(self, i: int) -> None:
            part = _partition(data_path)
            self.i = i
            self.dev = DeviceData(int(part["moteids"][i]), part[f"x{i}"], part[f"h{i}"])
            self.norm = Normalizer(part["norm_mean"], part["norm_std"])

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]):
            r = int(config["server_round"]) - 1
            upd = client_update(
                from_list(parameters, spec),
                self.norm,
                [self.dev],
                spec,
                tcfg,
                seed=seed * 1000 + r,
            )
            return to_list(upd.device_params(0), spec), int(upd.n_samples[0]), {"i": self.i}

    def client_fn(context: Context):
        return JaxClient(int(context.node_config["partition-id"])).to_client()

    class TimedFedAvg(FedAvg):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.starts: dict[int, float] = {}
            self.times: list[float] = []
            self.final: list[np.ndarray] | None = None

        def configure_fit(self, server_round, parameters, client_manager):
            self.starts[server_round] = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            if failures:
                raise RuntimeError(
                    f"round {server_round}: {len(failures)} client failures: {failures[:1]}"
                )
            got = [
                (
                    int(res.metrics["i"]),
                    from_list(parameters_to_ndarrays(res.parameters), spec),
                    int(res.num_examples),
                )
                for _, res in results
            ]
            bundle = server_step(got, devices, setup, server_round - 1)
            self.times.append(time.perf_counter() - self.starts[server_round])
            self.final = bundle
            return ndarrays_to_parameters(to_list(bundle.params, spec)), {}

    n_clients = len(devices)
    init = to_list(init_params(spec, seed), spec)
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n_clients,
        min_available_clients=n_clients,
        min_evaluate_clients=0,
        initial_parameters=ndarrays_to_parameters(init),
        on_fit_config_fn=lambda r: {"server_round": r},
    )

    def server_fn(context: Context) -> ServerAppComponents:
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=setup.rounds))

    backend = {
        "client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": num_cpus, "include_dashboard": False},
    }
    run_simulation(
        ServerApp(server_fn=server_fn),
        ClientApp(client_fn=client_fn),
        num_supernodes=n_clients,
        backend_config=backend,
    )
    if strategy.final is None or len(strategy.times) != setup.rounds:
        raise RuntimeError(f"Flower finished {len(strategy.times)} of {setup.rounds} rounds")
    return strategy.final, strategy.times


# --- the part ------------------------------------------------------------------------------
def print_comparison(res: dict[str, Any]) -> None:
    c = res["config"]
    rows = []
    for name in ("iot_fed", "flower"):
        e = res.get(name, {})
        if "median_round_s" not in e:
            rows.append([name, None, None, None, None, None])
            continue
        f = e["final"]
        rows.append(
            [name, e["first_round_s"], e["median_round_s"], e["total_s"], f["f1"], f["roc_auc"]]
        )
    print_table(
        f"Flower vs iot_fed: {c['devices']} devices x {c['samples']} samples, {c['rounds']} "
        f"rounds x {c['local_epochs']} local epoch(s)",
        ["engine", "first round s", "median later round s", "total s", "final F1", "ROC-AUC"],
        rows,
    )
    if "ratio" in res:
        r = res["ratio"]
        print(
            f"Flower / iot_fed per-round time (median of later rounds): {r['median_round']:.0f}x;"
            f" total {r['total']:.0f}x; F1 difference (iot_fed - Flower): {r['f1_diff']:+.4f}"
        )
    if "error" in res.get("flower", {}):
        print(f"Flower could not run: {res['flower']['error']}")


def flower(args: Any) -> dict[str, Any]:
    """The same federated job on both engines; this run joins the section's earlier runs
    (another client count) in ``runs``."""
    sizes = {"motes": args.devices, "days": args.days, "max_train_per_device": args.samples}
    cfg = DetectionBenchConfig(**sizes, rounds=args.rounds, local_epochs=args.local_epochs)
    setup = cfg.setup()
    p = prepare(generated_readings(cfg.motes, cfg.days, cfg.seed), cfg, cfg.faults)
    from iot_fed.fl.rounds import initial_normalizer

    norm = initial_normalizer(p.devices)
    num_cpus = os.cpu_count() or 1
    res: dict[str, Any] = {
        "machine": machine_info(),
        "config": {
            "devices": len(p.devices),
            "samples": args.samples,
            "rounds": args.rounds,
            "local_epochs": args.local_epochs,
            "batch_size": setup.train.batch_size,
            "spec": setup.spec.to_dict(),
            "ray_num_cpus": num_cpus,
            "client_cpus": args.client_cpus,
            "test_rows": int(len(p.test)),
        },
    }
    bundle, times = run_iot_fed(p.devices, setup)
    res["iot_fed"] = {**summary(times), "final": evaluate(bundle, p)}
    print("iot_fed:", res["iot_fed"])
    if not args.skip_flower:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "partition.npz")
            np.savez(
                path,
                moteids=np.asarray(p.moteids),
                norm_mean=norm.mean,
                norm_std=norm.std,
                **{f"x{i}": d.train for i, d in enumerate(p.devices)},
                **{f"h{i}": d.held_out for i, d in enumerate(p.devices)},
            )
            try:
                t0 = time.perf_counter()
                ray_info = start_ray(num_cpus)
                fbundle, ftimes = run_flower(path, p.devices, setup, num_cpus, args.client_cpus)
                res["flower"] = {
                    **summary(ftimes),
                    **ray_info,
                    "wall_incl_startup_s": round(time.perf_counter() - t0, 2),
                    "final": evaluate(fbundle, p),
                }
                a, b = res["flower"], res["iot_fed"]
                res["ratio"] = {
                    "median_round": a["median_round_s"] / b["median_round_s"],
                    "total": a["total_s"] / b["total_s"],
                    "f1_diff": b["final"]["f1"] - a["final"]["f1"],
                }
            except Exception as exc:  # report exactly why Flower could not run
                res["flower"] = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-4000:],
                }
        print("flower:", res["flower"])
    print_comparison(res)
    path = results_path("train", args.quick)
    old = json.loads(path.read_text()).get("flower", {}) if path.exists() else {}
    runs = old.get("runs", {}) if isinstance(old.get("runs"), dict) else {}
    runs[f"clients_{len(p.devices)}"] = res
    summ = {
        k: {
            "ratio": round(v["ratio"]["median_round"], 2),
            "f1_diff": round(v["ratio"]["f1_diff"], 4),
        }
        for k, v in runs.items()
        if "ratio" in v
    }
    return {"runs": runs, "summary": summ}
