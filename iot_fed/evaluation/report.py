"""Markdown tables for the detection benchmark results (see ``benchmark.py``)."""

from __future__ import annotations

import math
from typing import Any

from iot_fed.evaluation.faults import FAULT_TYPES

TYPES = (*FAULT_TYPES, "all")


def _f(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def methods_table(methods: dict[str, Any]) -> str:
    """One row per (method, fault type): precision, recall, F1, ROC-AUC."""
    lines = [
        "| method | fault type | n faulty | precision | recall | F1 | ROC-AUC |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, res in methods.items():
        for t in TYPES:
            m = res["metrics"].get(t)
            if m is None:
                continue
            lines.append(
                f"| {name} | {t} | {m['n_pos']} | {_f(m['precision'])} | "
                f"{_f(m['recall'])} | {_f(m['f1'])} | {_f(m.get('roc_auc'))} |"
            )
    return "\n".join(lines)


def f1_matrix(methods: dict[str, Any], key: str = "f1") -> str:
    """Compact view: methods x fault types, one metric."""
    head = "| method | " + " | ".join(TYPES) + " | seconds |"
    lines = [head, "|---|" + "---:|" * (len(TYPES) + 1)]
    for name, res in methods.items():
        cells = [_f(res["metrics"].get(t, {}).get(key)) for t in TYPES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {res.get('seconds', '-')} |")
    return "\n".join(lines)


def failing_table(fd: dict[str, Any]) -> str:
    """F1 per round, one column per run (clean/<strategy>, failing/<strategy>)."""
    runs = fd["runs"]
    names = list(runs)
    n = max(len(r["f1"]) for r in runs.values())
    lines = ["| round | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for i in range(n):
        cells = [_f(runs[k]["f1"][i]) if i < len(runs[k]["f1"]) else "-" for k in names]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    lines.append(
        "| final ROC-AUC | " + " | ".join(_f(runs[k]["roc_auc"][-1]) for k in names) + " |"
    )
    return "\n".join(lines)


def detection_markdown(results: dict[str, Any]) -> str:
    out: list[str] = []
    for name, d in results["datasets"].items():
        if "skipped" in d:
            out.append(f"### {name}\n\nskipped: {d['skipped']}\n")
            continue
        note = f"\n{d['note']}\n" if "note" in d else ""
        out.append(
            f"### {name}: {d['devices']} devices, {d['train_rows']} train / "
            f"{d['test_rows']} test rows, injected {d['injected']}\n{note}"
        )
        out.append("F1 per fault type:\n\n" + f1_matrix(d["methods"]) + "\n")
        out.append("ROC-AUC per fault type:\n\n" + f1_matrix(d["methods"], "roc_auc") + "\n")
        out.append("All metrics:\n\n" + methods_table(d["methods"]) + "\n")
    fd = results.get("failing_device")
    if fd:
        out.append(
            f"### Failing devices: motes {fd['failing_motes']} (last "
            f"{fd['failing_fraction']:.0%} of their training window = dying-battery "
            f"garbage, {fd['garbage_rows']} rows), trim_ratio {fd['trim_ratio']}; "
            f"global-model F1 on {fd['evaluated_on']}\n"
        )
        out.append(failing_table(fd) + "\n")
    return "\n".join(out)


def machine_info() -> dict[str, Any]:
    """Cores, platform and library versions for a benchmark header."""
    import datetime as dt
    import os
    import platform
    from importlib import metadata

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        **{
            pkg: version(pkg)
            for pkg in ("jax", "jaxlib", "numpy", "pandas", "optax", "flwr", "ray")
        },
    }


def machine_header(info: dict[str, Any]) -> str:
    libs = ", ".join(
        f"{k} {v}"
        for k, v in info.items()
        if k not in ("date", "cpu_count", "platform", "processor", "python") and v
    )
    return (
        f"Machine: {info['cpu_count']} cores ({info['processor']}), {info['platform']}; "
        f"Python {info['python']}; {libs}; run {info['date']}"
    )
