"""Calibrated vs learning devices of the promoted version (real MongoDB-compatible server)."""

from __future__ import annotations

from iot_fed.federation.calibration import promoted_calibrated, split_fleet
from iot_fed.store import init_database
from iot_fed.store.repository import save_global_model
from iot_fed_tests.analytics.helpers import make_bundle, make_readings, store_global


def test_summary_counts_everything_and_caps_the_ids():
    cal = split_fleet(3, range(0, 300, 2), range(300))
    got = cal.summary(cap=5)
    assert (got["calibrated"], got["learning"], got["model_version"]) == (150, 150, 3)
    assert got["learning_devices"] == [1, 3, 5, 7, 9] and got["learning_devices_truncated"]
    assert split_fleet(3, [1], [1]).summary()["learning_devices_truncated"] is False


def test_promoted_calibration_from_the_field_or_an_older_versions_bundle(mongo_db):
    init_database(mongo_db)
    assert promoted_calibrated(mongo_db) is None
    bundle = make_bundle(make_readings(motes=2, per_mote=50, seed=4), seed=1)
    store_global(mongo_db, bundle)  # stored without the field, as before it existed
    assert promoted_calibrated(mongo_db) == (1, frozenset({1, 2}))
    save_global_model(mongo_db, bundle.to_bytes(), calibrated_devices=[2], promoted=True)
    assert promoted_calibrated(mongo_db) == (2, frozenset({2}))
