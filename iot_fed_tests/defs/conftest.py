"""Fixtures for the Dagster layer: resources pointed at a fresh database and topic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import dagster as dg
import pytest
from pymongo.database import Database

from iot_fed.config import get_settings
from iot_fed.defs.resources import KafkaResource, MongoDBResource, SettingsResource


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
