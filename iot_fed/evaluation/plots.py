"""Score-over-time plot of the detection benchmark: a few devices, injected episodes marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {
    "spike": "tab:red",
    "stuck": "tab:purple",
    "drift": "tab:orange",
    "bias": "tab:green",
    "noise": "tab:brown",
    "low_voltage": "tab:gray",
}


def plot_scores(plot: dict[str, Any], path: Path) -> Path:
    """One panel per device: score / threshold (log scale), threshold at 1, episodes shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(len(plot), 1)
    fig, axes = plt.subplots(n, 1, figsize=(12, 2.6 * n), squeeze=False)
    for ax, (mote, d) in zip(axes[:, 0], plot.items(), strict=False):
        s = np.maximum(np.asarray(d["score"], float), 1e-3)
        ax.plot(s, lw=0.6, color="tab:blue")
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        seen = set()
        for e in d["episodes"]:
            label = None if e["type"] in seen else e["type"]
            seen.add(e["type"])
            ax.axvspan(
                e["start"],
                e["start"] + e["length"],
                color=COLORS.get(e["type"]),
                alpha=0.3,
                label=label,
            )
        ax.set_yscale("log")
        ax.set_ylabel("score / threshold")
        ax.set_title(f"mote {mote}", fontsize=9)
        ax.legend(loc="upper right", fontsize=7, ncol=6)
    axes[-1, 0].set_xlabel("test reading")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_sensitivity(results: dict[str, Any], path: Path) -> Path:
    """One panel per fault variant: event recall at the alert budget against magnitude
    (log scale), one line per method, the target recall dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    curves, mags = results["curves"], results["magnitudes"]
    n = max(len(curves), 1)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    markers = "osD^v<>"
    for ax, (variant, per) in zip(axes.flat, curves.items(), strict=False):
        for i, (method, c) in enumerate(per.items()):
            y = [float("nan") if r is None else r for r in c["recall"]]
            ax.plot(mags, y, marker=markers[i % len(markers)], ms=3.5, lw=1.1, label=method)
        ax.axhline(results["target_recall"], color="black", lw=0.8, ls="--")
        ax.axvline(1.0, color="gray", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xticks(mags, [f"{m:g}" for m in mags], fontsize=7)
        ax.minorticks_off()
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(variant, fontsize=9)
        ax.set_xlabel("magnitude (1 = the benchmark's injector)", fontsize=7)
        ax.set_ylabel("event recall", fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
