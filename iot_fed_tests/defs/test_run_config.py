"""Hyperparameters as run config: overrides reach the round; bad values fail before work."""

from __future__ import annotations

import dagster as dg
import pytest
from pydantic import ValidationError

from iot_fed.defs.resources import MongoDBResource, SettingsResource
from iot_fed.store import repository as repo
from iot_fed.store.repository import readings_to_docs, upsert_readings
from iot_fed_tests.defs.helpers import ASSETS, diurnal_readings, run_devices, shard_keys


def ops_config(op: str, **values) -> dict:
    return {"ops": {op: {"config": values}}}


def test_unknown_strategy_is_rejected_before_the_run_starts(instance):
    with pytest.raises(dg.DagsterInvalidConfigError, match="aggregation_strategy"):
        dg.materialize(
            ASSETS,
            instance=instance,
            resources={"mongodb": MongoDBResource(), "settings": SettingsResource()},
            selection=["global_model"],
            run_config=ops_config("global_model", aggregation_strategy="mean_of_means"),
        )
    assert instance.get_runs() == [], "no run was created"


def test_negative_learning_rate_fails_before_any_training(pipeline_env, instance):
    env, db = pipeline_env, pipeline_env["db"]
    upsert_readings(db, readings_to_docs(diurnal_readings(2, 100)))
    with pytest.raises(ValidationError, match="learning_rate"):
        run_devices(instance, env["resources"], ["1", "2"], run_config={"learning_rate": -0.1})
    assert db.local_models.count_documents({}) == 0, "nothing was trained"


def test_run_config_overrides_reach_the_round(pipeline_env, instance):
    env, db = pipeline_env, pipeline_env["db"]
    upsert_readings(db, readings_to_docs(diurnal_readings(3, 200)))
    [shard] = shard_keys(instance, db, ["1", "2", "3"])
    res = dg.materialize(
        ASSETS,
        instance=instance,
        resources=env["resources"],
        selection=["local_model", "global_model"],
        partition_key=shard,
        run_config={
            "ops": {
                "local_model": {"config": {"learning_rate": 0.003, "optimizer": "sgd"}},
                "global_model": {"config": {"aggregation_strategy": "median"}},
            }
        },
    )
    assert res.success
    local = repo.get_local_model(db, "2")
    assert (local["config"]["learning_rate"], local["config"]["optimizer"]) == (0.003, "sgd")
    glob = repo.latest_global_model(db)
    assert glob["strategy"] == "median" and glob["config"]["strategy"] == "median"
    # Without run config the settings apply again.
    upsert_readings(db, readings_to_docs(diurnal_readings(3, 100, start_epoch=200)))
    assert run_devices(instance, env["resources"], ["1", "2", "3"]).success
    assert repo.get_local_model(db, "2")["config"]["learning_rate"] == 1e-3
