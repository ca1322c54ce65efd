"""local_model -> global_model -> promoted_model on an ephemeral instance, real MongoDB."""

from __future__ import annotations

import dagster as dg

from iot_fed.config import get_settings
from iot_fed.defs.assets.models import (
    TABLE_DEVICES,
    global_model,
    outcomes_table,
    promoted_model,
)
from iot_fed.federation.outcomes import DeviceOutcome
from iot_fed.fl.serialization import ModelBundle
from iot_fed.store import repository as repo
from iot_fed.store.repository import readings_to_docs, upsert_readings
from iot_fed_tests.defs.helpers import ASSETS, diurnal_readings, run_devices


def aggregate(instance, resources, raise_on_error: bool = True):
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources=resources,
        selection=[global_model, promoted_model],
        raise_on_error=raise_on_error,
    )


def first_round(env, instance, per_mote: int) -> None:
    """Devices 1-3 with ``per_mote`` readings each: trained in one run, then aggregated."""
    upsert_readings(env["db"], readings_to_docs(diurnal_readings(3, per_mote)))
    assert run_devices(instance, env["resources"], ["1", "2", "3"]).success
    assert aggregate(instance, env["resources"]).success


def test_three_devices_one_run_then_versions_and_lineage(pipeline_env, instance):
    env, db = pipeline_env, pipeline_env["db"]
    upsert_readings(db, readings_to_docs(diurnal_readings(3, 400)))

    res = run_devices(instance, env["resources"], ["1", "2", "3"])
    assert res.success
    assert len(instance.get_runs()) == 1
    assert sorted(db.local_models.distinct("device")) == ["1", "2", "3"]
    check = res.get_asset_check_evaluations()[0]
    assert check.passed

    agg = aggregate(instance, env["resources"])
    assert agg.success
    g1 = repo.promoted_global_model(db)
    assert g1["version"] == 1 and g1["parent_version"] is None
    assert sorted(x["device"] for x in g1["lineage"]) == ["1", "2", "3"]
    assert abs(sum(x["weight"] for x in g1["lineage"]) - 1) < 1e-9

    # A second round warm-starts from version 1 and trains only on the new readings.
    upsert_readings(db, readings_to_docs(diurnal_readings(3, 200, start_epoch=400)))
    assert run_devices(instance, env["resources"], ["1", "2", "3"]).success
    lm = repo.get_local_model(db, "2")
    assert lm["version"] == 2 and lm["base_version"] == 1 and lm["n_samples"] == 180
    assert aggregate(instance, env["resources"]).success
    g2 = repo.promoted_global_model(db)
    assert g2["version"] == 2 and g2["parent_version"] == 1
    assert g2["metrics"]["val_loss"] <= g2["metrics"]["parent_val_loss"] * 1.05


def test_blocking_check_keeps_poisoned_global_model_unpromoted(pipeline_env, instance):
    env, db = pipeline_env, pipeline_env["db"]
    first_round(env, instance, 300)
    assert repo.promoted_global_model(db)["version"] == 1

    # Every device sends parameters scaled by 1e3, with plausible-looking metrics.
    for device in ("1", "2", "3"):
        doc = repo.get_local_model(db, device)
        b = ModelBundle.from_bytes(doc["params"])
        b.params = {k: {n: v * 1e3 for n, v in layer.items()} for k, layer in b.params.items()}
        repo.save_local_model(
            db,
            device,
            b.to_bytes(),
            n_samples=doc["n_samples"],
            base_version=1,
            last_epoch=doc["last_epoch"],
            threshold=doc["threshold"],
            metrics=doc["metrics"],
        )
    res = aggregate(instance, env["resources"], raise_on_error=False)
    assert not res.success, "the failed blocking check stops the run"
    assert [e.passed for e in res.get_asset_check_evaluations()] == [False]
    assert repo.latest_global_model(db)["version"] == 2, "the poisoned version is stored"
    assert repo.promoted_global_model(db)["version"] == 1, "but not promoted"
    mats = [e.asset_key for e in res.get_asset_materialization_events()]
    assert mats == [dg.AssetKey("global_model")], "promoted_model never ran"


def test_devices_without_a_complete_window_are_skipped_not_failed(pipeline_env, instance):
    """The first readings of new motes (fewer than a window's context) used to fail the
    whole run ("cannot normalise from zero samples"); now those devices are skipped with
    the reason, and a device with enough readings in the same run still trains."""
    env, db = pipeline_env, pipeline_env["db"]
    upsert_readings(db, readings_to_docs(diurnal_readings(2, 3)))  # motes 1, 2: 3 readings
    res = run_devices(instance, env["resources"], ["1", "2"])
    assert res.success and db.local_models.count_documents({}) == 0
    (mat,) = res.get_asset_materialization_events()[:1]
    table = mat.materialization.metadata["models"].value
    assert table.count("no complete window yet") == 2

    upsert_readings(db, readings_to_docs(diurnal_readings(3, 400)[lambda d: d.moteid == 3]))
    res = run_devices(instance, env["resources"], ["1", "2", "3"])
    assert res.success and db.local_models.distinct("device") == ["3"]


