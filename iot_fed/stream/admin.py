"""Kafka topic administration and status (topics, offsets, consumer-group lag)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from iot_fed.config import Settings

log = logging.getLogger(__name__)


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka_client_config())


def ensure_topics(
    settings: Settings,
    topics: list[str] | None = None,
    *,
    partitions: int | None = None,
    timeout: float = 15.0,
) -> list[str]:
    """Create the given topics (default: data + DLQ topic) if missing; return those created.

    New topics get ``settings.kafka_partitions`` (or ``partitions``),
    ``kafka_replication`` and ``retention.ms = kafka_retention_ms``.
    """
    topics = topics or [settings.kafka_topic, settings.kafka_dlq_topic]
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [
        NewTopic(
            t,
            num_partitions=partitions or settings.kafka_partitions,
            replication_factor=settings.kafka_replication,
            config={
                "retention.ms": str(settings.kafka_retention_ms),
                "min.insync.replicas": str(settings.kafka_min_insync_replicas),
            },
        )
        for t in topics
        if t not in existing
    ]
    for line in topic_mismatches(settings, [t for t in topics if t in existing]):
        log.warning("%s", line)
    created: list[str] = []
    for topic, fut in admin.create_topics(new, operation_timeout=timeout).items() if new else []:
        try:
            fut.result(timeout)
            created.append(topic)
            log.info("created topic %s", topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    if created:
        _wait_for_metadata(admin, created, timeout)
    return created


def topic_mismatches(
    settings: Settings, topics: list[str], *, partitions: int | None = None, timeout: float = 15.0
) -> list[str]:
    """One line per existing topic whose partitions, replication or min.insync.replicas
    differ from the settings (Kafka applies them only when a topic is created)."""
    from confluent_kafka.admin import ConfigResource

    admin = admin_client(settings)
    settle = time.monotonic() + min(timeout, 5.0)
    while True:  # a topic created a moment ago may be missing from this broker's metadata
        md = admin.list_topics(timeout=timeout).topics
        present = [t for t in topics if t in md and md[t].error is None]
        if len(present) == len(topics) or time.monotonic() > settle:
            break
        time.sleep(0.2)
    if not present:
        return []

    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in present]
    deadline = time.monotonic() + timeout
    while True:  # ... or unknown to the broker asked for its configuration
        try:
            futures = admin.describe_configs(resources).items()
            configs = {r.name: f.result(timeout) for r, f in futures}
            break
        except KafkaException as exc:
            code = exc.args[0].code()
            if code != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    want_parts = partitions or settings.kafka_partitions
    lines = []
    for t in present:
        parts = md[t].partitions
        replication = min(len(p.replicas) for p in parts.values())
        isr = int(configs[t]["min.insync.replicas"].value)
        got = (len(parts), replication, isr)
        want = (want_parts, settings.kafka_replication, settings.kafka_min_insync_replicas)
        if got != want:
            lines.append(
                f"topic {t} has {got[0]} partitions, replication {got[1]}, "
                f"min.insync.replicas {got[2]}; the settings ask for {want[0]}, {want[1]}, "
                f"{want[2]} (IOT_FED_KAFKA_PARTITIONS / _REPLICATION / _MIN_INSYNC_REPLICAS "
                "apply when a topic is created: alter or recreate it to match)"
            )
    return lines


def _wait_for_metadata(admin: AdminClient, topics: list[str], timeout: float) -> None:
    """Block until the new topics have leaders (so producing/assigning works at once)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout).topics
        if all(
            t in md
            and md[t].error is None
            and md[t].partitions
            and all(p.leader >= 0 for p in md[t].partitions.values())
            for t in topics
        ):
            return
        time.sleep(0.05)


