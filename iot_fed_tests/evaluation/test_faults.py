"""Fault injectors: exact positions, exact rates, determinism, physical patterns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iot_fed.evaluation.faults import (
    FAULT_TYPES,
    FaultConfig,
    dying_battery,
    inject_faults,
)
from iot_fed.readings import CHANNELS
from iot_fed_tests.evaluation.helpers import make_frame

SHORT = {"stuck": 20, "drift": 30, "bias": 20, "noise": 10, "low_voltage": 50}


def changed(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    return (a[list(CHANNELS)].to_numpy() != b[list(CHANNELS)].to_numpy()).any(axis=1)


def test_exact_rates_and_disjoint_types(frame: pd.DataFrame) -> None:
    rates = {
        "spike": 0.013,
        "stuck": 0.02,
        "drift": 0.031,
        "bias": 0.017,
        "noise": 0.009,
        "low_voltage": 0.04,
    }
    inj = inject_faults(frame, FaultConfig(rates=rates, segment_length=SHORT), seed=1)
    n = len(frame)
    assert inj.counts() == {t: int(round(r * n)) for t, r in rates.items()}
    assert (inj.labels.to_numpy().sum(axis=1) <= 1).all()  # never two types on one row
    assert inj.any.sum() == sum(inj.counts().values())


def test_exactly_the_labelled_rows_are_modified(frame: pd.DataFrame) -> None:
    inj = inject_faults(frame, FaultConfig(segment_length=SHORT), seed=2)
    mod = changed(inj.frame, frame)
    lab = inj.labels
    assert not (mod & ~inj.any).any()  # nothing outside the labels changed
    for t in FAULT_TYPES:
        if t != "stuck":
            assert mod[lab[t].to_numpy()].all(), t
    # stuck rows hold one value per event, equal to the reading just before the segment
    s = inj.frame.assign(stuck=lab["stuck"]).sort_values(["moteid", "ts"])
    orig = frame.loc[s.index]
    for ev in (e for e in inj.events if e["type"] == "stuck"):
        rows = s[s["moteid"] == ev["moteid"]]
        o = orig[orig["moteid"] == ev["moteid"]]
        a = ev["position"] - int(np.flatnonzero(s["moteid"].to_numpy() == ev["moteid"])[0])
        seg = rows[ev["channel"]].to_numpy()[a : a + ev["length"]]
        assert rows["stuck"].to_numpy()[a : a + ev["length"]].all()
        assert (seg == o[ev["channel"]].to_numpy()[a - 1]).all()


def test_labels_and_label_column(frame: pd.DataFrame) -> None:
    inj = inject_faults(frame, FaultConfig(segment_length=SHORT), seed=3)
    assert inj.labels.index.equals(frame.index)
    assert inj.frame.index.equals(frame.index)
    ft = inj.fault_type
    assert (inj.frame["label"].fillna("").to_numpy() == ft).all()
    for t in FAULT_TYPES:
        assert ((ft == t) == inj.labels[t].to_numpy()).all()


def test_segments_stay_inside_one_device(frame: pd.DataFrame) -> None:
    inj = inject_faults(frame, FaultConfig(segment_length=SHORT), seed=4)
    s = inj.labels.assign(moteid=frame["moteid"], ts=frame["ts"]).sort_values(["moteid", "ts"])
    moteid = s["moteid"].to_numpy()
    for ev in inj.events:
        seg = moteid[ev["position"] : ev["position"] + ev["length"]]
        assert (seg == ev["moteid"]).all()
        assert s[ev["type"]].to_numpy()[ev["position"] : ev["position"] + ev["length"]].all()


def test_low_voltage_pattern_at_device_tails(frame: pd.DataFrame) -> None:
    cfg = FaultConfig(rates={"low_voltage": 0.05}, segment_length={"low_voltage": 60})
    inj = inject_faults(frame, cfg, seed=5)
    f = inj.frame.assign(lv=inj.labels["low_voltage"]).sort_values(["moteid", "ts"])
    lv = f[f["lv"]]
    assert len(lv) == round(0.05 * len(frame))
    assert (lv["temperature"] > 100).all() and (lv["humidity"] < 0).all()
    assert (lv["voltage"] < 2.3).all()
    for _, g in f.groupby("moteid"):
        flags = g["lv"].to_numpy()
        if flags.any():  # one contiguous run that ends at the device's last reading
            first = int(np.argmax(flags))
            assert flags[first:].all()


def test_low_voltage_on_a_single_device_grows_the_tail() -> None:
    one = make_frame(motes=1, n=600)
    cfg = FaultConfig(
        rates={"low_voltage": 0.2},
        segment_length={"low_voltage": 10},
        low_voltage_channels=("temperature", "humidity"),
    )
    inj = inject_faults(one, cfg, seed=0)
    assert inj.counts()["low_voltage"] == 120
    assert (inj.frame["voltage"] == one["voltage"]).all()  # voltage channel left alone


def test_deterministic_and_input_untouched(frame: pd.DataFrame) -> None:
    before = frame.copy()
    a = inject_faults(frame, FaultConfig(segment_length=SHORT), seed=7)
    b = inject_faults(frame, FaultConfig(segment_length=SHORT), seed=7)
    c = inject_faults(frame, FaultConfig(segment_length=SHORT), seed=8)
    pd.testing.assert_frame_equal(frame, before)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    pd.testing.assert_frame_equal(a.labels, b.labels)
    assert not a.labels.equals(c.labels)


def test_zero_rates_change_nothing(frame: pd.DataFrame) -> None:
    inj = inject_faults(frame, FaultConfig(rates={}), seed=0)
    assert not inj.any.any()
    assert not changed(inj.frame, frame).any()


@pytest.mark.parametrize("rates", [{"bogus": 0.1}, {"spike": -0.1}, {"spike": 0.6, "bias": 0.6}])
def test_bad_rates_rejected(rates: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FaultConfig(rates=rates)


def test_impossible_placement_raises() -> None:
    tiny = make_frame(motes=2, n=30)
    with pytest.raises(ValueError, match="cannot place"):
        inject_faults(tiny, FaultConfig(rates={"drift": 0.95}, segment_length={"drift": 25}))


def test_dying_battery_marks_exact_tails(frame: pd.DataFrame) -> None:
    out, mask = dying_battery(frame, [2], 0.25, seed=0)
    dev = frame["moteid"].to_numpy() == 2
    assert mask.sum() == round(0.25 * dev.sum()) and not mask[~dev].any()
    assert (changed(out, frame) == mask).all()
    tail_start = frame.loc[mask, "ts"].min()
    assert (frame.loc[dev & ~mask, "ts"] < tail_start).all()
    assert (out.loc[mask, "temperature"] > 100).all()
