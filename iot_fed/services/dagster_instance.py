"""``$DAGSTER_HOME/dagster.yaml`` for the local Dagster instance: PostgreSQL when the
project's server answers (database ``dagster``, dagster-postgres), SQLite otherwise.

Dagster documents its SQLite storage as single-process; here a webserver, a daemon,
sensors and runs share the instance, so PostgreSQL is the default whenever it is up. The
password never lands in the YAML: it reads ``IOT_FED_DAGSTER_PG_PASSWORD``, which
``iot-fed dagster-instance`` prints as an ``export`` line for the calling shell
(``eval "$(iot-fed dagster-instance)"`` in ``scripts/run.sh``). Throwaway test instances
(``dg.instance_for_test``) stay on SQLite.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import psycopg
import yaml

from iot_fed.config import Settings, _project_root
from iot_fed.redact import redact
from iot_fed.services.postgres import database_uri, uri_parts
from iot_fed.services.process import ServiceError

PASSWORD_ENV = "IOT_FED_DAGSTER_PG_PASSWORD"
GENERATED_MARK = "# Written by `iot-fed dagster-instance`"  # a file without it is the user's
DAGSTER_DATABASE = "dagster"
Storage = Literal["auto", "postgres", "sqlite"]
BATCH_ENV = {"DAGSTER_EVENT_BATCH_SIZE": "200"}
"""Dagster writes a run's per-partition planned and materialization events (54 per round
here) in one INSERT per batch on PostgreSQL instead of one transaction each (read by every
process that writes events: daemon, webserver, run workers)."""
BASE_DEFAULTS: dict[str, Any] = {"telemetry": {"enabled": False}, "nux": {"enabled": False}}
"""Used when ``scripts/dagster.yaml`` is missing; ``nux`` off: no onboarding modal in the UI."""


@dataclass(frozen=True)
class InstanceConfig:
    """What ``dagster.yaml`` holds, and the environment the instance needs."""

    storage: Literal["postgres", "sqlite", "yours"]
    document: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def text(self) -> str:
        head = f"{GENERATED_MARK} (storage: %s); edits are overwritten unless this line goes.\n"
        return head % self.storage + yaml.safe_dump(self.document, sort_keys=False)

    def exports(self) -> str:
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env.items())


def base_document() -> dict[str, Any]:
    """The project's instance settings (``scripts/dagster.yaml``: run queue, sensors)."""
    path = _project_root() / "scripts" / "dagster.yaml"
    if path.exists():
        return dict(yaml.safe_load(path.read_text()) or {})
    return dict(BASE_DEFAULTS)


RunLauncher = Literal["warm", "default"]
STOCK_LAUNCHER = {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}
STOCK_COORDINATOR = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
"""Dagster's own run launcher (a fresh ``dagster api execute_run`` process per run, spawned
by the code server) and queued coordinator, as Dagster's docs name them in dagster.yaml."""


def with_launcher(doc: dict[str, Any], launcher: RunLauncher) -> dict[str, Any]:
    """``doc`` with the run launcher asked for: ``warm`` keeps the project's section
    (``WarmRunLauncher``), ``default`` puts Dagster's stock launcher and queued coordinator
    in its place, with the same coordinator config (concurrency limits, dequeue interval)."""
    if launcher == "warm":
        return doc
    config = (doc.get("run_coordinator") or {}).get("config")
    coordinator = {**STOCK_COORDINATOR, **({"config": config} if config else {})}
    return {**doc, "run_launcher": dict(STOCK_LAUNCHER), "run_coordinator": coordinator}


POOLED_STORAGE_MODULE = "iot_fed.defs.instance_storage"
POOLED_STORAGES = {
    "run_storage": "PooledPostgresRunStorage",
    "event_log_storage": "PooledPostgresEventLogStorage",
    "schedule_storage": "PooledPostgresScheduleStorage",
}
"""dagster-postgres's storages on a connection pool (see that module); same tables."""


