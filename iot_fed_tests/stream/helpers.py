"""Test helpers: produce raw messages, read a whole topic, build small readings frames."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from iot_fed.config import Settings
from iot_fed.stream.admin import ensure_topics, partitions_of
from iot_fed.stream.kafka_config import producer_config
from iot_fed.stream.messages import encode_key, encode_reading


def readings_frame(n: int, motes: int = 5, start: str = "2004-03-01") -> pd.DataFrame:
    """``n`` clean readings round-robin over ``motes`` motes, one per 31 s per mote."""
    i = np.arange(n)
    return pd.DataFrame(
        {
            "ts": pd.Timestamp(start, tz="UTC") + pd.to_timedelta(i * 31 / motes, unit="s"),
            "epoch": i // motes,
            "moteid": i % motes + 1,
            "temperature": 20 + np.sin(i / 10),
            "humidity": 40 + np.cos(i / 10),
            "light": 100.0 + i % 7,
            "voltage": 2.7 - i * 1e-5,
            "label": [None] * n,
        }
    )


def produce_raw(
    settings: Settings, topic: str, items: list[tuple[bytes | None, bytes | None]]
) -> None:
    """Send ``(key, value)`` pairs as they are and wait for delivery."""
    ensure_topics(settings, [topic])
    p = Producer(producer_config(settings))
    errors: list[Any] = []
    for key, value in items:
        p.produce(topic, value, key, on_delivery=lambda e, _m: e and errors.append(e))
    assert p.flush(30) == 0 and not errors, errors


def produce_readings(settings: Settings, topic: str, df: pd.DataFrame) -> None:
    produce_raw(
        settings,
        topic,
        [(encode_key(r["moteid"]), encode_reading(r)) for r in df.to_dict("records")],
    )


_NO_LEADER_YET = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


def watermarks(c: Consumer, topic: str, p: int, cached: bool = False) -> tuple[int, int]:
    """``(low, high)`` of one partition, waiting (up to 30 s) while a topic created a moment
    ago has no leader yet: the broker answers NOT_LEADER_FOR_PARTITION until it has one."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=cached)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() not in _NO_LEADER_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_topic(settings: Settings, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every message currently in ``topic`` (all partitions), in partition/offset order."""
    c = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "iot_fed_tests_reader",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = partitions_of(settings, topic)
        ends = {}
        for p in parts:
            low, high = watermarks(c, topic, p)
            if high > low:
                ends[p] = high
        c.assign([TopicPartition(topic, p, 0) for p in ends] or [])
        out, deadline = [], time.monotonic() + timeout
        pos = {p: 0 for p in ends}
        while any(pos[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    out.append(m)
                    pos[m.partition()] = m.offset() + 1
        return sorted(out, key=lambda m: (m.partition(), m.offset()))
    finally:
        c.close()


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    c = Consumer({**settings.kafka_client_config(), "group.id": "iot_fed_tests_reader"})
    try:
        return {p: watermarks(c, topic, p)[1] for p in partitions_of(settings, topic)}
    finally:
        c.close()


def ingest_all(settings: Settings, db: Any, messages: int, *, timeout_s: float = 120.0) -> Any:
    """Run one ``iot-fed ingest`` member in-process until it has landed ``messages``
    (readings and dead letters) of ``settings.kafka_topic``; return its stats."""
    from iot_fed.stream.group_ingest import GroupIngester

    member = GroupIngester(settings, db, name="test-ingester")
    deadline = time.monotonic() + timeout_s
    try:
        while member.stats.messages < messages:
            assert time.monotonic() < deadline, f"landed {member.stats.messages} of {messages}"
            member.poll_once()
        return member.stats
    finally:
        member.close()
