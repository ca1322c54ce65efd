"""Benchmark: event recall against fault magnitude, every method at one alert budget.

Not a test. ``assets_data/bench-venv/bin/python bench/bench_sensitivity.py [--quick]``
(the bench venv has River and PyOD; with ``.venv`` they are reported as skipped). Prints
the tables; writes ``bench/results/sensitivity.json`` (section ``sensitivity``: operating
points, per variant x method the recall and PR-AUC curves, and ``table``: the magnitude
reaching 0.9 event recall, recall and PR-AUC at magnitude 1). ``--plot PATH`` also draws
the curves.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from common import write_results

from iot_fed.evaluation.benchmark import METHODS, DetectionBenchConfig
from iot_fed.evaluation.sensitivity import SweepConfig, run_sensitivity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny: 6 motes, 1 day, 1 round")
    ap.add_argument("--motes", type=int, default=None)
    ap.add_argument("--days", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--window", type=int, default=None, help="the model's window (readings)")
    ap.add_argument("--seed", type=int, default=None, help="data, fault and model seed")
    ap.add_argument("--magnitudes", default=None, help="comma-separated, increasing")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--rate", type=float, default=None, help="share of test rows per variant")
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--section", default="sensitivity", help="the JSON section to write")
    args = ap.parse_args()

    bench = DetectionBenchConfig(methods=tuple(args.methods.split(",")))
    cfg = SweepConfig(bench=bench)
    if args.quick:
        bench = replace(bench, motes=6, days=1.0, rounds=1, local_epochs=1)
        cfg = replace(cfg, magnitudes=(0.25, 0.5, 1.0, 2.0))
    for k in ("motes", "days", "rounds", "window", "seed"):
        if getattr(args, k) is not None:
            bench = replace(bench, **{k: getattr(args, k)})
    cfg = replace(cfg, bench=bench)
    if args.magnitudes:
        cfg = replace(cfg, magnitudes=tuple(float(m) for m in args.magnitudes.split(",")))
    if args.rate is not None:
        cfg = replace(cfg, rate=args.rate)
    results, md = run_sensitivity(cfg)
    print(f"\n# Sensitivity sweep ({results['seconds']} s)\n\n{md}")
    if args.plot is not None:
        from iot_fed.evaluation.plots import plot_sensitivity

        print(f"plot: {plot_sensitivity(results, args.plot)}")
    write_results("sensitivity", {args.section: results}, quick=args.quick)


if __name__ == "__main__":
    main()
