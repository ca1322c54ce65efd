"""``iot-fed services`` lifecycle against real processes: idempotent up, status, errors,
data surviving down/up, and rollback when a service dies during start.

The lifecycle tests run a second, isolated pair of services (own state dir under tmp,
own ports) so the shared session services are not disturbed; they reuse the cached
artifacts through a symlink.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pymongo import MongoClient, WriteConcern

from iot_fed import cli
from iot_fed.config import Settings, get_settings, load_settings
from iot_fed.services import manager
from iot_fed.services.artifacts import artifacts_dir
from iot_fed.services.mongodb import MongoService
from iot_fed.services.process import ProcessRecord, ServiceError, is_alive, port_open

CORE = ("mongodb", "kafka")  # the isolated pair; PostgreSQL has its own tests (test_postgres)


def _free_port(taken: set[int] | None = None) -> int:
    """A free port p whose p+1000 (Kafka controller) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + 1000 <= 65535 and not port_open("127.0.0.1", p + 1000) and p not in (taken or ()):
            return p
    raise RuntimeError("no free port pair")


def _isolated(tmp: Path, shared: Settings) -> Settings:
    kport = _free_port()
    mport = _free_port({kport, kport + 1000})
    iso = load_settings(
        data_dir=tmp,
        kafka_bootstrap=f"127.0.0.1:{kport}",
        mongodb_uri=f"mongodb://127.0.0.1:{mport}/",
    )
    manager.install(shared)  # cached after the first run
    iso.state_dir.mkdir(parents=True)
    artifacts_dir(iso.state_dir).symlink_to(artifacts_dir(shared.state_dir).resolve())
    return iso


@pytest.fixture
def iso(tmp_path: Path, settings: Settings) -> Iterator[Settings]:
    s = _isolated(tmp_path, settings)
    try:
        yield s
    finally:
        manager.down(s, CORE)


def test_up_twice_is_idempotent(services, settings: Settings) -> None:
    # superset (slow to start) has its own session in iot_fed_tests/dashboards
    pipeline = [n for n in manager.SERVICE_NAMES if n != "superset"]
    first = manager.status(settings, pipeline)
    again = manager.up(settings, pipeline)
    assert {st.name for st in again} == {"kafka", "mongodb", "postgres"}
    for st in again:
        assert st.healthy
        assert st.state in ("already running", "external, not managed")
    assert {st.name: st.pid for st in again} == {st.name: st.pid for st in first}


def test_status_prints_endpoints_and_health(services, capsys: pytest.CaptureFixture) -> None:
    get_settings.cache_clear()
    rc = cli.main(["services", "status"])
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert set(lines) == set(manager.SERVICE_NAMES)
    # every service that is on counts: superset (not started by this session) fails it
    assert rc == (0 if "unhealthy" not in out else 1), out
    for name in ("kafka", "mongodb"):
        assert cli.main(["services", "status", "--only", name]) == 0
    capsys.readouterr()
    assert services.kafka_bootstrap in lines["kafka"]
    assert services.mongodb_uri in lines["mongodb"]
    assert "healthy" in lines["kafka"] and "unhealthy" not in lines["kafka"]
    assert "healthy" in lines["mongodb"] and "unhealthy" not in lines["mongodb"]


def test_foreign_listener_on_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        s = load_settings(
            data_dir=tmp_path,
            kafka_bootstrap=f"127.0.0.1:{port}",
            mongodb_uri=f"mongodb://127.0.0.1:{port}/",
        )
        for name in ("kafka", "mongodb"):
            with pytest.raises(ServiceError) as err:
                manager.up(s, only=[name], timeout=5)
            msg = str(err.value)
            assert msg.startswith(f"{name}: port 127.0.0.1:{port} is already in use"), msg
            assert "did not start" in msg and "\n" not in msg
        assert not (s.state_dir / "kafka" / "process.json").exists()
        assert not (s.state_dir / "mongodb" / "process.json").exists()
        assert [st.state for st in manager.status(s, CORE, timeout=1)] == [
            "not started by iot-fed"
        ] * 2


