"""The local PostgreSQL 15 server (Debian's binaries): reporting store, Superset and Dagster.

It listens on 127.0.0.1 only plus a private Unix socket, and runs as the ``postgres``
system user when iot-fed runs as root (the server refuses root). Once it answers, the role
and databases of ``IOT_FED_POSTGRES_URI`` exist: the URI's database (reporting schema
``reporting``), ``superset`` and ``dagster``, all owned by the URI's user. A non-local URI
starts nothing.

Where the cluster lives: run as the caller, in ``<state_dir>/postgres/data``; run as the
``postgres`` user, in that user's home (``~postgres/iot_fed/<name>-<digest of the state
dir>``), because a clone in a private folder (mode 700, a home directory) cannot be entered
by it. That directory records its owner; ``iot-fed services purge`` deletes it, and ``up``
removes the ones whose owner folder is gone. It is required unless ``IOT_FED_REPORTING`` is
false (see :class:`iot_fed.services.base.ReportingService`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import psycopg
from psycopg import sql

from iot_fed.services.base import LOCAL_HOST, ReportingService
from iot_fed.services.process import ServiceError, port_open, read_pid_alive

log = logging.getLogger(__name__)

SYSTEM_USER = "postgres"
SUPERUSER = "postgres"
EXTRA_DATABASES = ("superset", "dagster")
MAX_SOCKET_PATH = 100  # sockaddr_un.sun_path is 108 bytes
CLUSTERS_DIR = "iot_fed"  # under the server user's home: one folder per project checkout
OWNER_FILE = "owner"  # the state dir a cluster folder belongs to


def uri_parts(uri: str) -> tuple[str, str, str]:
    """(user, password, database) of a postgresql:// URI (defaults: iot_fed)."""
    u = urlparse(uri)
    return (
        unquote(u.username or "iot_fed"),
        unquote(u.password or ""),
        unquote(u.path.lstrip("/")) or "iot_fed",
    )


def database_uri(uri: str, database: str) -> str:
    """``uri`` pointing at another database on the same server."""
    return urlparse(uri)._replace(path=f"/{database}").geturl()


