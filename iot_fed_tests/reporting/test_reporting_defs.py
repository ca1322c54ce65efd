"""The Dagster layer of the reporting store: the sensor refreshes in its tick, the asset
catches up (or rebuilds), an unreachable PostgreSQL is named."""

from __future__ import annotations

import dagster as dg
import psycopg
from pymongo.database import Database

from iot_fed.defs.assets.reporting import PostgresResource, reporting_sensor, reporting_tables
from iot_fed.defs.resources import MongoDBResource
from iot_fed.store.repository import insert_readings
from iot_fed_tests.reporting.test_refresh import reading


def _resources(mongo_db: Database, uri: str) -> dict[str, object]:
    return {
        "mongodb": MongoDBResource(database=mongo_db.name),
        "postgres": PostgresResource(uri=uri),
    }


def test_sensor_refreshes_and_reports_materialization(mongo_db: Database, pg_uri: str) -> None:
    insert_readings(mongo_db, [reading(m, e) for m in (1, 2) for e in range(6)])
    with dg.build_sensor_context(resources=_resources(mongo_db, pg_uri)) as ctx:
        result = reporting_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    (event,) = result.asset_events
    assert event.asset_key == reporting_tables.key
    assert event.metadata["readings_seen"].value == 12
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute("SELECT sum(readings) FROM reporting.v_fleet_minute").fetchone() == (
            12,
        )


def test_sensor_skips_with_reason_when_postgres_is_down(mongo_db: Database) -> None:
    bad = "postgresql://iot_fed:iot_fed@127.0.0.1:9/iot_fed"
    with dg.build_sensor_context(resources=_resources(mongo_db, bad)) as ctx:
        result = reporting_sensor(ctx)
    assert isinstance(result, dg.SkipReason)
    assert "IOT_FED_POSTGRES_URI" in result.skip_message and "127.0.0.1:9" in result.skip_message


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
