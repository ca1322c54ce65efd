"""Benchmark: anomaly-detection quality of federated vs local vs centralised vs baselines.

Not a test. ``.venv/bin/python bench/bench_detection.py [--quick] [--real PATH]``
Writes ``bench/results/detection.json`` and ``bench/results/detection.md`` (machine header,
per-fault-type precision / recall / F1 / ROC-AUC per method, failing-device F1 over rounds
per aggregation strategy). The real single-mote Intel Lab series is used when the file
exists (default: ``../shared/data/intel_lab/ild48k_single_mote_epoch_temp_humidity.csv``
next to the checkout); the product itself never reads it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from iot_fed.evaluation.benchmark import DetectionBenchConfig, run_detection_benchmark
from iot_fed.evaluation.report import machine_header, machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
REAL = ROOT.parent / "shared" / "data" / "intel_lab" / "ild48k_single_mote_epoch_temp_humidity.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="12 motes, 1.5 days, 5 rounds")
    ap.add_argument("--real", type=Path, default=REAL, help="real single-mote CSV (if present)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    cfg = DetectionBenchConfig(real_data_path=args.real)
    if args.quick:
        cfg = replace(cfg, motes=12, days=1.5, rounds=5, failing_motes=2, real_max_rows=10_000)
    if args.rounds is not None:
        cfg = replace(cfg, rounds=args.rounds)
    results, md = run_detection_benchmark(cfg)
    machine = machine_info()
    results = {"machine": machine, **results}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "detection_quick" if args.quick else "detection"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = (
        f"# Detection benchmark\n\n{machine_header(machine)}\n\n"
        f"Command: `.venv/bin/python bench/bench_detection.py"
        f"{' --quick' if args.quick else ''}` ({results['seconds']} s)\n\n{md}"
    )
    (args.out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
