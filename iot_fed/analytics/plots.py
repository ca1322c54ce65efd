"""PNG plot of an evaluation report: error and anomaly rate per device, global vs local."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def plot_per_device(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Two panels (reconstruction MSE, anomaly rate) with global/local bars per device."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    motes = table["moteid"].astype(str).tolist()
    x = np.arange(len(motes))
    width = 0.4
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.3 * len(motes) + 2), 7), sharex=True)
    panels = (("mse", "reconstruction MSE (std. units)"), ("anomaly_rate", "anomaly rate"))
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for offset, model in ((-width / 2, "global"), (width / 2, "local")):
            values = pd.to_numeric(table[f"{model}_{metric}"], errors="coerce").to_numpy(float)
            ax.bar(x + offset, np.nan_to_num(values), width, label=model)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_yscale("symlog", linthresh=1e-2)
    axes[0].legend()
    axes[0].set_title(title)
    axes[1].set_xticks(x, motes, rotation=90, fontsize=7)
    axes[1].set_xlabel("device (moteid)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
