"""Reporting group: the PostgreSQL reporting tables behind the dashboards.

``reporting_sensor`` decides, every :data:`REPORTING_INTERVAL_S` seconds, whether MongoDB
holds something the tables do not (:func:`~iot_fed.store.reporting_reads.source_marks`)
and then launches a run of ``reporting_tables``, which refreshes them in bounded
transactions until caught up (``--config '{"rebuild": true}'`` rebuilds from scratch). A
failed run leaves the watermarks where they were; the sensor launches the next one after
:data:`RETRY_AFTER_S`. Ingestion and scoring never wait on it.
"""

import json
import time
from functools import cache
from typing import Any

import dagster as dg
import psycopg

from iot_fed.config import Settings, load_settings
from iot_fed.defs.resources import MongoDBResource
from iot_fed.defs.sensors import minimum_interval

REPORTING_INTERVAL_S = 10


class PostgresResource(dg.ConfigurableResource):
    """The PostgreSQL reporting store; ``uri`` defaults to ``IOT_FED_POSTGRES_URI``."""

    uri: str | None = None

    def settings(self) -> Settings:
        return load_settings(**({"postgres_uri": self.uri} if self.uri else {}))

    def connect(self, timeout_s: int = 5) -> psycopg.Connection:
        """A connection, or :class:`dagster.Failure` naming the unreachable server."""
        from iot_fed.redact import redact

        uri = self.settings().postgres_uri
        try:
            return psycopg.connect(uri, connect_timeout=timeout_s, application_name="iot_fed")
        except psycopg.OperationalError as exc:
            raise dg.Failure(
                f"reporting store PostgreSQL at IOT_FED_POSTGRES_URI={redact(uri)} is not "
                f"reachable ({str(exc).strip().splitlines()[0]}); `iot-fed services up` "
                "starts the local one"
            ) from None


class ReportingConfig(dg.Config):
    rebuild: bool = False  # empty the reporting tables first and rebuild from MongoDB
    batch: int = 100_000  # readings per transaction


@cache
def _positions() -> dict[int, tuple[float, float]]:
    from iot_fed.reporting.refresh import load_positions

    return dict(load_positions(load_settings()))


def _metadata(results: list[Any]) -> dict[str, Any]:
    last = results[-1]
    return {
        "readings_seen": sum(r.readings_seen for r in results),
        "buckets": sum(r.buckets for r in results),
        "anomalies": sum(r.anomalies for r in results),
        "dead_letters_seen": sum(r.dead_letters_seen for r in results),
        "local_models": sum(r.local_models for r in results),
        "global_versions": last.global_versions,
        "caught_up": last.caught_up,
        "behind_s": last.behind_s,
        "seconds": round(sum(r.seconds for r in results), 3),
        **_dashboard_links(),
    }


def _dashboard_links() -> dict[str, Any]:
    """Links to the Superset dashboards drawn from these tables (Dagster shows them)."""
    from iot_fed.dashboards.urls import dashboard_urls

    urls = dashboard_urls(load_settings())
    return {f"dashboard {t.lower()}": dg.MetadataValue.url(u) for t, u in urls.items()}


@dg.asset(
    group_name="reporting",
    description="PostgreSQL schema `reporting` (per-device per-minute aggregates, anomalies, "
    "model versions, local losses, dead letters, gaps) and its dashboard views, kept current "
    "from MongoDB by runs that reporting_sensor launches.",
)
def reporting_tables(
    context: dg.AssetExecutionContext,
    config: ReportingConfig,
    mongodb: MongoDBResource,
    postgres: PostgresResource,
) -> dg.MaterializeResult:
    from iot_fed.reporting.refresh import refresh_until_caught_up, reset

    with postgres.connect() as conn:
        if config.rebuild:
            reset(conn)
        results = refresh_until_caught_up(
            mongodb.db, conn, batch=config.batch, positions=_positions
        )
    context.log.info("reporting refreshed in %d round(s)", len(results))
    return dg.MaterializeResult(metadata=_metadata(results))


REPORTING_POOL_TAGS = {"iot_fed/pool": "reporting"}
RETRY_AFTER_S = 60  # after a failed refresh run (PostgreSQL down): one try a minute
CURSOR_VERSION = 1


def reporting_decision(
    instance: dg.DagsterInstance, marks: dict[str, Any], cursor: str | None
) -> dg.SensorResult | dg.SkipReason:
    """A run of ``reporting_tables`` when the sources moved since the last one (or it failed
    a while ago), none is in flight and reporting is on; otherwise the reason not to."""
    if not load_settings().reporting:
        return dg.SkipReason("reporting is switched off (IOT_FED_REPORTING=false)")
    runs = instance.get_runs(filters=dg.RunsFilter(tags=REPORTING_POOL_TAGS), limit=1)
    last = runs[0] if runs else None
    if last is not None and not last.is_finished:
        return dg.SkipReason(f"refresh run {last.run_id[:8]} is in flight")
    state = json.dumps({"v": CURSOR_VERSION, **marks}, sort_keys=True)
    if last is not None and last.status != dg.DagsterRunStatus.SUCCESS:
        ended = instance.get_run_stats(last.run_id).end_time
        if ended and time.time() - ended < RETRY_AFTER_S:
            return dg.SkipReason(f"refresh run {last.run_id[:8]} failed; retrying within a minute")
    elif state == cursor:
        return dg.SkipReason("nothing new in MongoDB since the last refresh")
    request = dg.RunRequest(asset_selection=[reporting_tables.key], tags=REPORTING_POOL_TAGS)
    return dg.SensorResult(run_requests=[request], cursor=state)


@dg.sensor(
    name="reporting_sensor",
    minimum_interval_seconds=minimum_interval(REPORTING_INTERVAL_S),
    asset_selection=[reporting_tables.key],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches a reporting_tables run (PostgreSQL reporting tables refreshed from "
    "MongoDB, bounded and transactional) when MongoDB holds something new.",
)
def reporting_sensor(
    context: dg.SensorEvaluationContext, mongodb: MongoDBResource
) -> dg.SensorResult | dg.SkipReason:
    from iot_fed.store.reporting_reads import source_marks

    return reporting_decision(context.instance, source_marks(mongodb.db), context.cursor)
