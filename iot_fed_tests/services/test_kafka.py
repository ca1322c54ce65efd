"""The real local Kafka broker: produce/consume and committed consumer-group offsets."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, Producer

from iot_fed.config import Settings


def _produce(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = Producer({**settings.kafka_client_config(), "acks": "all"})
    for i, value in enumerate(values):
        producer.produce(topic, key=str(i % 3).encode(), value=value)
    assert producer.flush(30) == 0


def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )


def _consume(consumer: Consumer, n: int, timeout_s: float = 30.0) -> list:
    msgs = []
    for _ in range(int(timeout_s * 10)):
        if len(msgs) >= n:
            break
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        msgs.append(msg)
    return msgs


def test_produce_consume_round_trip(settings: Settings, kafka_topic_factory: Callable) -> None:
    topic = kafka_topic_factory(1)
    values = [f"reading-{i}".encode() for i in range(20)]
    _produce(settings, topic, values)

    consumer = _consumer(settings, f"g-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    try:
        msgs = _consume(consumer, len(values))
    finally:
        consumer.close()
    assert [m.value() for m in msgs] == values
    assert [m.offset() for m in msgs] == list(range(20))
    assert msgs[4].key() == b"1"


def test_committed_offset_survives_consumer_restart(
    settings: Settings, kafka_topic_factory: Callable
) -> None:
    topic = kafka_topic_factory(1)
    values = [f"v{i}".encode() for i in range(10)]
    _produce(settings, topic, values)
    group = f"g-{uuid.uuid4().hex[:8]}"

    first = _consumer(settings, group)
    first.subscribe([topic])
    try:
        got = _consume(first, 4)
        assert [m.value() for m in got] == values[:4]
        first.commit(message=got[-1], asynchronous=False)  # commits offset 4 (next to read)
    finally:
        first.close()

    second = _consumer(settings, group)
    second.subscribe([topic])
    try:
        rest = _consume(second, 6)
    finally:
        second.close()
    assert [m.value() for m in rest] == values[4:]
    assert rest[0].offset() == 4


def test_kafka_topic_fixture_is_fresh(settings: Settings, kafka_topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    md = AdminClient(settings.kafka_client_config()).list_topics(kafka_topic, timeout=10)
    assert len(md.topics[kafka_topic].partitions) == settings.kafka_partitions
