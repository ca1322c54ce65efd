"""Dagster's PostgreSQL storages with a small pool of open connections.

dagster-postgres opens a new connection for every storage call (``NullPool``) except in the
webserver. A connection is a PostgreSQL backend fork and a SCRAM handshake, and a
federated round makes hundreds of storage calls across the daemon's threads, the code
server and the run worker (cost: docs/performance.md). These classes are
the stock storages, switched at construction to the pooled engine dagster-postgres itself
uses in the webserver (``optimize_for_webserver``, with no statement timeout). Same tables,
same config (``postgres_db``); ``iot_fed.services.dagster_instance`` names them in
``dagster.yaml`` (``run_storage`` / ``event_log_storage`` / ``schedule_storage``), so
every process that loads the instance, run workers included, pools.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from dagster._serdes import ConfigurableClassData
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import pg_url_from_config

POOL_RECYCLE_S = 3600
POOL_MAX_OVERFLOW = 8
"""Per storage and process: one connection kept open, up to 8 more under concurrency."""

S = TypeVar("S", PostgresRunStorage, PostgresEventLogStorage, PostgresScheduleStorage)


def _pooled(cls: type[S], inst_data: ConfigurableClassData | None, config: Mapping[str, Any]) -> S:
    storage = cls(
        inst_data=inst_data,
        postgres_url=pg_url_from_config(config),
        should_autocreate_tables=config.get("should_autocreate_tables", True),
    )
    storage.optimize_for_webserver(
        statement_timeout=0, pool_recycle=POOL_RECYCLE_S, max_overflow=POOL_MAX_OVERFLOW
    )
    return storage


class PooledPostgresRunStorage(PostgresRunStorage):
    """``PostgresRunStorage`` on a connection pool."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PostgresRunStorage:
        return _pooled(cls, inst_data, config_value)


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    """``PostgresEventLogStorage`` on a connection pool."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PostgresEventLogStorage:
        return _pooled(cls, inst_data, config_value)


class PooledPostgresScheduleStorage(PostgresScheduleStorage):
    """``PostgresScheduleStorage`` on a connection pool."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PostgresScheduleStorage:
        return _pooled(cls, inst_data, config_value)
