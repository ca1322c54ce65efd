"""Sensitivity sweep: event recall against fault magnitude, every method at one alert budget.

``run_sensitivity(config) -> (results, markdown)`` (``bench/bench_sensitivity.py`` and the
``anomaly_benchmark`` asset):

1. the detection benchmark's data and split (:func:`iot_fed.evaluation.benchmark.split`);
   every method is trained (or fitted) once on the training part;
2. each method's operating point (:mod:`iot_fed.evaluation.operating_point`): the threshold
   at which its false incidents on the clean test period (no fault injected) stay within
   ``incidents_per_device_day``; every method is judged at its own such threshold;
3. per magnitude, faults of every variant (type x shape, :data:`VARIANTS`) are injected
   into the test part (:mod:`iot_fed.evaluation.faults`, magnitude 1.0: the benchmark's
   injector), a variant's share of rows ``rate``, at most one shape of a type per
   injection; per variant and method: event recall at the operating point and PR-AUC
   (threshold-free; normal rows plus that variant's rows) and the share of episodes that
   yield exactly one incident (:func:`~iot_fed.evaluation.operating_point.one_incident_share`);
4. per variant and method: the magnitude from which event recall stays at or above
   ``target_recall`` (linear between the grid's magnitudes; None when even the largest
   misses it), recall, PR-AUC and the one-incident share at magnitude 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from iot_fed.evaluation import benchmark as bm
from iot_fed.evaluation import datasets as ds
from iot_fed.evaluation import methods as mt
from iot_fed.evaluation.faults import FAULT_TYPES, SHAPES, FaultConfig, inject_faults
from iot_fed.evaluation.metrics import average_precision, event_report
from iot_fed.evaluation.operating_point import (
    OperatingPoint,
    at_budget,
    flags_at,
    one_incident_share,
)
from iot_fed.readings import epoch_ms

VARIANTS = tuple(
    f"{t}/{shape}" if t in SHAPES else t for t in FAULT_TYPES for shape in SHAPES.get(t, (None,))
)
"""Every fault type in every shape: ``type`` or ``type/shape``."""


def _type_shape(variant: str) -> tuple[str, str | None]:
    t, _, shape = variant.partition("/")
    return t, shape or None


@dataclass(frozen=True)
class SweepConfig:
    """The sweep's knobs; ``bench`` sets data, models and baselines (its ``faults`` give
    segment lengths and the magnitude-1 ranges)."""

    bench: bm.DetectionBenchConfig = field(default_factory=bm.DetectionBenchConfig)
    magnitudes: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)
    variants: tuple[str, ...] = VARIANTS
    rate: float = 0.02
    incidents_per_device_day: float = 1.0
    flagged_per_device_day: float = 28.0
    """Flood guard (1 % of a device-day's readings): see the operating point module."""
    quiet_s: float = 1800.0
    target_recall: float = 0.9

    def __post_init__(self) -> None:
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"unknown variants {sorted(unknown)}; known: {VARIANTS}")
        if list(self.magnitudes) != sorted(set(self.magnitudes)):
            raise ValueError("magnitudes must be increasing")

    def injections(self, magnitude: float) -> list[FaultConfig]:
        """The fault configs that cover every variant at ``magnitude``: one shape per
        type in each (the default shapes first)."""
        groups: list[dict[str, str | None]] = []
        for v in self.variants:
            t, shape = _type_shape(v)
            g = next((g for g in groups if t not in g), None)
            if g is None:
                g = {}
                groups.append(g)
            g[t] = shape
        base = self.bench.faults
        return [
            replace(
                base,
                rates=dict.fromkeys(g, self.rate),
                shapes={t: s for t, s in g.items() if s is not None},
                magnitude=magnitude,
            )
            for g in groups
        ]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bench"] = self.bench.to_dict()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass
class SweepInputs:
    """One version of the test rows (clean or injected), ready for every method."""

    frame: pd.DataFrame
    series: list[mt.Series]
    feats: list[np.ndarray]


Scorer = Callable[[SweepInputs], np.ndarray]
"""A fitted method: test rows -> its per-device normalised scores (test-row order)."""


def fit_methods(p: bm.Prepared, cfg: bm.DetectionBenchConfig) -> dict[str, Scorer]:
    """Every method in ``cfg.methods`` trained once; a method whose extra is missing is
    left out (the caller reports it as skipped)."""
    setup = cfg.setup()
    ids = p.moteids
    out: dict[str, Scorer] = {}

    def bundle_scorer(bundle: Any) -> Scorer:
        return lambda t: mt.normalised_test_scores(bundle, t.series, ids)

    for name in cfg.methods:
        if name == "federated":
            out[name] = bundle_scorer(mt.federate(p.devices, setup)[0])
        elif name == "centralised":
            out[name] = bundle_scorer(mt.centralised_bundle(p.devices, setup)[0])
        elif name == "local_only":
            bundles = mt.local_only_bundles(p.devices, setup)
            out[name] = lambda t, b=bundles: np.concatenate(
                [
                    mt.normalised_test_scores(bb, [s], [m])
                    for bb, s, m in zip(b, t.series, ids, strict=True)
                ]
            )
        elif name in ("zscore", "mad"):
            out[name] = lambda t, k=name: bm.baseline_scores(k, p, cfg, t.frame)
        else:
            try:
                lib = bm.library_scorer(name, p, cfg)
            except ImportError:
                continue
            out[name] = lambda t, f=lib: f(t.feats)
    return out


