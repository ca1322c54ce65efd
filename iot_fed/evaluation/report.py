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


def overall_table(methods: dict[str, Any]) -> str:
    lines = [
        "| method | precision | recall | F1 | F1 (clean context) | PR-AUC | ROC-AUC "
        "| false alarms / device-day | same, clean context | same, no faults injected | s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in methods.items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped'][:60]} ||||||||")
            continue
        o = r["overall"]
        lines.append(
            f"| {name} | {_f(o['precision'])} | {_f(o['recall'])} | {_f(o['f1'])} | "
            f"{_f(o['f1_clean_context'])} | {_f(o['pr_auc'])} | {_f(o['roc_auc'])} | "
            f"{_f(r['false_alarms_per_device_day'], 2)} | "
            f"{_f(r['false_alarms_per_device_day_clean_context'], 2)} | "
            f"{_f(r.get('false_alarms_per_device_day_no_faults'), 2)} | {r.get('seconds', '-')} |"
        )
    return "\n".join(lines)


def per_type_table(methods: dict[str, Any], key: str, digits: int = 3) -> str:
    lines = ["| method | " + " | ".join(FAULT_TYPES) + " |", "|---|" + "---:|" * len(FAULT_TYPES)]
    for name, r in methods.items():
        if "skipped" in r:
            continue
        cells = [_f(r["per_type"][t].get(key), digits) for t in FAULT_TYPES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detection_markdown(results: dict[str, Any]) -> str:
    d, m = results["dataset"], results["methods"]
    out = [
        f"### {d['devices']} devices, {d['train_rows']} train / {d['test_rows']} test rows, "
        f"injected rows {d['injected_rows']}\n",
        "Overall (flag = score above the device's calibrated threshold):\n\n"
        + overall_table(m)
        + "\n",
        "Event recall per fault type:\n\n" + per_type_table(m, "event_recall") + "\n",
        "Median detection delay (readings) per fault type:\n\n"
        + per_type_table(m, "median_delay", 1)
        + "\n",
        "Reading recall per fault type:\n\n" + per_type_table(m, "reading_recall") + "\n",
    ]
    rb = results.get("robust")
    if rb:
        cols = list(next(iter(rb["f1"].values())))
        lines = ["| strategy | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for s, v in rb["f1"].items():
            lines.append(f"| {s} | " + " | ".join(_f(v[c]) for c in cols) + " |")
        out.append(
            "Robustness, F1 on the healthy motes (failing: half dying battery, half "
            "stuck sensors):\n\n" + "\n".join(lines) + "\n"
        )
    dp = results.get("dp")
    if dp:
        out.append(
            f"DP (clip {dp['clip_norm']}), F1 by noise multiplier: "
            + ", ".join(f"{k}: {_f(v)}" for k, v in dp["f1"].items())
            + "\n"
        )
    ev = results.get("engine_vs_bare")
    if ev:
        out.append(
            f"Engine client update {ev['engine_s']} s vs bare jit(vmap) {ev['bare_s']} s: "
            f"**{ev['ratio']}x** ({ev['devices']} devices x {ev['rows']} rows)\n"
        )
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


def _m90(x: float | None, smallest: float) -> str:
    if x is None:
        return "never"
    return f"<={smallest:g}" if x <= smallest else f"{x:.2f}"


def sensitivity_markdown(results: dict[str, Any]) -> str:
    """The sweep's tables: operating points, then per variant x method the magnitude
    reaching the target recall, recall, PR-AUC and the one-incident share at magnitude 1."""
    ops, table = results["operating_points"], results["table"]
    methods = list(ops)
    variants = list(results["curves"])
    smallest = results["magnitudes"][0]
    cell = {(r["variant"], r["method"]): r for r in table}
    out = [
        f"### Sensitivity: {results['dataset']['devices']} devices, magnitudes "
        f"{results['magnitudes']}\n",
        "Operating points (false incidents on the clean test period):\n",
        "| method | threshold | false incidents / device-day | flagged / device-day | bound by |",
        "|---|---:|---:|---:|---|",
    ]
    for m, o in ops.items():
        out.append(
            f"| {m} | {_f(o['threshold'])} | {_f(o['incidents_per_device_day'], 2)} | "
            f"{_f(o['flagged_per_device_day'], 1)} | {o['bound_by']} |"
        )
    if results.get("skipped"):
        out.append(f"\nSkipped (extra not installed): {', '.join(results['skipped'])}")
    head = "| variant | " + " | ".join(methods) + " |\n|---|" + "---:|" * len(methods)
    for title, key, fmt in (
        (
            f"Magnitude reaching event recall {results['target_recall']}",
            "magnitude_at_target",
            lambda x: _m90(x, smallest),
        ),
        ("Event recall at magnitude 1", "recall_at_1", _f),
        ("PR-AUC at magnitude 1", "pr_auc_at_1", _f),
        ("Episodes yielding exactly one incident at magnitude 1", "one_incident_at_1", _f),
    ):
        rows = [
            f"| {v} | " + " | ".join(fmt(cell[(v, m)].get(key)) for m in methods) + " |"
            for v in variants
        ]
        out.append(f"\n{title}:\n\n{head}\n" + "\n".join(rows))
    return "\n".join(out) + "\n"
