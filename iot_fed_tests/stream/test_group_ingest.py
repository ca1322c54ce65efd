"""``iot-fed ingest``: consumer-group members against the real broker and MongoDB-wire server.

Counts are exact: every produced reading is stored once (unique ``(moteid, epoch)``) and the
group's committed offsets reach the end of the topic, across a member killed with kill -9
while the group rebalances.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException
from pymongo.database import Database

from iot_fed.config import Settings
from iot_fed.store import DEAD_LETTERS, SENSOR_READINGS
from iot_fed.store.ingest_progress import landed_last_epochs, landed_offsets, landed_per_device
from iot_fed.stream import group_ingest
from iot_fed.stream.admin import delete_topics, topic_status
from iot_fed.stream.group_ingest import GroupIngester
from iot_fed.stream.ingest_result import IngestError
from iot_fed_tests.stream.helpers import ingest_all, produce_raw, produce_readings, readings_frame

IOT_FED = str(Path(sys.executable).with_name("iot-fed"))


@pytest.fixture
def cfg(settings: Settings, kafka_topic_factory, mongo_db: Database) -> Iterator[Settings]:
    """This test's topic (6 partitions: more than members), DLQ, group and database."""
    topic = kafka_topic_factory(6)
    yield settings.model_copy(
        update={
            "kafka_topic": topic,
            "kafka_dlq_topic": f"{topic}_dlq",
            "kafka_consumer_group": f"{topic}_group",
            "mongodb_database": mongo_db.name,
            "ingest_chunk_size": 500,
        }
    )
    delete_topics(settings, [f"{topic}_dlq"])


def env_of(cfg: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "IOT_FED_KAFKA_BOOTSTRAP": cfg.kafka_bootstrap,
        "IOT_FED_KAFKA_TOPIC": cfg.kafka_topic,
        "IOT_FED_KAFKA_DLQ_TOPIC": cfg.kafka_dlq_topic,
        "IOT_FED_KAFKA_CONSUMER_GROUP": cfg.kafka_consumer_group,
        "IOT_FED_MONGODB_URI": cfg.mongodb_uri,
        "IOT_FED_MONGODB_DATABASE": cfg.mongodb_database,
        "IOT_FED_INGEST_CHUNK_SIZE": str(cfg.ingest_chunk_size),
    }


def member(cfg: Settings, name: str, tmp_path: Path) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [IOT_FED, "ingest", "--name", name], env=env_of(cfg), stdout=log, stderr=subprocess.STDOUT
    )


def committed_total(cfg: Settings) -> int:
    [st] = topic_status(cfg, [cfg.kafka_topic], cfg.kafka_consumer_group)
    return sum(p.committed or 0 for p in st.partitions)


