"""The PostgreSQL service on the real Debian server: roles, databases, user, failures."""

from __future__ import annotations

import pwd
import socket
from pathlib import Path

import psycopg
import pytest

from iot_fed.config import Settings, load_settings
from iot_fed.services import manager
from iot_fed.services.postgres import PostgresService, database_uri, uri_parts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uri_parts_and_database_uri() -> None:
    uri = "postgresql://u%40x:p%2Fw@db.example:6543/rep?sslmode=require"
    assert uri_parts(uri) == ("u@x", "p/w", "rep")
    assert (
        database_uri(uri, "dagster")
        == "postgresql://u%40x:p%2Fw@db.example:6543/dagster?sslmode=require"
    )


def test_databases_owned_by_uri_role(postgres: str) -> None:
    with psycopg.connect(postgres) as conn:
        rows = conn.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
            "WHERE datname IN ('iot_fed', 'superset', 'dagster') ORDER BY datname"
        ).fetchall()
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute(
            "SELECT current_setting('server_version_num')::int / 10000"
        ).fetchone() == (15,)
    user = uri_parts(postgres)[0]
    assert rows == [("dagster", user), ("iot_fed", user), ("superset", user)]


def test_server_runs_as_postgres_user_and_is_idempotent(postgres: str, settings: Settings) -> None:
    (st,) = manager.status(settings, only=["postgres"])
    assert st.healthy and st.pid
    status = Path(f"/proc/{st.pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert pwd.getpwuid(uid).pw_name == "postgres"
    (again,) = manager.up(settings, only=["postgres"])
    assert again.state == "already running" and again.pid == st.pid
    PostgresService(settings).after_start()  # role and databases exist: no error, no change


def test_missing_package_is_one_line_error_not_a_crash(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        postgres_bin_dir=tmp_path / "no-such-bin",
        postgres_uri=f"postgresql://a:b@127.0.0.1:{_free_port()}/x",
    )
    (st,) = manager.up(settings, only=["postgres"])
    assert st.state == "failed" and st.healthy is False
    assert "postgres" in st.detail and "binaries not found" in st.detail
    assert str(PostgresService(settings).log_path) in st.detail and "\n" not in st.detail
    assert manager.install(settings, only=["postgres"]) == {}  # skipped, not raised


def test_port_taken_names_service_and_log(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = load_settings(
            data_dir=tmp_path, postgres_uri=f"postgresql://a:b@127.0.0.1:{port}/x"
        )
        (st,) = manager.up(settings, only=["postgres"])
    assert st.state == "failed"
    assert f"port 127.0.0.1:{port} is already in use" in st.detail
    assert "postgres.log" in st.detail


def test_external_server_is_probed_not_started(postgres: str, tmp_path: Path) -> None:
    name = socket.gethostname()
    if name in ("localhost", "127.0.0.1") or socket.gethostbyname(name) != "127.0.0.1":
        pytest.skip("needs a host name for 127.0.0.1 other than localhost")
    port = int(postgres.rsplit(":", 1)[1].split("/")[0])
    external = load_settings(
        data_dir=tmp_path, postgres_uri=f"postgresql://iot_fed:iot_fed@{name}:{port}/iot_fed"
    )
    assert not external.postgres_is_local
    (st,) = manager.up(external, only=["postgres"])
    assert (st.state, st.healthy, st.pid) == ("external, not managed", True, None)
    assert not (tmp_path / "services" / "postgres").exists()  # nothing prepared or started


def test_external_unreachable_is_reported(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, postgres_uri="postgresql://a:b@192.0.2.1:5432/x")
    (st,) = manager.up(settings, only=["postgres"], timeout=2)
    assert st.state == "failed" and "not reachable" in st.detail