def delete_topics(settings: Settings, topics: list[str], timeout: float = 15.0) -> None:
    """Delete topics, ignoring ones that do not exist."""
    admin = admin_client(settings)
    for _topic, fut in admin.delete_topics(topics, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


def partitions_of(settings: Settings, topic: str, timeout: float = 10.0) -> list[int]:
    """Partition ids of ``topic`` (empty when it does not exist)."""
    md = admin_client(settings).list_topics(topic, timeout=timeout).topics.get(topic)
    if md is None or md.error is not None:
        return []
    return sorted(md.partitions)


_COORDINATOR_WAIT = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
}


def committed_topics(settings: Settings, group: str, timeout: float = 30.0) -> set[str]:
    """Topics ``group`` has committed offsets for (empty for a new group). Retries while
    the group coordinator is loading (a broker that just started).

    Asks with a consumer's offset fetch over every topic's partitions: confluent-kafka's
    ``AdminClient.list_consumer_group_offsets`` crashed the process (SIGSEGV) on a cluster
    whose ``__consumer_offsets`` did not exist yet."""
    md = admin_client(settings).list_topics(timeout=timeout).topics
    parts = [
        TopicPartition(t, p)
        for t, tmd in md.items()
        if not t.startswith("__") and tmd.error is None
        for p in tmd.partitions
    ]
    if not parts:
        return set()
    consumer = Consumer({**settings.kafka_client_config(), "group.id": group})
    try:
        return {tp.topic for tp in fetch_committed(consumer, parts, timeout) if tp.offset >= 0}
    finally:
        consumer.close()


def fetch_committed(
    consumer: Consumer, parts: list[TopicPartition], timeout: float = 30.0
) -> list[TopicPartition]:
    """``consumer.committed(parts)``, waiting out a group coordinator that is moving or
    loading (a broker of the cluster was killed or has just started)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.committed(parts, timeout=10)
        except KafkaException as exc:
            if exc.args[0].code() not in _COORDINATOR_WAIT or time.monotonic() > deadline:
                raise
            log.info("committed offsets not readable yet (%s); retrying", exc)
            time.sleep(0.5)


@dataclass
class PartitionStatus:
    partition: int
    low: int
    high: int
    committed: int | None = None
    lag: int | None = None


@dataclass
class TopicStatus:
    topic: str
    partitions: list[PartitionStatus] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return sum(p.high - p.low for p in self.partitions)

    @property
    def lag(self) -> int | None:
        lags = [p.lag for p in self.partitions if p.lag is not None]
        return sum(lags) if lags else None


def topic_status(
    settings: Settings,
    topics: list[str] | None = None,
    group: str | None = None,
    timeout: float = 10.0,
) -> list[TopicStatus]:
    """Watermarks per partition and, for ``group``, committed offsets and lag.

    Default topics: every non-internal topic. Lag is ``high - committed`` (``high - low``
    when the group has committed nothing for a partition).
    """
    group = group or settings.kafka_consumer_group
    md = admin_client(settings).list_topics(timeout=timeout).topics
    names = topics or sorted(t for t in md if not t.startswith("__"))
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": group, "enable.auto.commit": False}
    )
    try:
        out = []
        for name in names:
            tmd = md.get(name)
            if tmd is None or tmd.error is not None:
                continue
            parts = sorted(tmd.partitions)
            committed = {
                tp.partition: tp.offset
                for tp in fetch_committed(consumer, [TopicPartition(name, p) for p in parts])
            }
            status = TopicStatus(name)
            for p in parts:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(name, p), timeout=timeout, cached=False
                )
                c = committed.get(p)
                c = c if c is not None and c >= 0 else None
                lag = max(high - (c if c is not None else low), 0)
                status.partitions.append(PartitionStatus(p, low, high, c, lag))
            out.append(status)
        return out
    finally:
        consumer.close()


def status_dict(statuses: list[TopicStatus], group: str) -> dict[str, Any]:
    """JSON-friendly form of :func:`topic_status`."""
    return {
        "group": group,
        "topics": [
            {
                "topic": s.topic,
                "messages": s.messages,
                "lag": s.lag,
                "partitions": [asdict(p) for p in s.partitions],
            }
            for s in statuses
        ],
    }
