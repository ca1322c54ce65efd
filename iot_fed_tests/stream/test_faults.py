"""Fault tests on the real services: kill -9 (via the PIDs the service manager tracks).

Each counts exactly: every reading acknowledged/produced is stored once, none twice.
The streaming scorer's and the Dagster daemon's faults have their own tests:
``analytics/test_scorer_kill.py`` and ``defs/test_daemon_kill.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as TP
from pymongo.database import Database

from iot_fed.config import Settings
from iot_fed.services import manager
from iot_fed.services.process import ProcessRecord, is_alive
from iot_fed.store import SENSOR_READINGS, connect
from iot_fed.stream.admin import fetch_committed
from iot_fed.stream.ingest import IngestError, Ingestor, IngestResult
from iot_fed.stream.kafka_config import producer_config
from iot_fed.stream.producer import ReplayData, replay
from iot_fed_tests.stream.helpers import end_offsets, produce_readings, read_topic, readings_frame

pytestmark = [pytest.mark.services, pytest.mark.slow]


def kill9(settings: Settings, name: str) -> None:
    """SIGKILL the process the service manager started for ``name``; wait until it is gone."""
    (svc,) = manager.services_for(settings, [name])
    rec = ProcessRecord.load(svc.record_path)
    if rec is None or not is_alive(rec):
        pytest.skip(f"{name} is not a process iot-fed started (external service)")
    os.kill(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while is_alive(rec):  # its ports may close a moment later: manager.up waits for them
        assert time.monotonic() < deadline, f"{name} pid {rec.pid} survived SIGKILL"
        time.sleep(0.05)


def restart(settings: Settings, name: str) -> None:
    manager.up(settings, [name], timeout=120)


@pytest.fixture
def cfg(settings: Settings, kafka_topic_factory: Callable[..., str]) -> Settings:
    topic = kafka_topic_factory(3)
    return settings.model_copy(
        update={
            "kafka_topic": topic,
            "kafka_dlq_topic": f"{topic}_dlq",
            "kafka_consumer_group": f"g_{topic}",
        }
    )


@pytest.fixture
def db(mongo_db: Database, settings: Settings) -> Iterator[Database]:
    """The test database through a client with short timeouts (a dead server fails fast)."""
    d = connect(settings.mongodb_uri, mongo_db.name, timeout=3.0)
    yield d
    d.client.close()


@pytest.fixture(autouse=True)
def _services_back(settings: Settings, services) -> Iterator[None]:
    yield
    manager.up(settings, timeout=120)  # whatever a test killed, the next one finds it up


def stored_keys(db: Database) -> list[tuple[int, int]]:
    return [(d["moteid"], d["epoch"]) for d in db[SENSOR_READINGS].find({}, {"_id": 0})]


def committed(cfg: Settings) -> dict[int, int]:
    c = Consumer({**cfg.kafka_client_config(), "group.id": cfg.kafka_consumer_group})
    try:  # fetch_committed waits out a coordinator still loading after the broker restart
        parts = [TP(cfg.kafka_topic, p) for p in range(3)]
        return {tp.partition: tp.offset for tp in fetch_committed(c, parts, 60) if tp.offset >= 0}
    finally:
        c.close()


def drain(ing: Ingestor, *, attempts: int = 30) -> list[IngestResult | IngestError]:
    """Group-mode batches until no lag; failed batches are returned as their error."""
    out: list[IngestResult | IngestError] = []
    for _ in range(attempts):
        try:
            res = ing.run_batch(2000, 120.0)
        except IngestError as exc:
            out.append(exc)
            time.sleep(1)
            continue
        out.append(res)
        if res.lag == 0 and res.reached_end:
            return out
    raise AssertionError(f"ingestion did not catch up: {out[-3:]}")


def test_broker_killed_during_production(settings: Settings, cfg: Settings) -> None:
    n = 6000
    data = ReplayData.from_frame(readings_frame(n, motes=6))
    result: dict = {}
    t = threading.Thread(
        target=lambda: result.update(
            stats=replay(cfg, data, rate=1000, limit=n, outage_budget_s=120)
        )
    )
    t.start()
    deadline = time.monotonic() + 60
    while sum(end_offsets(cfg, cfg.kafka_topic).values()) < 1000:
        assert time.monotonic() < deadline and t.is_alive()
        time.sleep(0.2)
    kill9(settings, "kafka")
    time.sleep(3)  # the producer keeps queueing while the broker is gone
    restart(settings, "kafka")
    t.join(timeout=180)
    stats = result["stats"]
    assert stats.ok and stats.sent == stats.delivered == n and stats.undelivered == 0
    msgs = read_topic(cfg, cfg.kafka_topic)
    keys = {(m.key(), m.value()) for m in msgs}
    assert len(msgs) == n and len(keys) == n  # 0 lost, 0 duplicated


def test_broker_killed_during_ingestion(settings: Settings, cfg: Settings, db: Database) -> None:
    n = 6000
    produce_readings(cfg, cfg.kafka_topic, readings_frame(n, motes=20))
    with Ingestor(cfg, db, chunk_size=1000) as ing:
        first = ing.run_batch(2000, 120.0)
        assert first.committed and first.n_inserted == 2000
        kill9(settings, "kafka")
        with pytest.raises(IngestError) as down:
            ing.run_batch(2000, 10.0)
        line = str(down.value)
        assert line.startswith("Kafka at ") and "\n" not in line and "nothing committed" in line
        restart(settings, "kafka")
        assert committed(cfg) == first.offsets_to_commit  # nothing committed while down
        results = drain(ing)
    assert isinstance(results[0], IngestResult) or isinstance(results[1], IngestResult)
    keys = stored_keys(db)
    assert len(keys) == n and len(set(keys)) == n
    assert committed(cfg) == end_offsets(cfg, cfg.kafka_topic)


def test_database_killed_after_committed_tick(
    settings: Settings, cfg: Settings, db: Database
) -> None:
    n = 6000
    produce_readings(cfg, cfg.kafka_topic, readings_frame(n, motes=20))
    with Ingestor(cfg, db, chunk_size=1000) as ing:
        first = ing.run_batch(3000, 120.0)
        assert first.committed and first.n_inserted == 3000
        kill9(settings, "mongodb")  # right after the offsets were committed
        with pytest.raises(IngestError) as down:
            ing.run_batch(2000, 10.0)
        line = str(down.value)
        assert line.startswith("MongoDB at ") and "\n" not in line
        assert committed(cfg) == first.offsets_to_commit
        restart(settings, "mongodb")
        assert len(stored_keys(db)) == 3000  # every acknowledged reading survived
        results = drain(ing)
    assert isinstance(results[0], IngestResult) or isinstance(results[1], IngestResult)
    keys = stored_keys(db)
    assert len(keys) == n and len(set(keys)) == n
    assert committed(cfg) == end_offsets(cfg, cfg.kafka_topic)


def test_producer_gives_up_and_counts_what_it_did_not_deliver(
    settings: Settings, kafka_topic: str
) -> None:
    """No broker answers: the queue fills (back-pressure), then the budget ends it; the
    stats count every queued record as failed."""
    dead = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    producer = Producer(producer_config(dead, **{"queue.buffering.max.messages": 5}))
    data = ReplayData.from_frame(readings_frame(50))
    t0 = time.monotonic()
    stats = replay(
        settings, data, topic=kafka_topic, rate=0, limit=50, producer=producer, outage_budget_s=2
    )
    assert time.monotonic() - t0 > 1.5  # it waited out its 2 s budget before giving up
    assert stats.gave_up and not stats.ok
    assert stats.sent == 5 and stats.undelivered == 5 and stats.failed == 5
    assert stats.delivered == 0


def test_broker_outage_during_stream_limit(
    settings: Settings, cfg: Settings, tmp_path: Path
) -> None:
    """``iot-fed stream --limit`` rides out a broker outage (IOT_FED_TEST_OUTAGE_S, 15 s
    here; bench/bench_durability.py, part broker-outage, measures 60 s): 0 lost, 0
    duplicated, exit 0."""
    outage = float(os.environ.get("IOT_FED_TEST_OUTAGE_S", "15"))
    n, rate = 1500, 100
    path = tmp_path / "clean.parquet"
    readings_frame(n, motes=6).to_parquet(path, index=False)
    env = {
        **os.environ,
        "IOT_FED_KAFKA_BOOTSTRAP": cfg.kafka_bootstrap,
        "IOT_FED_KAFKA_TOPIC": cfg.kafka_topic,
    }
    cmd = [sys.executable, "-m", "iot_fed.cli", "stream", "--path", str(path)]
    proc = subprocess.Popen(
        [*cmd, "--limit", str(n), "--rate", str(rate)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while sum(end_offsets(cfg, cfg.kafka_topic).values()) < 200:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        kill9(settings, "kafka")
        time.sleep(outage)
        restart(settings, "kafka")
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    stats = json.loads(stdout.strip().splitlines()[-1])
    assert stats["sent"] == stats["delivered"] == n and stats["failed"] == 0
    msgs = read_topic(cfg, cfg.kafka_topic)
    assert len(msgs) == n and len({m.value() for m in msgs}) == n