class PostgresService(ReportingService):
    name = "postgres"
    setting = "IOT_FED_POSTGRES_URI"
    stop_signal = signal.SIGINT  # fast shutdown: SIGTERM (smart) waits for every client

    @property
    def is_local(self) -> bool:
        return self.settings.postgres_is_local

    @property
    def endpoint(self) -> str:
        return self.settings.postgres_uri

    @property
    def port(self) -> int:
        return self.settings.postgres_port

    def ports(self) -> list[int]:
        return [self.port]

    @property
    def bin_dir(self) -> Path:
        return Path(self.settings.postgres_bin_dir)

    @property
    def cluster_dir(self) -> Path:
        """Where the server's files live: a folder its user can reach (see the module doc)."""
        if self.run_as() is None or (self.home / "data" / "PG_VERSION").exists():
            return self.home  # the caller's own server, or a cluster initialised here before
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
        slug = "".join(c if c.isalnum() else "_" for c in self.state_dir.parents[1].name)[:24]
        return self._clusters_root() / f"{slug}-{digest}"

    def _clusters_root(self) -> Path:
        return Path(pwd.getpwnam(SYSTEM_USER).pw_dir) / CLUSTERS_DIR

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def workdir(self) -> Path:
        return self.cluster_dir

    def data_paths(self) -> list[Path]:
        return [self.home] if self.cluster_dir == self.home else [self.home, self.cluster_dir]

    @property
    def socket_dir(self) -> Path:
        """The private socket directory (a short path under /tmp if the home is too deep)."""
        here = self.cluster_dir / "run"
        if len(str(here / f".s.PGSQL.{self.port}")) <= MAX_SOCKET_PATH:
            return here
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"iot_fed_pg_{digest}"

    def run_as(self) -> str | None:
        return SYSTEM_USER if os.geteuid() == 0 else None

    # --- install / prepare -----------------------------------------------------------
    def installed(self) -> bool:
        return (self.bin_dir / "postgres").is_file() and (self.bin_dir / "initdb").is_file()

    def install(self) -> None:
        """Nothing to fetch: the binaries come from apt (``scripts/bootstrap.sh``)."""
        if not self.installed():
            raise ServiceError(
                f"postgres: PostgreSQL server binaries not found in {self.bin_dir} "
                "(apt-get install postgresql, as scripts/bootstrap.sh does, "
                f"or set IOT_FED_POSTGRES_BIN_DIR); log {self.log_path}"
            )

    def _owner_ids(self) -> tuple[int, int] | None:
        user = self.run_as()
        if user is None:
            return None
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise ServiceError(
                f"postgres: no system user {user!r} to run the server as (the server refuses "
                f"root; apt-get install postgresql creates it); log {self.log_path}"
            ) from None
        return pw.pw_uid, pw.pw_gid

    def _own(self, path: Path) -> None:
        ids = self._owner_ids()
        path.mkdir(parents=True, exist_ok=True)
        if ids:
            os.chown(path, *ids)
        path.chmod(0o700)

    def _check_reachable(self) -> None:
        """Fail with the reason and the fix when the server's user cannot enter its folder."""
        user = self.run_as()
        if user is None:
            return
        probe = subprocess.run(
            ["test", "-x", str(self.cluster_dir), "-a", "-w", str(self.cluster_dir)],
            user=user,
            extra_groups=[],
            group=self._owner_ids()[1],
        )
        if probe.returncode != 0:
            raise ServiceError(
                f"postgres: the system user {user!r} cannot enter {self.cluster_dir} (a parent "
                "folder is private); move the project, or set IOT_FED_DATA_DIR to a folder it "
                f"can reach; log {self.log_path}"
            )

    def _remove_orphans(self) -> None:
        """Delete cluster folders whose owner (a project checkout's state dir) is gone."""
        if self.cluster_dir == self.home or not self._clusters_root().is_dir():
            return
        for folder in self._clusters_root().iterdir():
            owner = folder / OWNER_FILE
            if folder == self.cluster_dir or not owner.is_file():
                continue
            if Path(owner.read_text().strip()).exists():
                continue
            if read_pid_alive(folder / "data" / "postmaster.pid"):
                continue
            log.info("postgres: removing %s (its project %s is gone)", folder, owner.read_text())
            shutil.rmtree(folder, ignore_errors=True)

    def prepare(self) -> None:
        self.install()
        self.home.mkdir(parents=True, exist_ok=True)
        if self.cluster_dir != self.home:
            self._clusters_root().mkdir(mode=0o755, parents=True, exist_ok=True)
        self._own(self.cluster_dir)
        self._check_reachable()
        (self.cluster_dir / OWNER_FILE).write_text(f"{self.home}\n")
        self._remove_orphans()
        self._own(self.socket_dir)
        if (self.data_dir / "PG_VERSION").exists():
            return  # initialised before: keep the data
        log.info("postgres: initdb in %s", self.data_dir)
        user = self.run_as()
        proc = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--auth-local=trust",  # the socket directory is private (0700, postgres)
                "--auth-host=scram-sha-256",
            ],
            cwd=self.cluster_dir,
            capture_output=True,
            text=True,
            user=user,
            group=self._owner_ids()[1] if user else None,
            extra_groups=[] if user else None,
        )
        if proc.returncode != 0:
            with self.log_path.open("a") as fh:
                fh.write(proc.stdout + proc.stderr)
            raise ServiceError(
                f"postgres: initdb failed (exit {proc.returncode}); log {self.log_path}: "
                + (proc.stderr.strip().splitlines() or ["?"])[-1]
            )

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": LOCAL_HOST,
            "unix_socket_directories": str(self.socket_dir),
            "unix_socket_permissions": "0700",
            "max_connections": "200",
            "logging_collector": "off",
            "log_line_prefix": "%m [%p] ",
        }
        cmd = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    # --- health and roles ----------------------------------------------------------------
    def _superuser(self, timeout: float) -> psycopg.Connection:
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            connect_timeout=max(int(timeout), 1),
            autocommit=True,
        )

    def probe(self, timeout: float) -> str | None:
        try:
            if self.is_local:
                if not port_open(LOCAL_HOST, self.port):
                    return f"nothing listens on {LOCAL_HOST}:{self.port}"
                conn = self._superuser(timeout)
            else:
                conn = psycopg.connect(self.endpoint, connect_timeout=max(int(timeout), 1))
        except psycopg.Error as exc:
            return f"no answer from PostgreSQL: {str(exc).strip().splitlines()[0]}"
        with conn:
            conn.execute("SELECT 1")
        return None

    def after_start(self) -> None:
        """The URI's role (its password kept in sync) and databases; idempotent."""
        if not self.is_local:
            return
        user, password, database = uri_parts(self.endpoint)
        with self._superuser(10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            stmt = sql.SQL(verb + " ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(password or None)
            )
            conn.execute(stmt)
            for db in (database, *EXTRA_DATABASES):
                found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if found.fetchone() is None:
                    log.info("postgres: creating database %s owned by %s", db, user)
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(db), sql.Identifier(user)
                        )
                    )
        try:
            psycopg.connect(self.endpoint, connect_timeout=5).close()
        except psycopg.Error as exc:
            raise ServiceError(
                f"postgres: server up but {self.setting} does not connect: {exc}; "
                f"log {self.log_path}"
            ) from None
