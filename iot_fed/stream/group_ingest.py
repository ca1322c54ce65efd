"""``iot-fed ingest``: a Kafka consumer-group member that lands readings in MongoDB.

N members (processes, on any hosts) share the topic's partitions through the broker's
group protocol (``subscribe``, cooperative-sticky assignment). Each member loops:

1. ``consume`` up to ``ingest_chunk_size`` messages (rebalance callbacks run inside it);
2. land them (:class:`iot_fed.stream.landing.Lander`): readings idempotently, dead letters
   with their reason, the per-device counts and offsets the training trigger reads;
3. flush the dead-letter topic, then commit the chunk's next offsets, synchronously.

Nothing is in flight while a rebalance runs: a chunk is landed and committed before the
next ``consume``, and a revocation is served inside ``consume``. A message of a partition
revoked meanwhile is abandoned uncommitted (its new owner reads it from the committed
offset); a member killed between its write and its commit leaves the chunk to be re-read,
which stores nothing twice (unique ``(moteid, epoch)``, dead letters keyed by position).
A commit the broker refuses (its coordinator moving after a broker failure) is kept and
retried, also when no new message comes, until it is accepted or the partition is revoked.
A database or broker failure rewinds the chunk's partitions to their first message and
retries after a pause: nothing is skipped and nothing is committed ahead of the store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as TP
from pymongo.database import Database
from pymongo.errors import PyMongoError

from iot_fed.config import Settings
from iot_fed.stream.admin import committed_topics, ensure_topics, partitions_of
from iot_fed.stream.ingest_result import IngestError, service_error
from iot_fed.stream.kafka_config import consumer_config
from iot_fed.stream.landing import Lander

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 2.0


@dataclass
class GroupStats:
    """Totals of one member since it started."""

    messages: int = 0
    inserted: int = 0
    duplicates: int = 0
    dead: int = 0
    chunks: int = 0
    commits_refused: int = 0
    abandoned: int = 0
    failures: int = 0
    rebalances: int = 0
    assigned: list[int] = field(default_factory=list)


class GroupIngester:
    """One member of the ingestion consumer group (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        name: str,
        group: str | None = None,
        topic: str | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic or settings.kafka_topic
        self.group = group or settings.kafka_consumer_group
        self.name = name
        self.chunk_size = chunk_size or settings.ingest_chunk_size
        self.stats = GroupStats()
        self._owned: set[int] = set()
        self._uncommitted: dict[int, int] = {}  # landed; the broker refused the commit
        self._retry_commit_at = 0.0
        log.info("%s: checking topic %s and group %s", name, self.topic, self.group)
        self._check_topic()
        self._check_group()
        log.info("%s: joining group %s", name, self.group)
        self.consumer = Consumer(
            consumer_config(
                settings,
                self.group,
                **{
                    "client.id": name,
                    "partition.assignment.strategy": "cooperative-sticky",
                    "enable.partition.eof": False,
                },
            )
        )
        self.lander = Lander(settings, db, self.topic, name=name)
        self.consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _check_topic(self) -> None:
        """A missing topic is an error, not an idle member waiting for it."""
        try:
            parts = partitions_of(self.settings, self.topic)
        except (KafkaException, TimeoutError) as exc:
            raise service_error(self.settings, exc) from exc
        if not parts:
            raise IngestError(
                f"topic {self.topic} does not exist on {self.settings.kafka_bootstrap}: "
                "create it with `iot-fed kafka create-topics` (make run does), or set "
                "IOT_FED_KAFKA_TOPIC to the topic the producers write"
            )
        try:  # the dead-letter topic is the ingesters' own output
            ensure_topics(self.settings, [self.settings.kafka_dlq_topic])
        except (KafkaException, TimeoutError) as exc:
            raise service_error(self.settings, exc) from exc

    def _check_group(self) -> None:
        """A group that holds offsets of other topics only belongs to someone else."""
        try:
            topics = committed_topics(self.settings, self.group)
        except (KafkaException, TimeoutError) as exc:  # no answer is not a wrong group
            log.warning("%s: group %s not checked (%s)", self.name, self.group, exc)
            return
        others = topics - {self.topic}
        if others and self.topic not in topics:
            raise IngestError(
                f"consumer group {self.group} holds offsets of {sorted(others)}, not of "
                f"{self.topic}: another application's group? Set IOT_FED_KAFKA_CONSUMER_GROUP "
                "(default iot_fed_ingest) to the ingestion group"
            )

    # --- rebalance callbacks (run inside consume) -------------------------------
    def _owning(self, parts: list[TP], *, owned: bool) -> None:
        """The one place the owned partitions change (``stats.assigned`` mirrors them)."""
        ids = {tp.partition for tp in parts}
        self._owned = self._owned | ids if owned else self._owned - ids
        self.stats.assigned = sorted(self._owned)

    def _on_assign(self, _consumer: Consumer, parts: list[TP]) -> None:
        self._owning(parts, owned=True)
        self.stats.rebalances += 1
        log.info("%s: assigned %s (now %s)", self.name, _ids(parts), self.stats.assigned)

    def _on_revoke(self, _consumer: Consumer, parts: list[TP]) -> None:
        # landed chunks are committed before the next consume; a refused one gets a last try
        self._commit_uncommitted({tp.partition for tp in parts})
        self._forget(parts)
        self._owning(parts, owned=False)
        log.info("%s: revoked %s (now %s)", self.name, _ids(parts), self.stats.assigned)

    def _on_lost(self, _consumer: Consumer, parts: list[TP]) -> None:
        self._forget(parts)
        self._owning(parts, owned=False)
        log.warning(
            "%s: lost %s (session expired); their new owner re-reads", self.name, _ids(parts)
        )

    # --- the loop -----------------------------------------------------------------
    def poll_once(self, timeout: float = 1.0) -> int:
        """Consume, land and commit one chunk; return the messages landed (0 when idle)."""
        if self._uncommitted and time.monotonic() >= self._retry_commit_at:
            self._commit_uncommitted()
        msgs = self.consumer.consume(self.chunk_size, timeout=timeout)
        data = []
        for msg in msgs:
            err = msg.error()
            if err is None:
                data.append(msg)
            elif err.fatal():
                raise KafkaException(err)
            elif err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise IngestError(f"topic {self.topic} disappeared: {err.str()}")
            else:
                log.warning("%s: consumer: %s", self.name, err)
        mine = [m for m in data if m.partition() in self._owned]
        self.stats.abandoned += len(data) - len(mine)
        if not mine:
            return 0
        try:
            landed = self.lander.land(mine)
            if landed.n_dead:
                self.lander.flush_dlq()
        except IngestError:
            self._failed(mine)
            raise
        except (PyMongoError, KafkaException) as exc:
            self._failed(mine)
            raise service_error(self.settings, exc) from exc
        self._commit(landed.next_offsets)
        self.stats.chunks += 1
        self.stats.messages += landed.n_messages
        self.stats.inserted += landed.n_inserted
        self.stats.duplicates += landed.n_valid - landed.n_inserted
        self.stats.dead += landed.n_dead
        return landed.n_messages

    def _commit(self, next_offsets: dict[int, int]) -> None:
        for p, o in next_offsets.items():
            if p in self._owned:
                self._uncommitted[p] = max(o, self._uncommitted.get(p, o))
        self._commit_uncommitted()

    def _commit_uncommitted(self, parts: set[int] | None = None) -> None:
        """Commit the landed offsets (of ``parts``, default all owned); a refusal keeps them
        for a retry after a pause: the chunk is landed, so nothing is lost meanwhile, and a
        restart or a new owner re-reads it (which stores nothing twice)."""
        todo = {
            p: o
            for p, o in self._uncommitted.items()
            if p in self._owned and (parts is None or p in parts)
        }
        if not todo:
            return
        try:
            answer = self.consumer.commit(
                offsets=[TP(self.topic, p, o) for p, o in sorted(todo.items())],
                asynchronous=False,
            )
        except KafkaException as exc:
            self._refused(str(exc))
            return
        # a request can succeed with some partitions refused: those stay for the retry
        refused = {tp.partition: tp.error for tp in answer or () if tp.error is not None}
        for p, o in todo.items():
            if p not in refused and self._uncommitted.get(p) == o:
                del self._uncommitted[p]
        if refused:
            self._refused(f"partitions {sorted(refused)}: {refused}")

    def _refused(self, why: str) -> None:
        self.stats.commits_refused += 1
        self._retry_commit_at = time.monotonic() + RETRY_PAUSE_S
        log.warning("%s: commit refused (%s); retried in %.0f s", self.name, why, RETRY_PAUSE_S)

    def _forget(self, parts: list[TP]) -> None:
        """Partitions leaving this member: their new owner reads from the committed offset."""
        for tp in parts:
            self._uncommitted.pop(tp.partition, None)

    def _failed(self, msgs: list[Any]) -> None:
        """Seek each partition of a failed chunk back to its first message."""
        self.stats.failures += 1
        first: dict[int, int] = {}
        for m in msgs:
            first[m.partition()] = min(first.get(m.partition(), m.offset()), m.offset())
        for p, o in first.items():
            if p in self._owned:
                try:
                    self.consumer.seek(TP(self.topic, p, o))
                except KafkaException as exc:  # revoked meanwhile: its new owner re-reads it
                    log.warning("%s: seek %d@%d: %s", self.name, p, o, exc)

    def run(
        self, should_stop: Any, *, progress_s: float = 30.0, idle_exit_s: float = 0.0
    ) -> GroupStats:
        """Loop until ``should_stop()`` (or, when ``idle_exit_s`` > 0, until the member has
        had partitions and no message on them for that long)."""
        last_report = last_data = time.monotonic()
        while not should_stop():
            try:
                n = self.poll_once()
            except IngestError as exc:
                log.error("%s: %s; retrying in %.0f s", self.name, exc, RETRY_PAUSE_S)
                time.sleep(RETRY_PAUSE_S)
                continue
            now = time.monotonic()
            if n or not self._owned:  # idle means: partitions, and nothing on them
                last_data = now
            elif idle_exit_s and now - last_data >= idle_exit_s:
                break
            if now - last_report >= progress_s:
                last_report = now
                s = self.stats
                log.info(
                    "%s: %d messages, %d new, %d duplicate, %d dead in %d chunks; partitions %s",
                    self.name,
                    s.messages,
                    s.inserted,
                    s.duplicates,
                    s.dead,
                    s.chunks,
                    s.assigned,
                )
        return self.stats

    def close(self) -> None:
        """Leave the group (its partitions move to the other members at once)."""
        self._commit_uncommitted()
        self.consumer.close()
        self.lander.close()


def _ids(parts: list[TP]) -> list[int]:
    return sorted(tp.partition for tp in parts)
