"""Kafka -> MongoDB ingestion against the real broker and MongoDB-compatible server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from iot_fed.config import Settings
from iot_fed.readings import DEAD_LETTER_RAW_BYTES
from iot_fed.store import DEAD_LETTERS, SENSOR_READINGS, validator
from iot_fed.stream import landing
from iot_fed.stream.admin import delete_topics, topic_status
from iot_fed.stream.ingest import IngestError, Ingestor, ingest_batch
from iot_fed.stream.kafka_config import consumer_config
from iot_fed.stream.landing import Lander
from iot_fed.stream.messages import encode_key, encode_reading
from iot_fed_tests.stream.helpers import (
    end_offsets,
    produce_raw,
    produce_readings,
    read_topic,
    readings_frame,
)
from iot_fed_tests.stream.poison import poison_corpus

pytestmark = pytest.mark.services


@pytest.fixture
def cfg(settings: Settings, kafka_topic: str) -> Iterator[Settings]:
    """Settings with this test's topic, its own DLQ topic and consumer group."""
    yield settings.model_copy(
        update={
            "kafka_topic": kafka_topic,
            "kafka_dlq_topic": f"{kafka_topic}_dlq",
            "kafka_consumer_group": f"{kafka_topic}_group",
        }
    )
    delete_topics(settings, [f"{kafka_topic}_dlq"])


def committed(cfg: Settings) -> dict[int, int]:
    c = Consumer({**cfg.kafka_client_config(), "group.id": cfg.kafka_consumer_group})
    try:
        parts = [TopicPartition(cfg.kafka_topic, p) for p in end_offsets(cfg, cfg.kafka_topic)]
        return {tp.partition: tp.offset for tp in c.committed(parts, timeout=10) if tp.offset >= 0}
    finally:
        c.close()


def test_poison_is_dead_lettered_and_valid_readings_land(cfg: Settings, mongo_db) -> None:
    df = readings_frame(120, motes=4)
    records = df.to_dict("records")
    poison = poison_corpus(cfg.kafka_max_message_bytes)
    items = [(encode_key(r["moteid"]), encode_reading(r)) for r in records[:60]]
    items += [(b"3", value) for _, value, _ in poison]
    items += [(encode_key(r["moteid"]), encode_reading(r)) for r in records[60:]]
    produce_raw(cfg, cfg.kafka_topic, items)

    res = ingest_batch(cfg, mongo_db, 10_000, 20.0, start_offsets={})

    assert res.n_messages == len(items)
    assert (res.n_valid, res.n_inserted, res.n_duplicates) == (120, 120, 0)
    assert res.per_device_new_counts == {1: 30, 2: 30, 3: 30, 4: 30}
    assert res.n_dead == len(poison)
    assert res.reached_end and res.next_offsets == end_offsets(cfg, cfg.kafka_topic)
    summary = json.loads(json.dumps(res.to_dict()))
    assert summary["lag"] == 0 and summary["per_device_new_counts"]["1"] == 30

    readings = mongo_db[SENSOR_READINGS]
    assert readings.count_documents({}) == 120
    doc = readings.find_one({"moteid": 2, "epoch": 5})
    assert doc["temperature"] == pytest.approx(records[21]["temperature"])
    validator(SENSOR_READINGS).validate_many([doc])  # what we skip on the hot path holds
    assert isinstance(doc["kafka_partition"], int) and doc["kafka_offset"] >= 0

    dead = list(mongo_db[DEAD_LETTERS].find())
    assert len(dead) == len(poison)
    by_raw = {d["raw"]: d["reason"] for d in dead}
    for name, value, expected in poison:
        assert by_raw[value].startswith(expected), name
    assert all(d["topic"] == cfg.kafka_topic and d["offset"] >= 0 for d in dead)

    dlq = read_topic(cfg, cfg.kafka_dlq_topic)
    assert sorted((m.value() or b"") for m in dlq) == sorted((v or b"") for _, v, _ in poison)
    headers = dict(dlq[0].headers())
    assert {"reason", "source_topic", "source_partition", "source_offset"} <= set(headers)


