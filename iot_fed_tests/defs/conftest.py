"""Fixtures for the Dagster layer: resources pointed at a fresh database and topic."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from pymongo.database import Database

from iot_fed.config import get_settings
from iot_fed.defs.resources import KafkaResource, MongoDBResource, SettingsResource
from iot_fed.services.dagster_instance import RunLauncher, base_document, with_launcher
from iot_fed_tests.defs.daemon import Daemon


@pytest.fixture
def pipeline_env(
    monkeypatch: pytest.MonkeyPatch, kafka_topic: str, mongo_db: Database
) -> Iterator[dict]:
    """Settings for one isolated pipeline: own topic, consumer group and database; small
    thresholds so a few dozen readings make a device ready."""
    monkeypatch.setenv("IOT_FED_KAFKA_TOPIC", kafka_topic)
    monkeypatch.setenv("IOT_FED_KAFKA_CONSUMER_GROUP", f"g_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("IOT_FED_MONGODB_DATABASE", mongo_db.name)
    monkeypatch.setenv("IOT_FED_MIN_NEW_SAMPLES", "20")
    monkeypatch.setenv("IOT_FED_LOCAL_EPOCHS", "3")
    # test fleets are a few devices x a few dozen readings: no calibration-size gate (it
    # has its own test, test_models.py)
    monkeypatch.setenv("IOT_FED_MIN_CALIBRATION_WINDOWS", "0")
    get_settings.cache_clear()
    resources = {
        "kafka": KafkaResource(),
        "mongodb": MongoDBResource(),
        "settings": SettingsResource(),
    }
    yield {"resources": resources, "db": mongo_db, "topic": kafka_topic}
    get_settings.cache_clear()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def run_launcher() -> RunLauncher:
    """The launcher of ``daemon_home``'s instance (a test module overrides it)."""
    return "warm"


@pytest.fixture
def daemon_home(
    pipeline_env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_launcher: RunLauncher
) -> Iterator[tuple[Daemon, dg.DagsterInstance]]:
    """A throwaway SQLite instance (the project's dagster.yaml with ``run_launcher``,
    monitoring polled every 2 s), an ingester landing the readings, and a daemon for it
    (started by the test); the daemon's process group is stopped after the test."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    doc = with_launcher(base_document(), run_launcher)
    doc["run_monitoring"] = {**doc.get("run_monitoring", {}), "poll_interval_seconds": 2}
    (home / "dagster.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("IOT_FED_SENSOR_INTERVAL_S", "2")
    monkeypatch.setenv("IOT_FED_AGGREGATION_INTERVAL_S", "2")
    monkeypatch.setenv("IOT_FED_TRAINING_RUN_MAX_RUNTIME_S", "120")
    daemon = Daemon(home)
    # the ingestion consumer group (one member) lands the readings the sensor triggers on
    ingester = subprocess.Popen(
        [str(Path(sys.executable).with_name("iot-fed")), "ingest", "--name", "test"],
        env=dict(os.environ),
        stdout=open(home / "ingester.log", "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    with dg.DagsterInstance.get() as instance:
        try:
            yield daemon, instance
        finally:
            daemon.stop()
            ingester.terminate()
            ingester.wait(60)
