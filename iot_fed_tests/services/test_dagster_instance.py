"""``iot-fed dagster-instance``: a real Dagster instance on the project's PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml

from iot_fed.config import load_settings
from iot_fed.services import dagster_instance as di
from iot_fed.services.process import ServiceError

DOWN = "postgresql://iot_fed:iot_fed@127.0.0.1:9/iot_fed"


@pytest.fixture
def dagster_db(postgres: str) -> Iterator[str]:
    """A throwaway database for the instance storage (the real ``dagster`` one stays)."""
    name = f"t_dagster_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@dg.asset
def probe_asset() -> int:
    return 7


def test_instance_on_postgres_stores_runs_and_events(
    postgres: str, dagster_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(postgres_uri=postgres)
    config = di.configure(tmp_path, settings, "auto", dagster_db)
    assert config.storage == "postgres"
    text = (tmp_path / "dagster.yaml").read_text()
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        doc = yaml.safe_load(text)[key]["config"]["postgres_db"]
        assert doc["password"] == {"env": di.PASSWORD_ENV} and doc["db_name"] == dagster_db
    coordinator = yaml.safe_load(text)["run_coordinator"]["config"]
    assert coordinator["max_concurrent_runs"] == 3  # project settings kept
    for key, value in config.env.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PooledPostgresRunStorage"
        assert instance.run_storage._engine.pool.size() == 1  # pooled, not NullPool
        result = dg.materialize([probe_asset], instance=instance)
        assert result.success
        instance.report_runless_asset_event(
            dg.AssetMaterialization("reporting_probe", metadata={"rows": 3})
        )
    with dg.DagsterInstance.from_config(str(tmp_path)) as again:  # read back, new instance
        (run,) = again.get_runs()
        assert run.run_id == result.run_id and run.is_success
        event = again.get_latest_materialization_event(dg.AssetKey("reporting_probe"))
        assert event is not None and event.asset_materialization.metadata["rows"].value == 3
    with psycopg.connect(di.database_uri(postgres, dagster_db)) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)


def test_unreachable_postgres_is_named(tmp_path: Path) -> None:
    settings = load_settings(postgres_uri=DOWN)
    with pytest.raises(ServiceError) as err:
        di.configure(tmp_path, settings, "postgres")
    assert "IOT_FED_POSTGRES_URI=postgresql://***@127.0.0.1:9/iot_fed" in str(err.value)
    assert "database dagster" in str(err.value) and not (tmp_path / "dagster.yaml").exists()


def test_auto_falls_back_to_sqlite_only_for_a_new_instance(tmp_path: Path) -> None:
    settings = load_settings(postgres_uri=DOWN)
    config = di.configure(tmp_path, settings, "auto")
    assert config.storage == "sqlite" and "not reachable" in config.note and not config.env
    written = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    assert "storage" not in written and "run_storage" not in written
    di.write_instance(tmp_path, di.InstanceConfig("postgres", di.postgres_storage(DOWN, "dagster")))
    with pytest.raises(ServiceError, match="not reachable"):  # no silent switch of history
        di.configure(tmp_path, settings, "auto")
    assert di.configure(tmp_path, settings, "sqlite").storage == "sqlite"


def test_a_users_own_dagster_yaml_is_left_as_it_is(tmp_path: Path) -> None:
    """A file without the project's first line (another run launcher, keys we do not know)
    is never rewritten, whatever storage is asked for."""
    own = (
        "run_launcher:\n  module: dagster_k8s\n  class: K8sRunLauncher\n"
        "some_future_key: {enabled: true}\n"
    )
    (tmp_path / "dagster.yaml").write_text(own)
    for storage in ("auto", "sqlite", "postgres"):
        config = di.configure(tmp_path, load_settings(postgres_uri=DOWN), storage)
        assert config.storage == "yours" and "left as it is" in config.note
        assert (tmp_path / "dagster.yaml").read_text() == own


def test_password_is_never_a_literal() -> None:
    text = di.InstanceConfig(
        "postgres", di.postgres_storage("postgresql://u:s3cret@h:6543/x", "dagster")
    ).text()
    assert "s3cret" not in text and di.PASSWORD_ENV in text and "6543" in text


def _load(home: Path) -> None:
    """Dagster's own instance loading: the yaml is validated against its instance schema."""
    with dg.DagsterInstance.from_config(str(home)):
        pass


@pytest.mark.parametrize("from_file", [True, False], ids=["scripts-dagster-yaml", "defaults"])
def test_onboarding_modal_is_off_and_dagster_accepts_it(
    from_file: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every written instance turns the UI's "Join the Dagster community" modal off
    (``nux: enabled: false``), and Dagster loads that instance."""
    if not from_file:  # no scripts/dagster.yaml: the built-in defaults
        monkeypatch.setattr(di, "_project_root", lambda: tmp_path / "no-project")
    home = tmp_path / "home"
    di.configure(home, load_settings(postgres_uri=DOWN), "sqlite")
    written = yaml.safe_load((home / "dagster.yaml").read_text())
    assert written["nux"] == {"enabled": False}
    assert written["telemetry"] == {"enabled": False}
    _load(home)
    # the loading really checks the section: a misspelt key is refused
    written["nux"] = {"enable": False}
    (home / "dagster.yaml").write_text(yaml.safe_dump(written))
    with pytest.raises(dg.DagsterInvalidConfigError, match="enable"):
        _load(home)


def test_run_launcher_setting_default_writes_dagsters_stock_launcher(tmp_path: Path) -> None:
    """``IOT_FED_RUN_LAUNCHER=default``: Dagster's own launcher and queued coordinator, with
    the project's queue settings; ``warm`` (the default) keeps the project's."""
    settings = load_settings(postgres_uri=DOWN, run_launcher="default")
    config = di.configure(tmp_path, settings, "sqlite")
    assert config.note.endswith("run launcher: default")  # the line iot-fed run prints
    written = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    assert written["run_launcher"] == di.STOCK_LAUNCHER
    coordinator = written["run_coordinator"]
    assert {k: coordinator[k] for k in ("module", "class")} == di.STOCK_COORDINATOR
    assert coordinator["config"] == di.base_document()["run_coordinator"]["config"]
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_launcher) is dg.DefaultRunLauncher
        assert type(instance.run_coordinator) is dg.QueuedRunCoordinator
    di.configure(tmp_path, load_settings(postgres_uri=DOWN), "sqlite")
    warm = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    assert warm["run_launcher"]["class"] == "WarmRunLauncher"
