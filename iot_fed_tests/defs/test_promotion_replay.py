"""The promotion replay in the blocking check: a candidate is replayed on the fleet's
newest held-out readings (real MongoDB, rounds run through Dagster)."""

from __future__ import annotations

import pytest

from iot_fed.config import get_settings
from iot_fed.federation import global_round
from iot_fed.federation.bundles import load_promoted
from iot_fed.federation.health import last_refused, promotion_verdict
from iot_fed.federation.replay_check import ReplayConfig, read_replay, replay_verdict
from iot_fed.store import repository as repo
from iot_fed.store.live import global_model_versions
from iot_fed.store.repository import readings_to_docs, upsert_readings
from iot_fed_tests.defs.helpers import diurnal_readings, run_devices
from iot_fed_tests.defs.test_models import aggregate, first_round

PER_MOTE = 1000  # 100 held-out readings per device, ~0.36 device-day each


@pytest.fixture
def replay_env(pipeline_env, monkeypatch):
    """A tiny fleet's replay may refuse: 3 devices x 100 held-out readings are enough."""
    monkeypatch.setenv("IOT_FED_PROMOTION_MIN_REPLAY_READINGS", "200")
    get_settings.cache_clear()
    return pipeline_env


def second_round(env, instance, monkeypatch, threshold: float | None):
    """New readings, trained, then aggregated into a version whose thresholds are all
    ``threshold`` (set after the round's calibration and verdict, as a broken one would;
    None: as calibrated)."""
    real = global_round.server_update

    def tampered(*args, **kwargs):
        out = real(*args, **kwargs)
        b = out.bundle
        b.threshold = threshold
        b.device_thresholds = dict.fromkeys(b.device_thresholds, threshold)
        return out

    if threshold is not None:
        monkeypatch.setattr(global_round, "server_update", tampered)
    upsert_readings(env["db"], readings_to_docs(diurnal_readings(3, 300, start_epoch=PER_MOTE)))
    assert run_devices(instance, env["resources"], ["1", "2", "3"]).success
    return aggregate(instance, env["resources"], raise_on_error=False)


def test_first_version_has_only_the_alarm_rate_check_and_passes(replay_env, instance):
    env, db = replay_env, replay_env["db"]
    first_round(env, instance, PER_MOTE)
    v1 = repo.promoted_global_model(db)
    assert v1["version"] == 1, "a sane first version is promoted"
    replay = v1["metrics"]["replay"]
    assert replay["ok"] and replay["devices_judged"] == 3
    assert replay["held_out_readings"] == 300 and replay["alarm_rate"] is not None
    assert replay["alarm_rate"] <= replay["alarm_limit"] == 3.0
    assert replay["f1"] is None and "no promoted version: F1 not compared" in replay["skipped"]


def test_a_sane_second_version_is_compared_and_promoted(replay_env, instance, monkeypatch):
    env, db = replay_env, replay_env["db"]
    first_round(env, instance, PER_MOTE)
    res = second_round(env, instance, monkeypatch, threshold=None)
    assert res.success
    (check,) = res.get_asset_check_evaluations()
    meta = check.metadata
    assert check.passed and meta["replay_ok"].value and meta["replay_skipped"].text == "none"
    assert meta["replay_against_version"].value == 1
    assert float(meta["replay_f1"].text) >= float(meta["replay_promoted_f1"].text) - 0.2
    assert repo.promoted_global_model(db)["version"] == 2
    assert last_refused(global_model_versions(db)) is None


def test_a_flooding_version_is_refused_with_its_reason(replay_env, instance, monkeypatch):
    env, db = replay_env, replay_env["db"]
    first_round(env, instance, PER_MOTE)
    res = second_round(env, instance, monkeypatch, threshold=1e-6)
    assert not res.success, "the failed blocking check stops the run"
    (check,) = res.get_asset_check_evaluations()
    assert not check.passed
    meta = check.metadata
    assert "alarm rate" in meta["replay_reason"].text
    assert "over 3 x the budget of 1" in meta["verdict"].text
    assert float(meta["replay_flagged_rate"].text) > 1000, "every reading flagged"
    assert "version 2 refused: replay: alarm rate" in check.description
    v2 = repo.get_global_model(db, 2)
    ok, why = promotion_verdict(v2)
    assert not ok and why.startswith("replay: alarm rate")
    assert v2["metrics"]["verdict"]["ok"], "the round's own verdict passed"
    assert repo.promoted_global_model(db)["version"] == 1
    refused = last_refused(global_model_versions(db))  # what /api/status shows
    assert refused["version"] == 2 and refused["reason"] == why
    assert refused["replay"]["flagged_rate"] > 1000


def test_too_few_held_out_readings_skip_the_alarm_rate_check(pipeline_env, instance, monkeypatch):
    """With the default minimum (1000 held-out readings) a tiny fleet is not refused on a
    noisy device-day extrapolation; the check says it skipped."""
    env = pipeline_env
    first_round(env, instance, PER_MOTE)
    res = second_round(env, instance, monkeypatch, threshold=1e-6)
    assert res.success
    (check,) = res.get_asset_check_evaluations()
    assert check.passed
    assert (
        "fewer than 1000: alarm rate and F1 not enforced" in check.metadata["replay_skipped"].text
    )
    assert float(check.metadata["replay_flagged_rate"].text) > 1000, "measured all the same"


def test_a_version_blind_to_faults_is_refused_on_f1(replay_env, instance, monkeypatch):
    env, db = replay_env, replay_env["db"]
    first_round(env, instance, PER_MOTE)
    res = second_round(env, instance, monkeypatch, threshold=1e9)  # flags nothing itself
    (check,) = res.get_asset_check_evaluations()
    assert not check.passed
    meta = check.metadata
    assert "F1" in meta["verdict"].text and "below the promoted version 1's" in meta["verdict"].text
    assert float(meta["replay_f1"].text) < float(meta["replay_promoted_f1"].text) - 0.2
    assert repo.promoted_global_model(db)["version"] == 1


def test_f1_comparison_is_deterministic_and_accepts_an_equal_version(replay_env, instance):
    """The promoted version against itself: same faults (fixed seed), same F1, accepted."""
    env, db = replay_env, replay_env["db"]
    first_round(env, instance, PER_MOTE)
    doc, bundle = load_promoted(db)
    devices = read_replay(db, [1, 2, 3], 2000)
    cfg = ReplayConfig(min_readings=200)
    a = replay_verdict(bundle, 2, devices, cfg, promoted=(1, bundle))
    b = replay_verdict(bundle, 2, devices, cfg, promoted=(1, bundle))
    assert a.ok and a.f1 == a.promoted_f1 == b.f1 and a.fault_readings > 0
    assert a.against_version == 1


def test_the_replay_read_is_the_newest_readings_bounded_by_the_training(replay_env, instance):
    env, db = replay_env, replay_env["db"]
    first_round(env, instance, PER_MOTE)  # trained through epoch 999 (held-out ones aside)
    assert repo.trained_through(db) == {1: 999, 2: 999, 3: 999}
    # 50 readings landed since, not trained on yet: the newest 100 reach back before them
    upsert_readings(db, readings_to_docs(diurnal_readings(3, 50, start_epoch=PER_MOTE)))
    got = read_replay(db, [1, 2, 3], 100)
    assert [d.moteid for d in got] == [1, 2, 3]
    for d in got:
        assert d.epochs.tolist() == list(range(950, 1050))
        assert d.held.sum() == 10 and (d.epochs[d.held] % 10 == 0).all()