def postgres_storage(uri: str, database: str) -> dict[str, Any]:
    """The run / event log / schedule storage sections; the password is an env reference."""
    u = urlparse(uri)
    user, _, _ = uri_parts(uri)
    db = {
        "username": user,
        "password": {"env": PASSWORD_ENV},
        "hostname": u.hostname or "127.0.0.1",
        "port": u.port or 5432,
        "db_name": database,
        # dagster-postgres binds NOTIFY parameters client-side: psycopg2, not the
        # psycopg 3 driver SQLAlchemy 2.1 picks for a bare postgresql:// URL
        "scheme": "postgresql+psycopg2",
    }
    return {
        key: {"module": POOLED_STORAGE_MODULE, "class": cls, "config": {"postgres_db": db}}
        for key, cls in POOLED_STORAGES.items()
    }


def unreachable(uri: str, database: str, timeout_s: float = 5.0) -> str | None:
    """None when ``database`` on the server of ``uri`` accepts a connection, else why not."""
    try:
        psycopg.connect(database_uri(uri, database), connect_timeout=max(int(timeout_s), 1)).close()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def instance_config(
    settings: Settings, storage: Storage = "auto", database: str = DAGSTER_DATABASE
) -> InstanceConfig:
    """The instance for ``storage``: ``auto`` picks PostgreSQL when it answers.

    ``postgres`` with an unreachable server raises :class:`ServiceError` naming it.
    """
    doc = with_launcher(base_document(), settings.run_launcher)
    for key in ("storage", *POOLED_STORAGES):
        doc.pop(key, None)
    uri = settings.postgres_uri
    if storage == "sqlite":
        return InstanceConfig("sqlite", doc, note="SQLite (asked for)")
    why = unreachable(uri, database)
    if why is None:
        doc.update(postgres_storage(uri, database))
        password = uri_parts(uri)[1]
        shown = redact(database_uri(uri, database))
        env = {PASSWORD_ENV: password, **BATCH_ENV}
        return InstanceConfig("postgres", doc, env, f"PostgreSQL {shown}")
    where = f"IOT_FED_POSTGRES_URI={redact(uri)}, database {database}"
    if storage == "postgres":
        raise ServiceError(
            f"dagster instance: PostgreSQL for the Dagster instance ({where}) is not reachable: "
            f"{why}; start it with `iot-fed services up --only postgres` or use --storage sqlite"
        )
    return InstanceConfig("sqlite", doc, note=f"SQLite: PostgreSQL ({where}) not reachable: {why}")


def previous_storage(home: Path) -> str | None:
    """``postgres`` / ``sqlite`` for an existing ``home/dagster.yaml``, None without one."""
    path = home / "dagster.yaml"
    if not path.exists():
        return None
    doc = yaml.safe_load(path.read_text()) or {}
    on_postgres = "postgres" in (doc.get("storage") or {}) or "run_storage" in doc
    return "postgres" if on_postgres else "sqlite"


def users_own(home: Path) -> bool:
    """True when ``home/dagster.yaml`` exists and was not written by the project."""
    path = home / "dagster.yaml"
    return path.exists() and not path.read_text().startswith(GENERATED_MARK)


def configure(
    home: Path, settings: Settings, storage: Storage = "auto", database: str = DAGSTER_DATABASE
) -> InstanceConfig:
    """Choose and write the instance, unless ``home/dagster.yaml`` is the user's own (run
    launcher, storage, keys we do not know: all left as they are). ``auto`` keeps an
    instance that is already on PostgreSQL there (its runs, cursors and history live in
    it): an unreachable server is then an error naming it, not a silent switch to an empty
    SQLite instance."""
    if users_own(home):
        env = {PASSWORD_ENV: uri_parts(settings.postgres_uri)[1], **BATCH_ENV}
        note = f"your own {home / 'dagster.yaml'}, left as it is"
        return InstanceConfig("yours", {}, env, note)
    if storage == "auto" and previous_storage(home) == "postgres":
        storage = "postgres"
    config = instance_config(settings, storage, database)
    write_instance(home, config)
    return replace(config, note=f"{config.note}; run launcher: {settings.run_launcher}")


def write_instance(home: Path, config: InstanceConfig) -> Path:
    """Write ``home/dagster.yaml`` atomically; return its path."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(config.text())
    tmp.replace(path)
    return path
