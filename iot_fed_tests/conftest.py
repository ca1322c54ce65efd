"""Shared session fixtures: real local services (Kafka, MongoDB-compatible), settings, and
per-test fresh resources (a MongoDB database, a Kafka topic).

Tests that use ``services``, ``mongo_db``, ``mongo_client``, ``kafka_topic``,
``kafka_topic_factory``, ``postgres`` or a fixture that starts a server of its own are
marked ``services`` automatically (deselect with ``-m "not services"``). ``make test-fast``
runs what is left that is not ``slow`` either (markers in pyproject.toml).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from pymongo import MongoClient
from pymongo.database import Database

from iot_fed.config import Settings, load_settings

# The suite's devices send hours of readings, not the day a device needs before it leaves
# the learning state (IOT_FED_CALIBRATION_MIN_SPAN_H): off here (subprocesses inherit it);
# federation/test_batched_store.py tests the rule itself.
os.environ.setdefault("IOT_FED_CALIBRATION_MIN_SPAN_H", "0")
from iot_fed.services import manager

SERVICE_FIXTURES = {"services", "mongo_client", "mongo_db", "kafka_topic", "kafka_topic_factory"}
# fixtures of services/ tests that start servers of their own: an isolated Kafka + MongoDB
# pair (iso), the JVM MongoDB-compatible server's jar for a server the test starts
SERVICE_FIXTURES |= {"iso", "server_jar", "mjs_jar"}
# slow tests in services/ (they wait out a start-up timeout or create a PostgreSQL cluster),
# by name: that folder's owners may mark them in place and drop them from here
SLOW_TESTS = {
    "test_foreign_listener_on_port_is_a_clear_error",
    "test_port_taken_names_service_and_log",
    "test_a_private_project_folder_gets_a_cluster_its_server_can_reach",
    "test_clusters_of_deleted_checkouts_are_removed",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)
        if item.name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@dataclass(frozen=True)
class Services:
    """Endpoints of the running services for this test session."""

    settings: Settings
    kafka_bootstrap: str
    mongodb_uri: str


def _unique(request: pytest.FixtureRequest, prefix: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9]+", "_", request.node.name)[:40].strip("_")
    return f"{prefix}_{name}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings from the environment (IOT_FED_*), as the application would see them."""
    return load_settings()


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Services]:
    """Kafka and MongoDB up for the whole session (started if needed, via the manager).

    Services this session started are stopped at the end, unless they were running
    before or another test session (another process) is still using them.
    """
    with manager.session(settings, only=[n for n in manager.SERVICE_NAMES if n != "superset"]):
        yield Services(settings, settings.kafka_bootstrap, settings.mongodb_uri)


@pytest.fixture(scope="session")
def mongo_client(services: Services) -> Iterator[MongoClient]:
    client: MongoClient = MongoClient(services.mongodb_uri, serverSelectionTimeoutMS=10_000)
    yield client
    client.close()


@pytest.fixture
def mongo_db(mongo_client: MongoClient, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A fresh, uniquely named database, dropped after the test."""
    name = _unique(request, "t")[:60]
    db = mongo_client[name]
    yield db
    mongo_client.drop_database(name)


@pytest.fixture
def kafka_topic_factory(
    services: Services, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """``make(partitions=1) -> name``: fresh topics, all deleted after the test."""
    admin = AdminClient(services.settings.kafka_client_config())
    created: list[str] = []

    def make(partitions: int = 1) -> str:
        name = _unique(request, "test")
        futures = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=30)
        futures[name].result(timeout=30)
        created.append(name)
        return name

    yield make
    if created:
        for fut in admin.delete_topics(created, operation_timeout=30).values():
            fut.result(timeout=30)


@pytest.fixture
def kafka_topic(kafka_topic_factory: Callable[..., str], settings: Settings) -> str:
    """A fresh, uniquely named topic (``settings.kafka_partitions`` partitions)."""
    return kafka_topic_factory(settings.kafka_partitions)


SERVICE_FIXTURES.add("postgres")


@pytest.fixture(scope="session")
def postgres(settings: Settings) -> Iterator[str]:
    """The project's PostgreSQL up for the session (started if needed); yields its URI."""
    with manager.session(settings, only=("postgres",)) as statuses:
        if not statuses[0].healthy:
            pytest.fail(f"postgres did not start: {statuses[0].detail}")
        yield settings.postgres_uri
