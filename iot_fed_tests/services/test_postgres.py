"""The PostgreSQL service on the real Debian server: roles, databases, user, failures."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import uuid
from pathlib import Path

import psycopg
import pytest

from iot_fed.config import Settings, load_settings
from iot_fed.services import manager
from iot_fed.services.postgres import PostgresService, database_uri, uri_parts
from iot_fed.services.process import ServiceError


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


def test_missing_package_is_one_line_error_naming_the_switch(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        postgres_bin_dir=tmp_path / "no-such-bin",
        postgres_uri=f"postgresql://a:b@127.0.0.1:{_free_port()}/x",
    )
    with pytest.raises(ServiceError) as exc:
        manager.up(settings, only=["postgres"])
    message = str(exc.value)
    assert "binaries not found" in message and "\n" not in message
    assert str(PostgresService(settings).log_path) in message
    assert "IOT_FED_REPORTING=false" in message
    with pytest.raises(ServiceError, match="IOT_FED_REPORTING=false"):
        manager.install(settings, only=["postgres"])


def test_switched_off_on_purpose_starts_nothing(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        postgres_bin_dir=tmp_path / "no-such-bin",
        postgres_uri=f"postgresql://a:b@127.0.0.1:{_free_port()}/x",
        reporting=False,
    )
    statuses = manager.up(settings, only=["postgres", "superset"])
    assert [(s.name, s.state) for s in statuses] == [
        ("postgres", "disabled"),
        ("superset", "disabled"),
    ]
    assert all("IOT_FED_REPORTING=false" in s.detail for s in statuses)
    assert manager.install(settings, only=["postgres", "superset"]) == {}
    assert not (tmp_path / "services" / "postgres").exists()


def test_port_taken_names_service_and_log(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = load_settings(
            data_dir=tmp_path, postgres_uri=f"postgresql://a:b@127.0.0.1:{port}/x"
        )
        with pytest.raises(ServiceError) as exc:
            manager.up(settings, only=["postgres"])
    assert f"port 127.0.0.1:{port} is already in use" in str(exc.value)
    assert "postgres.log" in str(exc.value)


def test_a_private_project_folder_gets_a_cluster_its_server_can_reach(tmp_path: Path) -> None:
    """A checkout in a mode-700 folder (a home directory): the server runs as ``postgres``,
    which cannot enter it; the cluster lives in that user's home and ``purge`` removes it."""
    if os.geteuid() != 0:
        pytest.skip("the server runs as another user only when iot-fed runs as root")
    private = tmp_path / "home with space"
    private.mkdir(mode=0o700)
    settings = load_settings(
        data_dir=private / "assets_data",
        postgres_uri=f"postgresql://iot_fed:pw@127.0.0.1:{_free_port()}/iot_fed",
    )
    svc = PostgresService(settings)
    assert not svc.cluster_dir.is_relative_to(private)
    try:
        (st,) = manager.up(settings, only=["postgres"])
        assert st.state == "started" and st.healthy
        with psycopg.connect(settings.postgres_uri) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert (svc.cluster_dir / "owner").read_text().strip() == str(svc.home)
        assert (private.stat().st_mode & 0o777) == 0o700  # the user's folder is untouched
    finally:
        removed = manager.purge(settings, only=["postgres"])
    assert svc.cluster_dir in removed and not svc.cluster_dir.exists()


def test_clusters_of_deleted_checkouts_are_removed(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("clusters live outside the checkout only when iot-fed runs as root")
    settings = load_settings(
        data_dir=tmp_path / "assets_data",
        postgres_uri=f"postgresql://iot_fed:pw@127.0.0.1:{_free_port()}/iot_fed",
    )
    svc = PostgresService(settings)
    orphan = svc.cluster_dir.parent / f"gone-{uuid.uuid4().hex[:8]}"
    kept = svc.cluster_dir.parent / f"kept-{uuid.uuid4().hex[:8]}"
    for folder, owner in ((orphan, tmp_path / "deleted"), (kept, tmp_path)):
        (folder / "data").mkdir(parents=True)
        (folder / "owner").write_text(f"{owner}\n")
    try:
        svc.prepare()  # initdb of this checkout's cluster, and the sweep
        assert not orphan.exists() and kept.exists()
        assert (svc.data_dir / "PG_VERSION").exists()
    finally:
        shutil.rmtree(kept, ignore_errors=True)
        manager.purge(settings, only=["postgres"])


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
    with pytest.raises(ServiceError, match="not reachable"):
        manager.up(settings, only=["postgres"], timeout=2)