def wait_for(what: str, check, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_members_share_the_partitions_and_land_each_reading_once(cfg, mongo_db):
    df = readings_frame(3000, motes=10)
    a = GroupIngester(cfg, mongo_db, name="a")
    b = GroupIngester(cfg, mongo_db, name="b")
    try:
        deadline = time.monotonic() + 120
        while len(a.stats.assigned) + len(b.stats.assigned) < 6 or not b.stats.assigned:
            assert time.monotonic() < deadline, (a.stats, b.stats)  # both join the group
            a.poll_once(0.2)
            b.poll_once(0.2)
        assert not set(a.stats.assigned) & set(b.stats.assigned)
        produce_readings(cfg, cfg.kafka_topic, df)
        produce_raw(cfg, cfg.kafka_topic, [(b"3", b"not json")])
        while a.stats.messages + b.stats.messages < len(df) + 1:
            assert time.monotonic() < deadline, (a.stats, b.stats)
            a.poll_once(0.2)
            b.poll_once(0.2)
        assert a.stats.messages and b.stats.messages, "both members landed their share"
    finally:
        a.close()
        b.close()
    assert mongo_db[SENSOR_READINGS].count_documents({}) == len(df)
    assert mongo_db[DEAD_LETTERS].count_documents({}) == 1
    landed = landed_per_device(mongo_db)
    assert landed == df.groupby("moteid").size().to_dict(), "counts are exact"
    newest = landed_last_epochs(mongo_db, landed)  # bounds a new device's first training read
    assert newest == df.groupby("moteid")["epoch"].max().to_dict()
    offsets = landed_offsets(mongo_db, cfg.kafka_topic)
    assert sum(o.next_offset for o in offsets) == len(df) + 1
    assert {o.landed_by for o in offsets} <= {"a", "b"}
    assert committed_total(cfg) == len(df) + 1, "every landed chunk committed"


class _RefusingCommits:
    """The member's real consumer, whose commits the broker refuses while ``refuse`` is set
    (as while a killed broker's group coordinator moves)."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.refuse = True

    def commit(self, *args: object, **kwargs: object) -> object:
        if self.refuse:
            raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR))
        return self.consumer.commit(*args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self.consumer, name)


def test_a_refused_commit_is_retried_when_no_new_message_comes(cfg, mongo_db, monkeypatch):
    monkeypatch.setattr(group_ingest, "RETRY_PAUSE_S", 0.1)
    df = readings_frame(1200, motes=6)
    a = GroupIngester(cfg, mongo_db, name="a")
    refusing = a.consumer = _RefusingCommits(a.consumer)  # type: ignore[assignment]
    try:
        produce_readings(cfg, cfg.kafka_topic, df)
        deadline = time.monotonic() + 120
        while a.stats.messages < len(df):
            assert time.monotonic() < deadline, a.stats
            a.poll_once(0.2)
        assert a.stats.commits_refused and committed_total(cfg) == 0
        refusing.refuse = False
        while committed_total(cfg) < len(df):  # the topic is idle: only the retry commits
            assert time.monotonic() < deadline, a.stats
            assert a.poll_once(0.2) == 0
    finally:
        a.close()
    assert mongo_db[SENSOR_READINGS].count_documents({}) == len(df)


def test_a_member_killed_during_a_rebalance_loses_and_duplicates_nothing(cfg, mongo_db, tmp_path):
    n = 30_000
    df = readings_frame(n, motes=50)
    first, rest = df.iloc[: n // 3], df.iloc[n // 3 :]
    produce_readings(cfg, cfg.kafka_topic, first)
    a, b = member(cfg, "a", tmp_path), member(cfg, "b", tmp_path)
    procs = [a, b]
    try:
        wait_for(
            "a first landing", lambda: mongo_db[SENSOR_READINGS].estimated_document_count() > 0
        )
        producer = threading.Thread(target=produce_readings, args=(cfg, cfg.kafka_topic, rest))
        producer.start()
        c = member(cfg, "c", tmp_path)  # joins: the group rebalances ...
        procs.append(c)
        time.sleep(0.5)
        os.kill(a.pid, signal.SIGKILL)  # ... and a dies mid-stream, uncommitted work and all
        a.wait()
        producer.join()
        wait_for("everything committed", lambda: committed_total(cfg) == n, timeout_s=300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    stored = mongo_db[SENSOR_READINGS].count_documents({})
    by_key = [{"$group": {"_id": {"m": "$moteid", "e": "$epoch"}}}]
    keys = len(list(mongo_db[SENSOR_READINGS].aggregate(by_key)))
    assert (stored, keys) == (n, n), "none lost, none twice"
    assert b.returncode == 0 and c.returncode == 0, "SIGTERM leaves the group cleanly"
    logs = (tmp_path / "b.log").read_text() + (tmp_path / "c.log").read_text()
    assert "assigned" in logs and "revoked" in logs, "the survivors saw the rebalance"


def test_a_missing_topic_is_a_clear_error_not_an_idle_member(cfg, mongo_db, tmp_path):
    gone = cfg.model_copy(update={"kafka_topic": "no_such_topic_here"})
    with pytest.raises(IngestError, match="does not exist.*create-topics"):
        GroupIngester(gone, mongo_db, name="x")
    out = subprocess.run(
        [IOT_FED, "ingest"],
        env={**env_of(gone), "IOT_FED_KAFKA_TOPIC": "no_such_topic_here"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and "does not exist" in out.stderr


def test_another_applications_group_is_refused(cfg, mongo_db, kafka_topic_factory):
    other = kafka_topic_factory(1)
    produce_readings(cfg, other, readings_frame(10, motes=1))
    ingest_all(
        cfg.model_copy(update={"kafka_topic": other}), mongo_db, 10
    )  # the group now owns `other`
    with pytest.raises(IngestError, match="holds offsets of"):
        GroupIngester(cfg, mongo_db, name="x")
