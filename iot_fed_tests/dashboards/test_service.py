"""The Superset service without starting Superset: bundle as code, secrets kept, failures."""

from __future__ import annotations

import io
import socket
import stat
import zipfile
from pathlib import Path

import pytest
import yaml

from iot_fed.config import load_settings
from iot_fed.dashboards import bundle, spec
from iot_fed.dashboards.datasets import DATASETS
from iot_fed.dashboards.urls import dashboard_urls
from iot_fed.services import manager
from iot_fed.services.process import ServiceError
from iot_fed.services.superset import SupersetService


def test_committed_bundle_is_the_rendered_spec() -> None:
    assert bundle.read() == bundle.render(), "run: python -m iot_fed.dashboards.bundle"


def test_zip_carries_the_uri_and_every_object() -> None:
    uri = "postgresql://u:p%40w@127.0.0.1:5999/rep"
    with zipfile.ZipFile(io.BytesIO(bundle.zip_bundle(uri, "Slice"))) as zf:
        names = zf.namelist()
        db = yaml.safe_load(zf.read("iot_fed_dashboards/databases/iot_fed_reporting.yaml"))
        meta = yaml.safe_load(zf.read("iot_fed_dashboards/metadata.yaml"))
    assert db["sqlalchemy_uri"] == "postgresql+psycopg2://u:p%40w@127.0.0.1:5999/rep"
    assert meta["type"] == "Slice"
    charts = [c for d in spec.DASHBOARDS for row in d.rows for c in row]
    assert sum(n.startswith("iot_fed_dashboards/charts/") for n in names) == len(charts)
    assert sum(n.startswith("iot_fed_dashboards/dashboards/") for n in names) == 4
    used = {c.dataset for c in charts} | {f["dataset"] for d in spec.DASHBOARDS for f in d.filters}
    assert used <= set(DATASETS)


def test_secret_and_admin_generated_once(tmp_path: Path, capsys) -> None:
    svc = SupersetService(load_settings(data_dir=tmp_path))
    first = svc.credentials()
    assert "generated once" in capsys.readouterr().out
    assert svc.credentials() == first and capsys.readouterr().out == ""
    key = svc.secret_file().read_text()
    assert svc.secret_file().read_text() == key and len(key.strip()) >= 48
    for name in ("admin.json", "secret_key"):
        assert stat.S_IMODE((svc.home / name).stat().st_mode) == 0o600
    given = SupersetService(
        load_settings(data_dir=tmp_path, superset_user="ops", superset_password="s3cret")
    )
    assert given.credentials() == ("ops", "s3cret")


def test_dashboard_urls_use_the_port() -> None:
    urls = dashboard_urls(load_settings(superset_port=18123))
    assert set(urls) == {"Fleet", "Device", "Federation", "Data quality"}
    assert urls["Fleet"] == "http://127.0.0.1:18123/superset/dashboard/iot-fed-fleet/"


@pytest.mark.slow  # waits out the 5 s start-up timeout
def test_port_taken_is_a_one_line_error_naming_log_and_switch(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = load_settings(data_dir=tmp_path, superset_port=busy.getsockname()[1])
        with pytest.raises(ServiceError) as exc:
            manager.up(settings, only=["superset"], timeout=5)
    message = str(exc.value)
    assert "superset" in message and "superset.log" in message and "\n" not in message
    assert "IOT_FED_REPORTING=false" in message


def test_missing_virtualenv_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(ServiceError, match="no Superset virtualenv"):
        manager.up(load_settings(data_dir=tmp_path, superset_port=port), only=["superset"])