def magnitude_reaching(
    magnitudes: Sequence[float], recall: Sequence[float | None], target: float
) -> float | None:
    """The magnitude from which recall stays >= ``target`` up to the largest one, linear
    between the grid point before and the first of that run; the smallest magnitude if
    the run covers the grid; None if the largest magnitude misses the target."""
    ok = [r is not None and r >= target for r in recall]
    if not ok or not ok[-1]:
        return None
    k = len(ok)
    while k > 0 and ok[k - 1]:
        k -= 1
    if k == 0:
        return float(magnitudes[0])
    m0, m1 = magnitudes[k - 1], magnitudes[k]
    r0, r1 = recall[k - 1] or 0.0, float(recall[k])  # type: ignore[arg-type]
    return float(m0 + (target - r0) / (r1 - r0) * (m1 - m0))


def _inputs(p: bm.Prepared, test: pd.DataFrame, spec: Any, features: bool) -> SweepInputs:
    feats, series, _ = bm.test_part(p.train, test, spec, features)
    return SweepInputs(test, series, feats)


def run_sensitivity(config: SweepConfig | None = None) -> tuple[dict[str, Any], str]:
    """Generate the data, fit every method, sweep (see the module docstring)."""
    cfg = config or SweepConfig()
    b = cfg.bench
    t0 = time.perf_counter()
    frame = ds.generated_readings(b.motes, b.days, b.seed, b.work_dir)
    p = bm.prepare(frame, b, replace(b.faults, rates={}))  # no fault: the clean test period
    scorers = fit_methods(p, b)
    fit_s = time.perf_counter() - t0
    results = sweep(p, scorers, cfg)
    results["skipped"] = [m for m in b.methods if m not in scorers]
    results["fit_seconds"] = round(fit_s, 2)
    results["seconds"] = round(time.perf_counter() - t0, 2)
    from iot_fed.evaluation.report import sensitivity_markdown

    return results, sensitivity_markdown(results)


def sweep(p: bm.Prepared, scorers: dict[str, Scorer], cfg: SweepConfig) -> dict[str, Any]:
    """Operating points on ``p``'s clean test rows, then every magnitude and variant."""
    t0 = time.perf_counter()
    b = cfg.bench
    test, spec = p.test, b.setup().spec
    need_feats = any(m in scorers for m in ("pyod_iforest", "river_hst"))
    device, ts = test["moteid"].to_numpy(), epoch_ms(test["ts"])
    clean = SweepInputs(test, p.test_series, p.test_feats)
    ops: dict[str, OperatingPoint] = {
        name: at_budget(
            f(clean),
            device,
            ts,
            cfg.quiet_s,
            cfg.incidents_per_device_day,
            cfg.flagged_per_device_day,
        )
        for name, f in scorers.items()
    }
    curves: dict[str, dict[str, dict[str, list[Any]]]] = {
        v: {m: {"recall": [], "pr_auc": [], "n_events": [], "one_incident": []} for m in scorers}
        for v in cfg.variants
    }
    for mag in cfg.magnitudes:
        for fc in cfg.injections(mag):
            inj = inject_faults(test, fc, seed=b.seed)
            ft = inj.fault_type
            t_in = _inputs(p, inj.frame, spec, need_feats)
            for name, f in scorers.items():
                s = f(t_in)
                flags = flags_at(s, ops[name].threshold)
                for t in fc.rates:
                    v = f"{t}/{fc.shape(t)}" if t in SHAPES else t
                    ev = event_report(flags, inj.events, [t])[t]
                    sel = (ft == "") | (ft == t)
                    c = curves[v][name]
                    c["recall"].append(ev["event_recall"])
                    c["n_events"].append(ev["n_events"])
                    c["pr_auc"].append(average_precision(ft[sel] == t, s[sel]))
                    mine = [e for e in inj.events if e["type"] == t]
                    rest = [e for e in inj.events if e["type"] != t]
                    c["one_incident"].append(
                        one_incident_share(flags, mine, device, ts, cfg.quiet_s, rest)
                    )
    mags = list(cfg.magnitudes)
    at1 = mags.index(1.0) if 1.0 in mags else None
    table = [
        {
            "variant": v,
            "method": name,
            "magnitude_at_target": magnitude_reaching(mags, c["recall"], cfg.target_recall),
            "recall_at_1": None if at1 is None else c["recall"][at1],
            "pr_auc_at_1": None if at1 is None else c["pr_auc"][at1],
            "one_incident_at_1": None if at1 is None else c["one_incident"][at1],
        }
        for v, per in curves.items()
        for name, c in per.items()
    ]
    return {
        "config": cfg.to_dict(),
        "dataset": {"devices": len(p.moteids), "train_rows": len(p.train), "test_rows": len(test)},
        "magnitudes": mags,
        "target_recall": cfg.target_recall,
        "operating_points": {k: v.to_dict() for k, v in ops.items()},
        "curves": curves,
        "table": table,
        "sweep_seconds": round(time.perf_counter() - t0, 2),
    }
