"""What every benchmark shares: where results go, the machine header, tables, percentiles.

Each benchmark writes ONE canonical file, ``bench/results/<name>.json``, made of sections
(one per part it measures). A run replaces the sections it measured and keeps the others,
so a part can be re-measured alone. ``--quick`` runs write to ``assets_data/bench-quick/``
instead: tiny configurations never overwrite the canonical figures.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iot_fed.evaluation.report import machine_header, machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
QUICK_RESULTS = ROOT / "assets_data" / "bench-quick"

__all__ = [
    "QUICK_RESULTS",
    "RESULTS",
    "ROOT",
    "machine_header",
    "machine_info",
    "median",
    "pct",
    "print_table",
    "results_path",
    "table",
    "write_results",
]


def results_path(name: str, quick: bool = False) -> Path:
    """The canonical file of benchmark ``name`` (the quick one under assets_data/)."""
    return (QUICK_RESULTS if quick else RESULTS) / f"{name}.json"


def write_results(name: str, sections: dict[str, Any], *, quick: bool = False) -> Path:
    """Replace ``sections`` in the benchmark's file, keeping its other sections.

    Each section records the command and machine it was measured with (sections of one
    file may come from different runs)."""
    path = results_path(name, quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(path.read_text()) if path.exists() else {}
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    for key, payload in sections.items():
        meta = {"command": command, "machine": machine_info(), "load_avg_1m": os.getloadavg()[0]}
        doc[key] = {**meta, **payload} if isinstance(payload, dict) else payload
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({', '.join(sections)})")
    return path


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats to 3 significant digits, None as '-'."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print(f"\n{title}\n\n{table(headers, rows)}\n", flush=True)


def pct(xs: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), None for no data."""
    if not len(xs):
        return None
    import numpy as np

    return float(np.percentile(np.asarray(xs, dtype=float), q))


def median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if len(xs) else None