def test_a_value_too_large_for_the_dlq_is_kept_cut_and_the_batch_commits(
    cfg: Settings, mongo_db
) -> None:
    """A foreign producer's lz4 batch carries a 3 MB value (and a 300 KiB key) the source
    topic accepts compressed; sent whole, the DLQ refused it (over the broker's 1 MB) and
    every batch failed on it again, so ingestion stopped for good."""
    records = readings_frame(20, motes=2).to_dict("records")
    huge, key = b"x" * 3_000_000, b"k" * 300_000
    p = Producer(
        {**cfg.kafka_client_config(), "compression.type": "lz4", "message.max.bytes": 10_000_000}
    )
    for r in records[:10]:
        p.produce(cfg.kafka_topic, encode_reading(r), encode_key(r["moteid"]))
    p.produce(cfg.kafka_topic, huge, key)
    for r in records[10:]:
        p.produce(cfg.kafka_topic, encode_reading(r), encode_key(r["moteid"]))
    assert p.flush(30) == 0

    res = ingest_batch(cfg, mongo_db, 1000, 20.0, start_offsets={})

    assert (res.n_valid, res.n_dead, res.committed) == (20, 1, True)
    assert committed(cfg) == end_offsets(cfg, cfg.kafka_topic)
    dead = mongo_db[DEAD_LETTERS].find_one()
    assert dead["reason"].startswith("oversized") and dead["raw_size"] == len(huge)
    assert dead["raw"] == huge[:DEAD_LETTER_RAW_BYTES] and len(dead["key"]) == DEAD_LETTER_RAW_BYTES
    (dlq,) = read_topic(cfg, cfg.kafka_dlq_topic)
    assert dlq.value() == huge[:DEAD_LETTER_RAW_BYTES] and dlq.key() == key[:DEAD_LETTER_RAW_BYTES]
    assert dict(dlq.headers())["raw_size"] == str(len(huge)).encode()


def test_same_batch_twice_adds_nothing(cfg: Settings, mongo_db) -> None:
    produce_readings(cfg, cfg.kafka_topic, readings_frame(90, motes=3))
    produce_raw(cfg, cfg.kafka_topic, [(b"1", b"not json")])
    first = ingest_batch(cfg, mongo_db, 1000, 20.0, start_offsets={}, commit=False)
    again = ingest_batch(cfg, mongo_db, 1000, 20.0, start_offsets={}, commit=False)
    assert first.n_inserted == 90 and first.n_dead == 1
    assert again.n_messages == first.n_messages and again.n_valid == 90
    assert (again.n_inserted, again.n_duplicates) == (0, 90)
    assert again.per_device_new_counts == {}
    assert again.next_offsets == first.next_offsets
    assert mongo_db[SENSOR_READINGS].count_documents({}) == 90
    assert mongo_db[DEAD_LETTERS].count_documents({}) == 1


def test_upsert_strategy_is_equivalent(cfg: Settings, mongo_db) -> None:
    produce_readings(cfg, cfg.kafka_topic, readings_frame(40, motes=2))
    a = ingest_batch(cfg, mongo_db, 1000, 20.0, {}, commit=False, strategy="upsert")
    b = ingest_batch(cfg, mongo_db, 1000, 20.0, {}, commit=False, strategy="upsert")
    assert a.per_device_new_counts == {1: 20, 2: 20} and b.n_inserted == 0
    assert mongo_db[SENSOR_READINGS].count_documents({}) == 40


def test_cursor_mode_resumes_from_returned_offsets(cfg: Settings, mongo_db) -> None:
    produce_readings(cfg, cfg.kafka_topic, readings_frame(100, motes=5))
    cursor: dict = {}
    seen, inserted = 0, 0
    with Ingestor(cfg, mongo_db) as ing:
        for _ in range(10):
            res = ing.run_batch(30, 20.0, cursor, commit=False)
            assert res.n_messages <= 30
            seen += res.n_messages
            inserted += res.n_inserted
            # JSON round trip of the cursor (Dagster stores it as a string)
            cursor = {str(p): o for p, o in res.next_offsets.items()}
            if res.reached_end:
                break
    assert (seen, inserted) == (100, 100)
    final = ingest_batch(cfg, mongo_db, 1000, 120.0, cursor)
    assert final.n_messages == 0 and final.reached_end and not final.offsets_to_commit
    assert final.duration_s < 120.0  # it stops at the topic's end, not at its time budget


