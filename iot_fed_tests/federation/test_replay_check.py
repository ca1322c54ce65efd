"""The promotion replay's verdict on given readings (pure: no services)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from iot_fed.federation.replay_check import ReplayConfig, Replayed, replay_verdict
from iot_fed.fl.holdout import held_out
from iot_fed.fl.serialization import ModelBundle
from iot_fed.readings import CHANNELS, epoch_ms
from iot_fed_tests.analytics.helpers import make_bundle, make_readings

CFG = ReplayConfig(min_readings=200)


def replayed(df: pd.DataFrame) -> list[Replayed]:
    out = []
    for m, g in df.sort_values("epoch").groupby("moteid"):
        ep = g["epoch"].to_numpy(np.int64)
        vals = g[list(CHANNELS)].to_numpy(np.float64)
        out.append(Replayed(int(m), ep, epoch_ms(g["ts"]), vals, held_out(ep)))
    return out


@pytest.fixture(scope="module")
def fleet() -> tuple[list[Replayed], ModelBundle]:
    """4 devices x 1500 clean readings (~0.5 device-day each) and a version calibrated on
    them at their maximum score (sane: it flags next to nothing of them)."""
    df = make_readings(motes=4, per_mote=1500, seed=5)
    df = df[df["label"].isna()]  # the helper's spikes out: clean readings
    return replayed(df), make_bundle(df, seed=1, quantile=1.0)


def with_thresholds(bundle: ModelBundle, thr: float) -> ModelBundle:
    b = copy.deepcopy(bundle)
    b.threshold = thr
    b.device_thresholds = dict.fromkeys(b.device_thresholds, thr)
    return b


def test_a_sane_version_passes_and_says_what_it_measured(fleet):
    devices, sane = fleet
    v = replay_verdict(sane, 2, devices, CFG, promoted=(1, sane))
    assert v.ok and v.reason == "ok", v
    assert v.devices_judged == 4 and v.held_out_readings == sum(d.held.sum() for d in devices)
    assert v.alarm_rate is not None and v.alarm_rate <= CFG.alarm_limit
    assert v.f1 == v.promoted_f1 and v.fault_readings > 0 and v.skipped == []


def test_a_flood_is_refused_on_alarm_rate_even_as_one_incident_per_device(fleet):
    devices, sane = fleet
    v = replay_verdict(with_thresholds(sane, 1e-9), 2, devices, CFG)
    assert not v.ok
    assert v.incidents == 4, "every reading flagged: one long incident per device"
    assert v.flagged_rate is not None and v.flagged_rate > 1000
    assert "flagged readings/device-day" in v.reason and "over 3 x the budget of 1" in v.reason
    assert "no promoted version: F1 not compared" in v.skipped and v.f1 is None


def test_a_version_blind_to_faults_is_refused_on_f1(fleet):
    devices, sane = fleet
    v = replay_verdict(with_thresholds(sane, 1e9), 2, devices, CFG, promoted=(1, sane))
    assert not v.ok and v.reason.startswith("F1 ")
    assert v.f1 < v.promoted_f1 - CFG.max_f1_drop
    assert v.against_version == 1


def test_too_few_held_out_readings_measure_but_do_not_refuse(fleet):
    devices, sane = fleet
    cfg = ReplayConfig(min_readings=10_000)
    v = replay_verdict(with_thresholds(sane, 1e-9), 2, devices, cfg, promoted=(1, sane))
    assert v.ok and v.flagged_rate > 1000 and v.f1 < v.promoted_f1
    assert "fewer than 10000: alarm rate and F1 not enforced" in v.skipped[0]


def test_learning_devices_are_not_judged(fleet):
    devices, sane = fleet
    b = copy.deepcopy(sane)
    b.device_thresholds = {}
    v = replay_verdict(b, 2, devices, CFG)
    assert v.ok and v.devices_judged == 0 and v.devices_learning == 4
    assert v.held_out_readings == 0 and v.alarm_rate is None
