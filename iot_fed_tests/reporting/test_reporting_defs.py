"""The Dagster layer of the reporting store: the sensor decides, a run of the asset
refreshes (catching up, or rebuilding), an unreachable PostgreSQL fails the run, named."""

from __future__ import annotations

import dagster as dg
import psycopg
from pymongo.database import Database

from iot_fed.defs.assets.reporting import PostgresResource, reporting_sensor, reporting_tables
from iot_fed.defs.resources import MongoDBResource
from iot_fed.store.repository import insert_readings
from iot_fed_tests.reporting.helpers import reading


def _resources(mongo_db: Database, uri: str) -> dict[str, object]:
    return {
        "mongodb": MongoDBResource(database=mongo_db.name),
        "postgres": PostgresResource(uri=uri),
    }


def _tick(instance: dg.DagsterInstance, mongo_db: Database, cursor: str | None = None):
    resources = {"mongodb": MongoDBResource(database=mongo_db.name)}
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
        return reporting_sensor(ctx)


def _run(request: dg.RunRequest, instance, mongo_db: Database, uri: str):
    """What the daemon does with the sensor's request: a tagged run of the asset."""
    assert request.asset_selection == [reporting_tables.key]
    return dg.materialize(
        [reporting_tables],
        instance=instance,
        tags=request.tags,
        resources=_resources(mongo_db, uri),
        raise_on_error=False,
    )


def test_sensor_only_decides_and_the_run_refreshes(mongo_db: Database, pg_uri: str) -> None:
    insert_readings(mongo_db, [reading(m, e) for m in (1, 2) for e in range(6)])
    with dg.instance_for_test() as instance:
        first = _tick(instance, mongo_db)
        assert isinstance(first, dg.SensorResult) and not first.asset_events
        (request,) = first.run_requests
        with psycopg.connect(pg_uri) as conn:  # the tick wrote nothing
            found = conn.execute("SELECT to_regclass('reporting.device_minute')").fetchone()
            assert found == (None,)
        assert _run(request, instance, mongo_db, pg_uri).success
        with psycopg.connect(pg_uri) as conn:
            total = conn.execute("SELECT sum(readings) FROM reporting.v_fleet_minute").fetchone()
            assert total == (12,)
        idle = _tick(instance, mongo_db, first.cursor)
        assert isinstance(idle, dg.SkipReason) and "nothing new" in idle.skip_message
        insert_readings(mongo_db, [reading(3, 0)])
        again = _tick(instance, mongo_db, first.cursor)
        assert isinstance(again, dg.SensorResult) and len(again.run_requests) == 1


def test_a_failed_refresh_is_retried_a_minute_later_not_every_tick(mongo_db: Database) -> None:
    insert_readings(mongo_db, [reading(1, e) for e in range(3)])
    down = "postgresql://iot_fed:iot_fed@127.0.0.1:9/iot_fed"
    with dg.instance_for_test() as instance:
        first = _tick(instance, mongo_db)
        res = _run(first.run_requests[0], instance, mongo_db, down)
        assert not res.success
        (failure,) = res.get_step_failure_events()
        message = failure.event_specific_data.error.message
        assert "IOT_FED_POSTGRES_URI" in message and "127.0.0.1:9" in message
        insert_readings(mongo_db, [reading(1, 10)])  # new data does not hurry a retry
        wait = _tick(instance, mongo_db, first.cursor)
        assert isinstance(wait, dg.SkipReason) and "failed" in wait.skip_message


def test_asset_catches_up_and_rebuilds(mongo_db: Database, pg_uri: str) -> None:
    insert_readings(mongo_db, [reading(3, e) for e in range(30)])
    for config in ({"batch": 8}, {"rebuild": True}):
        res = dg.materialize(
            [reporting_tables],
            resources=_resources(mongo_db, pg_uri),
            run_config={"ops": {"reporting_tables": {"config": config}}},
        )
        assert res.success
        mat = res.asset_materializations_for_node("reporting_tables")[0]
        assert mat.metadata["caught_up"].value is True
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute("SELECT readings FROM reporting.devices").fetchone() == (30,)