def test_group_mode_commits_only_after_writes(
    cfg: Settings, mongo_db, monkeypatch: pytest.MonkeyPatch
) -> None:
    produce_readings(cfg, cfg.kafka_topic, readings_frame(60, motes=3))
    produce_raw(cfg, cfg.kafka_topic, [(b"1", b"\xff\xfe junk")])

    def broken(*_a, **_k):
        raise RuntimeError("mongo down")

    monkeypatch.setattr(landing, "insert_readings", broken)
    with pytest.raises(RuntimeError, match="mongo down"):
        ingest_batch(cfg, mongo_db, 1000, 20.0)
    assert committed(cfg) == {}
    monkeypatch.undo()

    res = ingest_batch(cfg, mongo_db, 1000, 20.0)  # group mode: from committed (none)
    assert res.n_inserted == 60 and res.n_dead == 1 and res.committed
    ends = {p: o for p, o in end_offsets(cfg, cfg.kafka_topic).items() if o > 0}
    assert committed(cfg) == res.offsets_to_commit == ends
    assert mongo_db[SENSOR_READINGS].count_documents({}) == 60
    (status,) = topic_status(cfg, [cfg.kafka_topic], cfg.kafka_consumer_group)
    assert status.messages == 61 and status.lag == 0

    produce_readings(cfg, cfg.kafka_topic, readings_frame(63, motes=3).tail(3))
    more = ingest_batch(cfg, mongo_db, 1000, 20.0)
    assert more.n_messages == 3 and more.per_device_new_counts == {1: 1, 2: 1, 3: 1}


def test_dlq_failure_blocks_commit(cfg: Settings, mongo_db, monkeypatch) -> None:
    produce_raw(cfg, cfg.kafka_topic, [(b"1", b"nope")])

    def fail_flush(self) -> None:
        raise IngestError("DLQ not durable")

    monkeypatch.setattr(Lander, "flush_dlq", fail_flush)
    with pytest.raises(IngestError):
        ingest_batch(cfg, mongo_db, 100, 10.0)
    assert committed(cfg) == {}


def test_long_lived_ingestor_retries_failed_batch(cfg: Settings, mongo_db, monkeypatch) -> None:
    """A failed batch moved the consumer; retrying the same cursor must not skip messages."""
    produce_readings(cfg, cfg.kafka_topic, readings_frame(50, motes=5))
    real = landing.insert_readings
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("transient")
        return real(*a, **k)

    monkeypatch.setattr(landing, "insert_readings", flaky)
    with Ingestor(cfg, mongo_db, chunk_size=10) as ing:
        first = ing.run_batch(10, 10.0, {}, commit=False)
        assert first.n_inserted == 10
        with pytest.raises(RuntimeError, match="transient"):
            ing.run_batch(1000, 10.0, first.next_offsets, commit=False)
        again = ing.run_batch(1000, 10.0, first.next_offsets, commit=False)
    assert again.n_inserted == 40 and again.reached_end
    assert mongo_db[SENSOR_READINGS].count_documents({}) == 50


def test_batch_that_drains_the_topic_does_not_wait_out_the_consume_timeout(
    cfg: Settings, mongo_db
) -> None:
    """Asking for more than the partitions hold: consume() is capped at what is left below
    the end marks, so it returns with it instead of after its 1 s timeout."""
    produce_readings(cfg, cfg.kafka_topic, readings_frame(30, motes=3))

    class CountingConsumer(Consumer):
        asked: list[int] = []

        def consume(self, num_messages: int = 1, *args, **kwargs):  # type: ignore[override]
            self.asked.append(num_messages)
            return super().consume(num_messages, *args, **kwargs)

    consumer = CountingConsumer(consumer_config(cfg))
    with Ingestor(cfg, mongo_db, chunk_size=10_000, consumer=consumer) as ing:
        res = ing.run_batch(10_000, 20.0, {}, commit=False)
    consumer.close()
    assert res.n_inserted == 30 and res.reached_end
    # every call asks for no more than what is left below the end marks (uncapped: 10,000,
    # and the call that finds nothing more waits out its timeout)
    assert CountingConsumer.asked and all(n <= 30 for n in CountingConsumer.asked)
