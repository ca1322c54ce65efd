"""The scorer's model cache: a corrupt promoted bundle keeps the previous version."""

from __future__ import annotations

from iot_fed.analytics.live_state import ExecutorModel
from iot_fed.analytics.readings import MongoTarget
from iot_fed.store import init_database, save_global_model
from iot_fed_tests.analytics.helpers import make_bundle, make_readings, store_global


def test_corrupt_promoted_bundle_keeps_previous_version(settings, mongo_db, caplog):
    init_database(mongo_db)
    target = MongoTarget(settings.mongodb_uri, mongo_db.name)
    df = make_readings(1, 30)
    assert store_global(mongo_db, make_bundle(df, seed=1)) == 1
    model = ExecutorModel(target, refresh_s=0.0)
    assert model.current()[0] == 1
    blob = bytearray(make_bundle(df, seed=2).to_bytes())
    blob[len(blob) // 2] ^= 0xFF  # flip a byte: the checksum no longer matches
    save_global_model(mongo_db, bytes(blob), threshold=0.5, promoted=True)
    version, bundle = model.current()
    assert version == 1 and bundle.threshold is not None
    assert "global model v2 is unreadable" in caplog.text
    fresh = ExecutorModel(target, refresh_s=0.0)  # a restarted worker: falls back to v1
    assert fresh.current()[0] == 1