def test_a_round_of_one_device_is_judged_on_the_whole_fleet(pipeline_env, instance):
    env, db = pipeline_env, pipeline_env["db"]
    first_round(env, instance, 400)
    # only device 1 trains again: the new version serves all three, so its threshold and
    # its gate use every device's held-out readings (40 each), not device 1's alone
    upsert_readings(db, readings_to_docs(diurnal_readings(1, 200, start_epoch=400)))
    assert run_devices(instance, env["resources"], ["1"]).success
    assert aggregate(instance, env["resources"]).success
    g2 = repo.get_global_model(db, 2)
    assert [x["device"] for x in g2["lineage"]] == ["1"]
    assert g2["metrics"]["n_validation"] == 60 + 40 + 40
    assert g2["metrics"]["device_thresholds"] == 3


def test_a_version_calibrated_on_too_few_windows_is_not_promoted(
    pipeline_env, instance, monkeypatch
):
    monkeypatch.setenv("IOT_FED_MIN_CALIBRATION_WINDOWS", "100")
    get_settings.cache_clear()
    env, db = pipeline_env, pipeline_env["db"]
    upsert_readings(db, readings_to_docs(diurnal_readings(3, 300)))  # 30 held-out each
    assert run_devices(instance, env["resources"], ["1", "2", "3"]).success
    res = aggregate(instance, env["resources"], raise_on_error=False)
    (check,) = res.get_asset_check_evaluations()
    assert not check.passed
    assert "calibrated on 90 held-out windows, fewer than 100" in check.metadata["verdict"].text
    assert repo.promoted_global_model(db) is None and repo.latest_global_model(db) is not None
    # more readings: the next version is founded on enough windows and promoted
    upsert_readings(db, readings_to_docs(diurnal_readings(3, 200, start_epoch=300)))
    assert run_devices(instance, env["resources"], ["1", "2", "3"]).success
    assert aggregate(instance, env["resources"]).success
    assert repo.promoted_global_model(db)["version"] == 2


def test_a_new_device_is_learning_until_a_version_calibrates_it(pipeline_env, instance):
    """Device 4 trains after version 1: learning (scored, not alarmed; aggregation due at
    once), then version 2 calibrates it, told in the materializations' metadata."""
    from iot_fed.federation.bundles import load_promoted
    from iot_fed.federation.calibration import (
        awaiting_calibration,
        fleet_calibration,
        promoted_calibrated,
    )
    from iot_fed.fl.stream_scoring import (
        LEARNING_NO_PARAMS,
        LEARNING_NO_THRESHOLD,
        DeviceHistory,
        score_device,
    )

    env, db = pipeline_env, pipeline_env["db"]
    first_round(env, instance, 400)
    assert promoted_calibrated(db) == (1, {1, 2, 3})
    four = diurnal_readings(4, 400)
    four = four[four["moteid"] == 4]
    upsert_readings(db, readings_to_docs(four))
    assert awaiting_calibration(db, ["4"]) == [4], "about to train, no threshold"
    assert run_devices(instance, env["resources"], ["4"]).success
    assert awaiting_calibration(db, []) == [4], "a local model no version has seen"
    assert fleet_calibration(db).summary()["learning_devices"] == [4]

    def score(bundle):
        x = four[["temperature", "humidity", "light", "voltage"]].to_numpy()
        ts_ms = four["ts"].astype("int64").to_numpy() // 1_000_000
        out, _ = score_device(
            bundle,
            DeviceHistory.empty(),
            moteid=4,
            epochs=four["epoch"].to_numpy(),
            ts_ms=ts_ms,
            values=x,
        )
        return out

    learning = score(load_promoted(db)[1])  # version 1 has no params for device 4 at all
    assert not learning.flag.any() and set(learning.reason) == {LEARNING_NO_PARAMS}
    res = aggregate(instance, env["resources"])
    assert res.success
    assert promoted_calibrated(db) == (2, {1, 2, 3, 4})
    assert awaiting_calibration(db, ["4"]) == [] and fleet_calibration(db).learning == ()
    calibrated = score(load_promoted(db)[1])
    assert not {LEARNING_NO_PARAMS, LEARNING_NO_THRESHOLD} & set(calibrated.reason)
    assert calibrated.reason[-1] is None  # a full window: judged by its own threshold
    meta = {
        m.asset_key.path[-1]: m.metadata
        for m in (e.materialization for e in res.get_asset_materialization_events())
    }
    for key in ("global_model", "promoted_model"):
        assert meta[key]["devices_calibrated"].value == 4
        assert meta[key]["devices_learning"].value == 0
        assert "| 4 | calibrated |" in meta[key]["device_states"].value


def test_run_metadata_table_is_capped_devices_needing_a_look_first():
    """Dagster copies a range run's metadata into each partition's event: the table stays
    at ``TABLE_DEVICES`` rows whatever the fleet, skipped devices first."""
    outcomes = [DeviceOutcome(str(d), 40, version=1) for d in range(1, 101)]
    outcomes.append(DeviceOutcome("101", 3, skipped="no complete window yet"))
    lines = outcomes_table(outcomes).splitlines()
    assert lines[2].startswith("| 101 |") and "no complete window yet" in lines[2]
    assert sum(line.startswith("| ") for line in lines[2:]) == TABLE_DEVICES
    assert lines[-1] == f"{101 - TABLE_DEVICES} more devices: the local_models collection"
    assert len(outcomes_table(outcomes[:5]).splitlines()) == 7, "a small fleet: every device"
