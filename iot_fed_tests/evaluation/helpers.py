"""Small synthetic readings frames for the evaluation tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_frame(motes: int = 3, n: int = 1000, seed: int = 0) -> pd.DataFrame:
    """``motes`` devices x ``n`` readings each, shuffled rows, diurnal temperature."""
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp("2004-03-01", tz="UTC") + pd.to_timedelta(np.arange(n) * 31, unit="s")
    parts = []
    for m in range(1, motes + 1):
        hod = (np.arange(n) * 31 / 3600) % 24
        temp = 20 + 3 * np.sin(2 * np.pi * hod / 24) + rng.normal(0, 0.1, n)
        parts.append(
            pd.DataFrame(
                {
                    "ts": ts,
                    "epoch": np.arange(1, n + 1),
                    "moteid": m,
                    "temperature": temp,
                    "humidity": 60 - temp + rng.normal(0, 0.3, n),
                    "light": rng.uniform(0, 500, n),
                    "voltage": 2.7 - np.arange(n) * 1e-5 + rng.normal(0, 0.002, n),
                    "label": None,
                }
            )
        )
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)
