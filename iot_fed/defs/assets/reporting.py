"""Reporting group: the PostgreSQL reporting tables behind the dashboards.

``reporting_sensor`` refreshes them every :data:`REPORTING_INTERVAL_S` seconds inside its
tick (one bounded, transactional :func:`~iot_fed.reporting.refresh.refresh`; no run launch,
so the tables stay well under 60 s behind MongoDB) and reports each refresh that changed
something as a materialization of ``reporting_tables``. Materializing the asset by hand
catches up completely (``--config '{"rebuild": true}'`` rebuilds from scratch). A failed
refresh fails the tick with the reason; the watermarks did not move, so the next tick
retries. Ingestion and scoring never wait on it.
"""

from functools import cache
from typing import Any

import dagster as dg
import psycopg

from iot_fed.config import Settings, load_settings
from iot_fed.defs.resources import MongoDBResource

REPORTING_INTERVAL_S = 15


class PostgresResource(dg.ConfigurableResource):
    """The PostgreSQL reporting store; ``uri`` defaults to ``IOT_FED_POSTGRES_URI``."""

    uri: str | None = None

    def settings(self) -> Settings:
        return load_settings(**({"postgres_uri": self.uri} if self.uri else {}))

    def connect(self, timeout_s: int = 5) -> psycopg.Connection:
        """A connection, or :class:`dagster.Failure` naming the unreachable server."""
        from iot_fed.services.base import redact

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
    "from MongoDB by reporting_sensor.",
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


@dg.sensor(
    name="reporting_sensor",
    minimum_interval_seconds=REPORTING_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Refreshes the PostgreSQL reporting tables from MongoDB (bounded, "
    "transactional) and reports reporting_tables materializations.",
)
def reporting_sensor(
    context: dg.SensorEvaluationContext, mongodb: MongoDBResource, postgres: PostgresResource
) -> dg.SensorResult | dg.SkipReason:
    from iot_fed.reporting.refresh import ReportingError, refresh

    try:
        conn = postgres.connect()
    except dg.Failure as exc:  # the store is down (or switched off): say why in the tick
        return dg.SkipReason(str(exc.description))
    try:
        with conn:
            res = refresh(mongodb.db, conn, positions=_positions)
    except ReportingError as exc:
        raise dg.Failure(str(exc)) from exc
    if not res.changed:
        return dg.SkipReason("reporting tables are current")
    return dg.SensorResult(
        asset_events=[
            dg.AssetMaterialization(asset_key=reporting_tables.key, metadata=_metadata([res]))
        ]
    )
