"""Benchmark: the federated window detector vs centralised, local-only and baselines.

Not a test. ``assets_data/bench-venv/bin/python bench/bench_detection.py [--quick]``
(the bench venv has the ``bench`` extra: River and PyOD baselines; with ``.venv`` they
are reported as skipped). Writes ``bench/results/detection.json``, ``detection.md`` and
the machine-readable ``bench/results/detection_summary.json``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from iot_fed.evaluation.benchmark import DetectionBenchConfig, run_detection_benchmark
from iot_fed.evaluation.report import machine_header, machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="12 motes, 1.5 days, 3 rounds")
    ap.add_argument("--motes", type=int, default=None)
    ap.add_argument("--days", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    cfg = DetectionBenchConfig()
    if args.quick:
        cfg = replace(cfg, motes=12, days=1.5, rounds=3, failing=(2, 4))
    for k in ("motes", "days", "rounds"):
        if getattr(args, k) is not None:
            cfg = replace(cfg, **{k: getattr(args, k)})
    results, md = run_detection_benchmark(cfg)
    results.pop("plot", None)
    machine = machine_info()
    results = {"machine": machine, **results}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "detection_quick" if args.quick else "detection"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    flower_path = args.out / "flower.json"
    flower = None
    if flower_path.exists():
        fj = json.loads(flower_path.read_text())
        flower = fj.get("summary")
    if not args.quick:
        (args.out / "detection_summary.json").write_text(
            json.dumps(summary(results, flower), indent=2) + "\n"
        )
    cmd = "assets_data/bench-venv/bin/python bench/bench_detection.py"
    text = (
        f"# Detection benchmark\n\n{machine_header(machine)}\n\n"
        f"Command: `{cmd}{' --quick' if args.quick else ''}` ({results['seconds']} s)\n\n{md}"
    )
    (args.out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
