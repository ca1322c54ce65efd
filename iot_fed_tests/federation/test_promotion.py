"""The promotion verdict is computed once, by the round, and read from the stored version
by the blocking check and by the promotion."""

from __future__ import annotations

from pymongo.database import Database

from iot_fed.federation.global_round import promote_if_better
from iot_fed.federation.health import promotion_verdict
from iot_fed.store import promoted_version, save_global_model

PASSING_LOSSES = {"val_loss": 0.5, "parent_val_loss": 1.0, "n_validation": 10_000}


def test_the_stored_verdict_decides_not_a_recomputation(mongo_db: Database) -> None:
    refused = {**PASSING_LOSSES, "verdict": {"ok": False, "reason": "threshold not calibrated"}}
    v1 = save_global_model(mongo_db, b"v1", metrics=refused)["version"]
    assert promotion_verdict(mongo_db.global_models.find_one({"version": v1})) == (
        False,
        "threshold not calibrated",
    )
    assert promote_if_better(mongo_db, v1) == (False, "threshold not calibrated")
    assert promoted_version(mongo_db) is None
    accepted = {"val_loss": 9.0, "verdict": {"ok": True, "reason": "ok"}}
    v2 = save_global_model(mongo_db, b"v2", metrics=accepted)["version"]
    assert promote_if_better(mongo_db, v2) == (True, "ok")
    assert promoted_version(mongo_db) == v2


def test_a_version_without_a_stored_verdict_is_not_promoted(mongo_db: Database) -> None:
    v = save_global_model(mongo_db, b"old", metrics=PASSING_LOSSES)["version"]
    ok, why = promote_if_better(mongo_db, v)
    assert not ok and "no promotion verdict stored" in why


def test_a_stored_replay_refusal_keeps_a_passing_version_unpromoted(mongo_db: Database) -> None:
    replay = {"ok": False, "reason": "alarm rate 12 incidents/device-day"}
    metrics = {**PASSING_LOSSES, "verdict": {"ok": True, "reason": "ok"}, "replay": replay}
    v = save_global_model(mongo_db, b"flood", metrics=metrics)["version"]
    assert promote_if_better(mongo_db, v) == (False, "replay: alarm rate 12 incidents/device-day")
    assert promoted_version(mongo_db) is None
    passed = {**metrics, "replay": {"ok": True, "reason": "ok"}}
    v2 = save_global_model(mongo_db, b"sane", metrics=passed)["version"]
    assert promote_if_better(mongo_db, v2) == (True, "ok")
