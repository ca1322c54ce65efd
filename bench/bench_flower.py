"""Benchmark: iot_fed's vmapped federated round vs Flower's simulation engine (Ray).

Not a test. Needs the optional ``bench`` extra (``flwr[simulation]``); run it from an
environment that has it, e.g. ``assets_data/bench-venv/bin/python bench/bench_flower.py``
(created with ``UV_PROJECT_ENVIRONMENT=assets_data/bench-venv uv sync --locked --extra
bench``). Writes ``bench/results/flower.json`` and ``bench/results/flower.md``.

Both engines run the *same* federated job: the same generated 54-mote partition (each
mote's most recent ``--samples`` training readings), the same model spec, the same local
training code (:func:`iot_fed.fl.training.train_devices`; inside each Flower client it
trains that one device, with the same per-device shuffling seed), the same local epochs
and rounds, and sample-weighted FedAvg. Reported: wall time per round (first round, which
includes compilation / Ray worker start-up, and the median of the later rounds), total
wall time, and the final global model's F1 / ROC-AUC on the same fault-injected test data
with the same global threshold rule (``combine_thresholds`` of device quantiles).
Per-round time for Flower is measured by the strategy, from ``configure_fit`` (round
start) to the end of ``aggregate_fit``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from iot_fed.evaluation import methods as mt
from iot_fed.evaluation.benchmark import DetectionBenchConfig, prepare
from iot_fed.evaluation.datasets import generated_readings
from iot_fed.evaluation.metrics import binary_report
from iot_fed.evaluation.report import machine_header, machine_info
from iot_fed.fl.aggregation import aggregate
from iot_fed.fl.model import init_params
from iot_fed.fl.normalization import make_xy
from iot_fed.fl.spec import ModelSpec, Params
from iot_fed.fl.training import train_devices

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


# --- shared helpers -------------------------------------------------------------------------
def to_list(p: Params, spec: ModelSpec) -> list[np.ndarray]:
    return [np.asarray(p[k][m], np.float32) for k in spec.layer_names() for m in ("w", "b")]


def from_list(arrs: list[np.ndarray], spec: ModelSpec) -> Params:
    it = iter(arrs)
    return {k: {"w": next(it), "b": next(it)} for k in spec.layer_names()}


def evaluate(
    params: Params,
    norm: Any,
    train_data: list,
    test_x: np.ndarray,
    fault_type: np.ndarray,
    setup: mt.Setup,
) -> dict[str, float]:
    thr = mt.global_threshold(params, train_data, setup)
    s = mt.score_global(params, norm, thr, test_x, setup.spec)
    rep = binary_report(fault_type != "", ~(s <= 1.0), s)
    return {
        "f1": round(rep["f1"], 4),
        "roc_auc": round(rep["roc_auc"], 4),
        "precision": round(rep["precision"], 4),
        "recall": round(rep["recall"], 4),
        "threshold": thr,
    }


def summary(round_s: list[float]) -> dict[str, Any]:
    later = round_s[1:] or round_s
    return {
        "round_seconds": [round(t, 4) for t in round_s],
        "first_round_s": round(round_s[0], 4),
        "median_round_s": round(statistics.median(later), 4),
        "total_s": round(sum(round_s), 3),
    }


# --- iot_fed engine --------------------------------------------------------------------------
def run_iot_fed(data: list, moteids: list[int], setup: mt.Setup) -> tuple[Params, list[float]]:
    g = {
        k: {m: np.asarray(v) for m, v in layer.items()}
        for k, layer in init_params(setup.spec, setup.seed).items()
    }
    times = []
    for r in range(setup.rounds):
        t0 = time.perf_counter()
        res = train_devices(
            g, data, setup.spec, setup.train, seed=setup.seed * 1000 + r, device_ids=moteids
        )
        g, _ = aggregate(res.params, res.n_samples, "fedavg")
        times.append(time.perf_counter() - t0)
    return g, times


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
    data_path: str, n_clients: int, setup: mt.Setup, num_cpus: int, client_cpus: float
) -> tuple[Params, list[float]]:
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    spec, tcfg, seed = setup.spec, setup.train, setup.seed

    class JaxClient(NumPyClient):
        def __init__(self, i: int) -> None:
            part = _partition(data_path)
            self.x, self.y = part[f"x{i}"], part[f"y{i}"]
            self.moteid = int(part["moteids"][i])

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]):
            r = int(config["server_round"]) - 1
            res = train_devices(
                from_list(parameters, spec),
                [(self.x, self.y)],
                spec,
                tcfg,
                seed=seed * 1000 + r,
                device_ids=[self.moteid],
            )
            return to_list(res.device_params(0), spec), int(res.n_samples[0]), {}

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
            out = super().aggregate_fit(server_round, results, failures)
            self.times.append(time.perf_counter() - self.starts[server_round])
            self.final = parameters_to_ndarrays(out[0])
            return out

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
    return from_list(strategy.final, spec), strategy.times


# --- main ------------------------------------------------------------------------------------
def markdown(res: dict[str, Any]) -> str:
    c = res["config"]
    lines = [
        f"# Flower vs iot_fed: {c['devices']} devices x {c['samples']} samples, "
        f"{c['rounds']} rounds x {c['local_epochs']} local epoch(s), model "
        f"{c['spec']}\n",
        machine_header(res["machine"]) + "\n",
        f"Command: `{res['command']}`\n",
        "| engine | first round (s) | median later round (s) | total (s) | final F1 "
        "| final ROC-AUC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("iot_fed", "flower"):
        e = res.get(name, {})
        if "median_round_s" not in e:
            lines.append(f"| {name} | - | - | - | - | - |")
            continue
        lines.append(
            f"| {name} | {e['first_round_s']} | {e['median_round_s']} | "
            f"{e['total_s']} | {e['final']['f1']} | {e['final']['roc_auc']} |"
        )
    if "ratio" in res:
        r = res["ratio"]
        lines.append(
            f"\nFlower / iot_fed per-round time (median of later rounds): "
            f"**{r['median_round']:.0f}x**; total wall time: {r['total']:.0f}x; "
            f"F1 difference (iot_fed - Flower): {r['f1_diff']:+.4f}."
        )
    if "error" in res.get("flower", {}):
        lines.append(f"\nFlower could not run: {res['flower']['error']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=54)
    ap.add_argument("--samples", type=int, default=2000, help="training readings per device")
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--hidden", default="32,16")
    ap.add_argument(
        "--client-cpus",
        type=float,
        default=1.0,
        help="Ray CPUs per Flower client (concurrency = cores / this)",
    )
    ap.add_argument("--skip-flower", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    cfg = DetectionBenchConfig(
        motes=args.devices,
        days=args.days,
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        hidden=hidden,
        max_train_per_device=args.samples,
    )
    setup = cfg.setup()
    p = prepare(generated_readings(cfg.motes, cfg.days, cfg.seed), cfg, cfg.faults)
    norm = mt.pooled_normalizer(p.train_x)
    data = [make_xy(x, norm, setup.spec.n_outputs) for x in p.train_x]
    ids = p.part_train.moteids
    num_cpus = os.cpu_count() or 1
    res: dict[str, Any] = {
        "machine": machine_info(),
        "command": "assets_data/bench-venv/bin/python bench/bench_flower.py",
        "config": {
            "devices": len(ids),
            "samples": args.samples,
            "n_samples": [len(x) for x, _ in data],
            "rounds": args.rounds,
            "local_epochs": args.local_epochs,
            "batch_size": setup.train.batch_size,
            "spec": setup.spec.to_dict(),
            "optimizer": setup.train.optimizer,
            "ray_num_cpus": num_cpus,
            "client_cpus": args.client_cpus,
            "test_rows": int(len(p.test)),
            "faulty_test_rows": int((p.fault_type != "").sum()),
        },
    }

    params, times = run_iot_fed(data, ids, setup)
    res["iot_fed"] = {
        **summary(times),
        "final": evaluate(params, norm, data, p.test_x_all, p.fault_type, setup),
    }
    print("iot_fed:", res["iot_fed"])

    if not args.skip_flower:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "partition.npz")
            np.savez(
                path,
                moteids=np.asarray(ids),
                **{f"x{i}": x for i, (x, _) in enumerate(data)},
                **{f"y{i}": y for i, (_, y) in enumerate(data)},
            )
            try:
                t0 = time.perf_counter()
                ray_info = start_ray(num_cpus)
                fparams, ftimes = run_flower(path, len(ids), setup, num_cpus, args.client_cpus)
                wall = time.perf_counter() - t0
                res["flower"] = {
                    **summary(ftimes),
                    **ray_info,
                    "wall_incl_startup_s": round(wall, 2),
                    "final": evaluate(fparams, norm, data, p.test_x_all, p.fault_type, setup),
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
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flower.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    md = markdown(res)
    (args.out / "flower.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
