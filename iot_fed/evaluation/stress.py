"""The detection benchmark's stress runs: failing motes poisoning training (per aggregation
strategy) and the differential-privacy trade-off, both judged by F1."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from iot_fed.evaluation import methods as mt
from iot_fed.evaluation.benchmark import DetectionBenchConfig, Prepared, featurise
from iot_fed.evaluation.faults import dying_battery
from iot_fed.evaluation.metrics import binary_report
from iot_fed.fl.rounds import DeviceData
from iot_fed.readings import CHANNELS


def _stuck_sensors(frame: pd.DataFrame, motes: list[int], fraction: float) -> pd.DataFrame:
    """The last ``fraction`` of each listed mote's training rows: every channel stuck."""
    out = frame.copy()
    for m in motes:
        idx = np.flatnonzero(out["moteid"].to_numpy() == m)
        k = int(round(fraction * idx.size))
        if k:
            rows = idx[idx.size - k :]
            for c in CHANNELS:
                col = out[c].to_numpy(np.float64).copy()
                col[rows] = col[rows[0] - 1] if rows[0] > idx[0] else col[rows[0]]
                out[c] = col
    return out


def robustness(p: Prepared, cfg: DetectionBenchConfig) -> dict[str, Any]:
    """F1 on the healthy motes' test rows: clean vs 5/10 failing motes, per strategy."""
    setup = cfg.setup()
    rng = np.random.default_rng([cfg.seed, 99])
    order = [int(m) for m in rng.permutation(p.moteids)]
    results: dict[str, Any] = {}
    runs: dict[str, tuple[list[DeviceData], list[int]]] = {"clean": (p.devices, [])}
    for k in cfg.failing:
        k = min(k, len(order) - 1)
        failing = sorted(order[:k])
        half = failing[: k // 2 + k % 2]
        poisoned, _ = dying_battery(p.train, half, cfg.failing_fraction, seed=cfg.seed)
        poisoned = _stuck_sensors(poisoned, failing[len(half) :], cfg.failing_fraction)
        _, devs, _, _, _ = featurise(poisoned, p.test, setup.spec)
        runs[f"failing_{k}"] = (devs, failing)
    for strategy in cfg.strategies:
        results[strategy] = {}
        for name, (devs, failing) in runs.items():
            bundle, _ = mt.federate(devs, setup, strategy, trim_ratio=cfg.trim_ratio)
            out = set(failing)
            keep = [i for i, m in enumerate(p.moteids) if m not in out]
            s = mt.normalised_test_scores(
                bundle, [p.test_series[i] for i in keep], [p.moteids[i] for i in keep]
            )
            rows = np.concatenate(
                [np.arange(p.test_slices[i].start, p.test_slices[i].stop) for i in keep]
            )
            rep = binary_report(p.fault_type[rows] != "", ~(s <= 1.0), s)
            results[strategy][name] = round(rep["f1"] or 0.0, 4)
    return {"f1": results, "failing_motes": {n: f for n, (_, f) in runs.items()}}


def dp_tradeoff(p: Prepared, cfg: DetectionBenchConfig) -> dict[str, Any]:
    setup = cfg.setup()
    out = {}
    for z in cfg.dp_noise:
        bundle, _ = mt.federate(
            p.devices, setup, dp_clip_norm=cfg.dp_clip_norm, dp_noise_multiplier=z
        )
        s = mt.normalised_test_scores(bundle, p.test_series, p.moteids)
        out[str(z)] = round(binary_report(p.fault_type != "", ~(s <= 1.0), s)["f1"] or 0.0, 4)
    return {"clip_norm": cfg.dp_clip_norm, "f1": out}