def test_external_services_are_not_managed(tmp_path: Path) -> None:
    s = load_settings(
        data_dir=tmp_path,
        kafka_bootstrap="192.0.2.1:9092",  # TEST-NET: never reachable
        mongodb_uri="mongodb://192.0.2.1:27017/",
    )
    assert [st.state for st in manager.down(s, CORE)] == ["external, not managed"] * 2
    with pytest.raises(ServiceError, match=r"^mongodb: external, not managed .* not reachable"):
        manager.up(s, CORE, timeout=1)
    assert not (s.state_dir / "mongodb").exists()


@pytest.mark.services
def test_a_killed_service_is_started_again_and_a_stopped_one_is_not(iso: Settings) -> None:
    (st,) = manager.up(iso, ["mongodb"])
    with MongoClient(iso.mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        docs = client.keep.get_collection("docs", write_concern=WriteConcern(w=1, j=True))
        docs.insert_many([{"_id": i} for i in range(3)])  # journaled: durable when answered
    record = ProcessRecord.load(MongoService(iso).record_path)
    os.kill(st.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60  # a liveness bound: the JVM's threads are exiting
    while is_alive(record):
        assert time.monotonic() < deadline, "the killed server is still there"
        time.sleep(0.2)
    (again,) = manager.revive(iso)
    assert (again.name, again.state, again.healthy) == ("mongodb", "restarted", True)
    assert again.pid != st.pid
    with MongoClient(iso.mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        assert client.keep.docs.count_documents({}) == 3  # acknowledged data survived
    assert manager.revive(iso) == []  # alive: nothing to do
    manager.down(iso, ["mongodb"])
    assert manager.revive(iso) == []  # stopped on purpose: stays down
    assert not port_open("127.0.0.1", iso.mongodb_port)


def test_data_survives_down_and_up(iso: Settings) -> None:
    started = manager.up(iso, CORE)
    assert [st.state for st in started] == ["started", "started"]
    topic = "persist"
    admin = AdminClient(iso.kafka_client_config())
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({**iso.kafka_client_config(), "acks": "all"})
    for i in range(5):
        producer.produce(topic, value=f"m{i}".encode())
    assert producer.flush(30) == 0
    with MongoClient(iso.mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        client.keep.docs.insert_many([{"_id": i, "v": i * i} for i in range(5)])

    stopped = manager.down(iso, CORE)
    assert [st.state for st in stopped] == ["stopped", "stopped"]
    assert not port_open("127.0.0.1", iso.kafka_port)
    assert not port_open("127.0.0.1", iso.mongodb_port)
    assert [st.state for st in manager.status(iso, CORE, timeout=1)] == ["not running"] * 2

    again = manager.up(iso, CORE)
    assert [st.state for st in again] == ["started", "started"]
    consumer = Consumer(
        {**iso.kafka_client_config(), "group.id": "persist", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    values = []
    try:
        for _ in range(300):
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
            if len(values) == 5:
                break
    finally:
        consumer.close()
    assert values == [f"m{i}".encode() for i in range(5)]
    with MongoClient(iso.mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        assert sorted(d["v"] for d in client.keep.docs.find()) == [0, 1, 4, 9, 16]


@pytest.mark.services
def test_service_dying_during_start_is_rolled_back(iso: Settings) -> None:
    # A data dir formatted for another node makes the real broker exit at start-up.
    data = iso.state_dir / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text(
        "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=2\n"
    )
    with pytest.raises(ServiceError) as err:
        manager.up(iso, CORE, timeout=60)
    msg = str(err.value)
    assert re.match(r"kafka: process \d+ exited during start; log .*kafka\.log:\n", msg), msg
    assert len(msg.splitlines()) > 1  # the log tail follows
    # mongodb was started by the same `up` and must be stopped again
    assert not port_open("127.0.0.1", iso.mongodb_port)
    assert not port_open("127.0.0.1", iso.kafka_port)
    assert [st.state for st in manager.status(iso, CORE, timeout=1)] == ["not running"] * 2
