"""The sensitivity sweep: fault magnitude and shapes, the alert-budget operating point, and
the sweep end to end on a tiny configuration (statistical baselines only: seconds)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iot_fed.analytics.incidents import advance
from iot_fed.evaluation import benchmark as bm
from iot_fed.evaluation.faults import FaultConfig, inject_faults
from iot_fed.evaluation.operating_point import at_budget, count_incidents, one_incident_share
from iot_fed.evaluation.plots import plot_sensitivity
from iot_fed.evaluation.report import sensitivity_markdown
from iot_fed.evaluation.sensitivity import (
    VARIANTS,
    SweepConfig,
    SweepInputs,
    fit_methods,
    magnitude_reaching,
    sweep,
)
from iot_fed.readings import CHANNELS
from iot_fed_tests.evaluation.helpers import make_frame

SHORT = {"stuck": 20, "drift": 30, "bias": 20, "noise": 10, "low_voltage": 50}


def _inject(frame: pd.DataFrame, kind: str, **kw: object) -> tuple[np.ndarray, np.ndarray]:
    """(clean, injected) values of the hit channel on the kind's rows, by event."""
    cfg = FaultConfig(
        rates={kind: 0.05},
        segment_length=SHORT,
        channels=("humidity",),
        **kw,  # type: ignore[arg-type]
    )
    inj = inject_faults(frame, cfg, seed=3)
    rows = inj.labels[kind].to_numpy()
    return frame["humidity"].to_numpy()[rows], inj.frame["humidity"].to_numpy()[rows]


@pytest.mark.parametrize("kind", ["spike", "bias", "drift", "noise"])
def test_magnitude_scales_the_error_and_one_is_the_original(frame: pd.DataFrame, kind: str) -> None:
    clean, one = _inject(frame, kind)
    _, default = _inject(frame, kind, magnitude=1.0)
    _, double = _inject(frame, kind, magnitude=2.0)
    assert np.array_equal(one, default)
    np.testing.assert_allclose(double - clean, 2.0 * (one - clean), rtol=1e-9, atol=1e-9)


def test_shapes(frame: pd.DataFrame) -> None:
    clean, add = _inject(frame, "drift")
    _, mul = _inject(frame, "drift", shapes={"drift": "multiplicative"})
    # a gain error: the error over the reading is a ramp, not the error itself
    assert not np.allclose(mul - clean, add - clean)
    assert np.abs(mul - clean).max() > 0
    clean, daily = _inject(frame, "noise")
    _, jitter = _inject(frame, "noise", shapes={"noise": "jitter"})
    # same draws, scaled by the jitter (reading-to-reading) instead of the daily spread
    assert (np.abs(jitter - clean) < np.abs(daily - clean)).all()
    inj = inject_faults(
        frame,
        FaultConfig(rates={"stuck": 0.05}, segment_length=SHORT, shapes={"stuck": "value"}),
        seed=3,
    )
    s = inj.frame.sort_values(["moteid", "ts"])
    o = frame.loc[s.index]
    for e in inj.events:
        seg = s[e["channel"]].to_numpy()[e["position"] : e["position"] + e["length"]]
        before = o[e["channel"]].to_numpy()[e["position"] - 1]
        assert np.unique(seg).size == 1 and seg[0] != before
    short = inject_faults(
        frame, FaultConfig(rates={"stuck": 0.05}, segment_length=SHORT, magnitude=0.5), seed=3
    )
    assert {e["length"] for e in short.events} <= {10}
    with pytest.raises(ValueError, match="shapes"):
        FaultConfig(shapes={"drift": "sideways"})


def test_incident_count_is_advance_rule() -> None:
    rng = np.random.default_rng(0)
    ts = np.cumsum(rng.integers(20_000, 2_000_000, 400))
    flags = rng.random(400) < 0.2
    frame = pd.DataFrame(
        {
            "epoch": np.arange(400),
            "ts_ms": ts,
            "flag": flags,
            "score": 2.0,
            "threshold": 1.0,
            "reason": None,
            "model_version": 1,
            **{f"err_{c}": 0.0 for c in CHANNELS},
        }
    )
    _, docs = advance(1, None, frame, 1800.0)
    scores = flags.astype(float)
    assert count_incidents(scores, 0.5, np.ones(400), ts, 1800.0) == len(docs)


