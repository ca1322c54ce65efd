"""A 3-broker KRaft cluster on loopback (started by the project's services code): topics
replicated 3 times with min.insync.replicas 2, and a broker killed with kill -9 while
readings are produced, landed by two ingesters and scored by the streaming scorer. Counts
are exact: every reading landed once and given one verdict."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from pymongo.database import Database

from iot_fed.analytics.jars import install_spark_jars, jars_dir
from iot_fed.config import Settings, load_settings
from iot_fed.services import manager
from iot_fed.services.artifacts import artifacts_dir
from iot_fed.services.process import port_open
from iot_fed.store import SENSOR_READINGS, init_database
from iot_fed.stream.admin import ensure_topics, topic_mismatches, topic_status
from iot_fed_tests.analytics.helpers import (
    make_bundle,
    start_scorer,
    store_global,
    wait_scorer_running,
    wait_until,
)
from iot_fed_tests.stream.helpers import produce_readings, readings_frame

pytestmark = [pytest.mark.slow, pytest.mark.services]
IOT_FED = str(Path(sys.executable).with_name("iot-fed"))
BROKERS = 3


def _free_ports(n: int) -> list[int]:
    """``n`` free ports whose +1000 (the KRaft controller listeners) are free too."""
    out: list[int] = []
    while len(out) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + 1000 <= 65535 and not port_open("127.0.0.1", p + 1000) and p not in out:
            out.append(p)
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Iterator[Settings]:
    """Settings of a 3-node cluster with its own state; topics replicated 3, min ISR 2."""
    tmp = tmp_path_factory.mktemp("kafka_cluster")
    ports = _free_ports(BROKERS)
    iso = load_settings(
        data_dir=tmp,
        kafka_bootstrap=",".join(f"127.0.0.1:{p}" for p in ports),
        mongodb_uri=settings.mongodb_uri,
        kafka_replication=3,
        kafka_min_insync_replicas=2,
        kafka_partitions=6,
    )
    manager.install(settings)
    iso.state_dir.mkdir(parents=True)
    artifacts_dir(iso.state_dir).symlink_to(artifacts_dir(settings.state_dir).resolve())
    install_spark_jars(settings)  # the scorer's connectors, cached
    jars_dir(iso).parent.symlink_to(jars_dir(settings).parent.resolve())
    statuses = manager.up(iso, ["kafka"], timeout=180)
    assert [s.name for s in statuses] == ["kafka", "kafka-2", "kafka-3"]
    assert all(s.healthy for s in statuses), [s.line() for s in statuses]
    try:
        yield iso
    finally:
        manager.down(iso, ["kafka"])


def _env(cfg: Settings, db: Database) -> dict[str, str]:
    return {
        **os.environ,
        "IOT_FED_DATA_DIR": str(cfg.data_dir),
        "IOT_FED_KAFKA_BOOTSTRAP": cfg.kafka_bootstrap,
        "IOT_FED_KAFKA_TOPIC": cfg.kafka_topic,
        "IOT_FED_KAFKA_DLQ_TOPIC": cfg.kafka_dlq_topic,
        "IOT_FED_KAFKA_CONSUMER_GROUP": cfg.kafka_consumer_group,
        "IOT_FED_KAFKA_REPLICATION": "3",
        "IOT_FED_KAFKA_MIN_INSYNC_REPLICAS": "2",
        "IOT_FED_KAFKA_PARTITIONS": "6",
        "IOT_FED_MONGODB_URI": cfg.mongodb_uri,
        "IOT_FED_MONGODB_DATABASE": db.name,
        "IOT_FED_INGEST_CHUNK_SIZE": "500",
        "PYTHONFAULTHANDLER": "1",
    }


def test_topics_follow_the_settings_and_a_different_one_is_named(cluster: Settings):
    cfg = cluster.model_copy(update={"kafka_topic": "replicated", "kafka_dlq_topic": "rep_dlq"})
    ensure_topics(cfg)
    assert topic_mismatches(cfg, ["replicated", "rep_dlq"]) == []
    single = cfg.model_copy(update={"kafka_replication": 1, "kafka_min_insync_replicas": 1})
    ensure_topics(single, ["single"])
    [line] = topic_mismatches(cfg, ["single"])
    assert "replication 1" in line and "ask for 6, 3, 2" in line


def test_a_broker_killed_while_producing_ingesting_and_scoring_loses_and_duplicates_nothing(
    cluster: Settings, mongo_db: Database, tmp_path: Path
):
    cfg = cluster.model_copy(
        update={
            "kafka_topic": "readings",
            "kafka_dlq_topic": "readings_dlq",
            "kafka_consumer_group": "ingest_group",
        }
    )
    ensure_topics(cfg)
    n = 20_000
    df = readings_frame(n, motes=40)
    env = _env(cfg, mongo_db)
    init_database(mongo_db)
    store_global(mongo_db, make_bundle(df.iloc[:4000], seed=2))
    log = tmp_path / "scorer.log"
    scorer = start_scorer(mongo_db.name, cfg.kafka_topic, "cluster_scorer", log, env)
    wait_scorer_running(mongo_db, "cluster_scorer", scorer, log)
    members = [
        subprocess.Popen(
            [IOT_FED, "ingest", "--name", name],
            env=env,
            stdout=open(tmp_path / f"{name}.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        for name in ("a", "b")
    ]
    producer = threading.Thread(target=produce_readings, args=(cfg, cfg.kafka_topic, df))
    try:
        producer.start()
        deadline = time.monotonic() + 120
        while mongo_db[SENSOR_READINGS].estimated_document_count() < n // 10:
            if time.monotonic() > deadline:
                for m in members:
                    m.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: their stacks to the log
                    m.wait(30)
                logs = "\n".join((tmp_path / f"{x}.log").read_text()[-3000:] for x in "ab")
                pytest.fail(f"nothing landed; ingester logs:\n{logs}")
            time.sleep(0.2)
        [victim] = [s for s in manager.status(cfg, ["kafka"]) if s.name == "kafka-2"]
        os.kill(victim.pid, signal.SIGKILL)  # mid-stream: producing and landing go on
        producer.join(timeout=300)
        assert not producer.is_alive(), "the producer finished without the killed broker"
        deadline = time.monotonic() + 300
        st = None
        while True:
            if time.monotonic() > deadline:
                parts = [(p.partition, p.committed, p.high) for p in st.partitions] if st else []
                logs = "\n".join(
                    line
                    for x in "ab"
                    for line in (tmp_path / f"{x}.log").read_text().splitlines()
                    if "commit" in line or "revoked" in line or "assigned" in line
                )
                pytest.fail(f"not all {n} committed in time: {parts}\n{logs[-4000:]}")
            try:  # until the killed broker's partitions have new leaders, watermarks time out
                [st] = topic_status(cfg, [cfg.kafka_topic], cfg.kafka_consumer_group)
            except KafkaException:
                time.sleep(1)
                continue
            if sum(p.committed or 0 for p in st.partitions) >= n:
                break
            time.sleep(1)
        assert all(m.poll() is None for m in members), "the ingesters continued, no restart"
        preds = mongo_db["predictions"]
        wait_until(lambda: preds.count_documents({}) >= n, 600, f"{n} predictions")
        time.sleep(3)  # a late duplicate would show up here
        assert scorer.poll() is None, "the scorer continued, no restart"
    finally:
        if scorer.poll() is None:
            os.killpg(scorer.pid, signal.SIGTERM)
        scorer.wait(timeout=60)
        for m in members:
            if m.poll() is None:
                m.send_signal(signal.SIGTERM)
        for m in members:
            m.wait(timeout=60)
        manager.up(cfg, ["kafka"], timeout=180)  # the killed node back, for the next test
    assert sum(p.high for p in st.partitions) == n, "the idempotent producer wrote each once"
    stored = mongo_db[SENSOR_READINGS].count_documents({})
    by_key = [{"$group": {"_id": {"m": "$moteid", "e": "$epoch"}}}]
    assert (stored, len(list(mongo_db[SENSOR_READINGS].aggregate(by_key)))) == (n, n)
    verdicts = [(d["moteid"], d["epoch"]) for d in preds.find({}, {"moteid": 1, "epoch": 1})]
    assert len(verdicts) == len(set(verdicts)) == n, "one verdict per reading"
