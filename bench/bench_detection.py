"""Benchmark: the federated window detector vs centralised, local-only and baselines.

Not a test. ``assets_data/bench-venv/bin/python bench/bench_detection.py [--quick]``
(the bench venv has the ``bench`` extra: River and PyOD baselines; with ``.venv`` they
are reported as skipped). Prints the tables; writes ``bench/results/detection.json`` (sections
``detection``: every figure, and ``summary``: the machine-readable schema of issue #10,
with the Flower comparison's summary from ``train.json``).

``--section NAME [--seeds 7,1,2] [--window W] [--methods federated]``: only the methods'
figures at their calibrated thresholds (no robustness or DP part), one run per seed, into
section ``NAME`` (to compare detector variants at the thresholds the product uses).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from common import print_table, results_path, write_results

from iot_fed.evaluation.benchmark import DetectionBenchConfig, run_detection_benchmark


def summary(results: dict[str, Any], flower: dict[str, Any] | None) -> dict[str, Any]:
    """The schema of issue #10."""
    m = {k: v for k, v in results["methods"].items() if "skipped" not in v}
    rb = results.get("robust", {}).get("f1", {})
    return {
        "f1": {k: v["overall"]["f1"] for k, v in m.items()},
        "event_recall": {
            k: {t: r["event_recall"] for t, r in v["per_type"].items()} for k, v in m.items()
        },
        "false_alarms_per_device_day": {k: v["false_alarms_per_device_day"] for k, v in m.items()},
        "false_alarms_per_device_day_no_faults": {
            k: v["false_alarms_per_device_day_no_faults"]
            for k, v in m.items()
            if "false_alarms_per_device_day_no_faults" in v
        },
        "robust": rb,
        "flower": flower or {},
        "engine_vs_bare": results.get("engine_vs_bare", {}).get("ratio"),
    }


CALIBRATED = ("f1", "pr_auc", "false_alarms_per_device_day", "clean_false_alarms_per_device_day")


def calibrated(cfg: DetectionBenchConfig, seeds: str) -> dict[str, Any]:
    """Per seed and method: F1 and PR-AUC overall, false alarms per device-day with the
    faults and on the clean test period, each method at its own calibrated threshold."""
    lean = replace(cfg, failing=(), strategies=("fedavg",), dp_noise=(0.0,))
    per_seed: dict[str, Any] = {}
    for seed in (int(x) for x in seeds.split(",")):
        res, _ = run_detection_benchmark(replace(lean, seed=seed))
        per_seed[str(seed)] = {
            name: {
                "f1": m["overall"]["f1"],
                "pr_auc": m["overall"]["pr_auc"],
                "false_alarms_per_device_day": m["false_alarms_per_device_day"],
                "clean_false_alarms_per_device_day": m.get("false_alarms_per_device_day_no_faults"),
            }
            for name, m in res["methods"].items()
            if "skipped" not in m
        }
    rows = [
        [seed, name, *(None if v is None else round(v, 3) for v in fig.values())]
        for seed, methods in per_seed.items()
        for name, fig in methods.items()
    ]
    print_table(
        f"Calibrated thresholds, window {cfg.window}", ["seed", "method", *CALIBRATED], rows
    )
    return {"config": lean.to_dict(), "per_seed": per_seed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="tiny: 6 motes, 1 day, 1 round, 2 strategies"
    )
    ap.add_argument("--motes", type=int, default=None)
    ap.add_argument("--days", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--window", type=int, default=None, help="the model's window (readings)")
    ap.add_argument("--methods", default=None, help="comma-separated (default: all)")
    ap.add_argument("--section", default=None, help="calibrated figures only, into this section")
    ap.add_argument("--seeds", default="7", help="with --section: comma-separated data seeds")
    args = ap.parse_args()

    cfg = DetectionBenchConfig()
    if args.quick:
        cfg = replace(cfg, motes=6, days=1.0, rounds=1, local_epochs=1, failing=(2,))
        cfg = replace(cfg, strategies=("fedavg", "median"), dp_noise=(0.0, 1.0))
    for k in ("motes", "days", "rounds", "window"):
        if getattr(args, k) is not None:
            cfg = replace(cfg, **{k: getattr(args, k)})
    if args.methods:
        cfg = replace(cfg, methods=tuple(args.methods.split(",")))
    if args.section:
        write_results("detection", {args.section: calibrated(cfg, args.seeds)}, quick=args.quick)
        return
    results, md = run_detection_benchmark(cfg)
    results.pop("plot", None)
    train = results_path("train", args.quick)
    flower = (
        json.loads(train.read_text()).get("flower", {}).get("summary") if train.exists() else None
    )
    print(f"\n# Detection benchmark ({results['seconds']} s)\n\n{md}")
    write_results(
        "detection",
        {"detection": results, "summary": summary(results, flower)},
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