def test_operating_point_keeps_the_budget_and_refuses_a_flood() -> None:
    rng = np.random.default_rng(1)
    n, day = 2800, 86_400_000
    device = np.repeat([1, 2], n)
    ts = np.tile(np.arange(n) * (day // n), 2)
    scores = rng.random(2 * n)
    op = at_budget(scores, device, ts, 1800.0, incidents_per_device_day=3.0)
    budget = 3.0 * op.device_days
    assert op.bound_by == "incidents" and 0 < op.incidents <= budget
    assert op.incidents == count_incidents(scores, op.threshold, device, ts, 1800.0)
    # one flag more (the reading at the threshold) breaks the budget
    assert count_incidents(scores, op.threshold - 1e-12, device, ts, 1800.0) > budget
    # constant scores: flagging all would be 2 incidents, within budget, but a flood
    flat = at_budget(np.zeros(2 * n), device, ts, 1800.0, incidents_per_device_day=3.0)
    assert flat.bound_by == "flagged" and flat.flagged == 0


def test_one_incident_share_counts_misses_splits_and_tails() -> None:
    p = 31_000  # one reading per 31 s; quiet 1800 s is 58 readings
    device = np.repeat([1, 2], 600)
    ts = np.tile(np.arange(600) * p, 2)
    ev = [
        {"position": 100, "length": 30},  # one incident
        {"position": 300, "length": 30},  # missed
        {"position": 700, "length": 30},  # split in two (device 2)
        {"position": 1000, "length": 30},  # a tail of alarms after it
    ]
    flags = np.zeros(1200, bool)
    flags[[100, 110, 129]] = True  # 10 and 19 readings apart: one incident
    flags[[700, 790]] = True  # 90 readings apart: two incidents
    flags[[1000, 1109]] = True  # the second 80 readings after the episode's end
    share = one_incident_share(flags, ev, device, ts, 1800.0)
    assert share == pytest.approx(1 / 4)
    assert one_incident_share(flags, ev[:1], device, ts, 1800.0) == 1.0
    # another fault's episode just before opened the incident this one extends: one
    flags[80] = True
    other = [{"position": 80, "length": 5}]
    assert one_incident_share(flags, ev[:1], device, ts, 1800.0, other) == 1.0
    flags[140] = True  # a clean reading flagged 11 after: joins, still one incident
    flags[200] = True  # 71 after: a tail of alarms
    assert one_incident_share(flags, ev[:1], device, ts, 1800.0, other) == 0.0
    assert one_incident_share(flags, [], device, ts, 1800.0) is None


def test_magnitude_reaching() -> None:
    m = [0.1, 0.5, 1.0, 2.0]
    assert magnitude_reaching(m, [0.0, 0.5, 1.0, 1.0], 0.9) == pytest.approx(0.9)
    # from the last run at or above the target: a lucky small magnitude does not count
    assert magnitude_reaching(m, [0.95, 0.5, 0.7, 1.0], 0.9) == pytest.approx(1.0 + 2 / 3)
    assert magnitude_reaching(m, [1.0, 1.0, 1.0, 1.0], 0.9) == 0.1
    assert magnitude_reaching(m, [0.0, 0.5, 1.0, 0.8], 0.9) is None


def test_sweep_end_to_end_on_a_tiny_config(tmp_path: Path) -> None:
    b = bm.DetectionBenchConfig(
        window=8,
        baseline_window=20,
        min_rows_per_device=50,
        methods=("zscore", "mad"),
        faults=FaultConfig(segment_length={**SHORT, "stuck": 8, "bias": 8}),
    )
    frame = make_frame(motes=3, n=1000)
    p = bm.prepare(frame, b, replace(b.faults, rates={}))
    scorers = fit_methods(p, b)
    scorers["nothing"] = lambda t: np.zeros(len(t.frame))  # detects nothing
    assert set(scorers) == {"zscore", "mad", "nothing"}
    cfg = SweepConfig(bench=b, magnitudes=(0.3, 1.0, 3.0), rate=0.03, incidents_per_device_day=5)
    res = sweep(p, scorers, cfg)
    json.dumps(res)
    assert set(res["curves"]) == set(VARIANTS)
    for op in res["operating_points"].values():
        assert op["incidents_per_device_day"] <= 5.0 and op["flagged_per_device_day"] <= 28.0
    rows = {(r["variant"], r["method"]): r for r in res["table"]}
    for v in VARIANTS:
        c = res["curves"][v]["nothing"]
        assert len(c["recall"]) == 3 and all(n > 0 for n in c["n_events"]), v
        assert c["recall"] == [0.0, 0.0, 0.0], v
        assert rows[(v, "nothing")]["magnitude_at_target"] is None
    # same events, larger errors at the onset (not drift: a trailing MAD is scale-free
    # to a steep ramp, so its recall may fall as the slope grows)
    for v in ("spike", "bias"):
        r = res["curves"][v]["mad"]["recall"]
        assert r == sorted(r), (v, r)
    assert res["curves"]["spike"]["mad"]["recall"][-1] >= 0.8
    assert res["curves"]["bias"]["mad"]["recall"][-1] >= 0.9
    assert 0.3 < rows[("bias", "mad")]["magnitude_at_target"] <= 3.0
    assert rows[("spike", "mad")]["pr_auc_at_1"] > 0.5
    md = sensitivity_markdown(res)
    assert "| spike |" in md and "Magnitude reaching" in md and "never" in md
    png = plot_sensitivity(res, tmp_path / "s.png")
    assert png.stat().st_size > 1000
    # the clean rows: SweepInputs carries what every scorer needs
    assert isinstance(SweepInputs(p.test, p.test_series, p.test_feats).frame, pd.DataFrame)
