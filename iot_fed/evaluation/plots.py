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
