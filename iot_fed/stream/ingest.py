"""Bounded Kafka -> MongoDB ingestion from explicit or committed offsets.

The service that ingests continuously is the consumer-group member
(:mod:`iot_fed.stream.group_ingest`, ``iot-fed ingest``). This is the bounded batch
underneath benchmarks, fault tests and backfills: pick start offsets (explicit cursor, or
the consumer group's committed offsets), assign, consume in chunks until ``max_messages`` /
``max_seconds`` / the end of every partition (as of the batch start), land each chunk
(:class:`iot_fed.stream.landing.Lander`), then - only after the writes returned and the
DLQ producer flushed - commit the next offsets. Re-consuming a batch adds nothing.

Start-offset modes (partitions are assigned, not subscribed: never run it while
``iot-fed ingest`` members of the same group are up):

* cursor mode: ``start_offsets={partition: next_offset}``; partitions missing from it
  start at the beginning. Use ``result.next_offsets`` as the next cursor.
* group mode: ``start_offsets=None`` starts from the group's committed offsets
  (earliest when none). ``commit=True`` (default) commits after the writes in both modes.

Durability: the writes use the store's write concern (``j=true`` by default), so the
server has made them durable before it answers; offsets are committed only after that.
A broker or database that does not answer fails the batch with one :class:`IngestError`
line naming the service; nothing is committed and the next batch re-reads the messages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as TP
from pymongo.database import Database
from pymongo.errors import PyMongoError

from iot_fed.config import Settings, get_settings
from iot_fed.store import ensure_database
from iot_fed.store.repository import WriteStrategy
from iot_fed.stream.admin import ensure_topics
from iot_fed.stream.ingest_result import (
    IngestError,
    IngestResult,
    normalise_offsets,
    service_error,
)
from iot_fed.stream.kafka_config import consumer_config
from iot_fed.stream.landing import Lander

log = logging.getLogger(__name__)

__all__ = ["IngestError", "IngestResult", "Ingestor", "ingest_batch"]


class Ingestor:
    """A reusable ingester (one consumer + DLQ producer) for repeated bounded batches."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        topic: str | None = None,
        group: str | None = None,
        strategy: WriteStrategy | None = None,
        chunk_size: int | None = None,
        consumer: Consumer | None = None,
        dlq_producer: Producer | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.topic = topic or settings.kafka_topic
        self.dlq_topic = settings.kafka_dlq_topic
        self.chunk_size = chunk_size or settings.ingest_chunk_size
        self._own_consumer = consumer is None
        self._closed = False
        self.consumer = consumer or Consumer(consumer_config(settings, group))
        self.lander = Lander(
            settings, db, self.topic, strategy=strategy, dlq_producer=dlq_producer, name="batch"
        )
        self._assigned: dict[int, int] = {}  # partition -> consumer position we left it at
        self._lock = threading.Lock()  # one batch at a time (the consumer is not shared)
        try:
            ensure_topics(settings, [self.topic, self.dlq_topic])
            ensure_database(db)
        except (KafkaException, PyMongoError) as exc:
            self.close()
            raise service_error(settings, exc) from exc

    # --- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        """Close the clients this ingester made (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self._own_consumer:
            self.consumer.close()
        self.lander.close()

    def __enter__(self) -> Ingestor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- offsets -----------------------------------------------------------------
    def _partitions(self) -> list[int]:
        md = self.consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if md is None or md.error is not None:
            raise IngestError(f"topic {self.topic} unavailable: {md and md.error}")
        return sorted(md.partitions)

    def _start_positions(
        self, parts: list[int], start: dict[int, int] | None, marks: dict[int, tuple[int, int]]
    ) -> dict[int, int]:
        if start is None:
            got = self.consumer.committed([TP(self.topic, p) for p in parts], timeout=10)
            start = {tp.partition: tp.offset for tp in got if tp.offset >= 0}
        pos = {}
        for p in parts:
            low, high = marks[p]
            o = start.get(p, low)
            if o < low or o > high:  # deleted by retention, or the topic was recreated
                log.warning(
                    "partition %d: offset %d outside [%d, %d]; using %d", p, o, low, high, low
                )
                o = low
            pos[p] = o
        return pos

    # --- one batch ---------------------------------------------------------------
    def run_batch(
        self,
        max_messages: int | None = None,
        max_seconds: float | None = None,
        start_offsets: Mapping[Any, int] | None = None,
        *,
        commit: bool = True,
    ) -> IngestResult:
        """Consume, validate and land one bounded batch; see the module docstring.

        Raises :class:`IngestError` (one line naming Kafka or MongoDB) when a service
        does not answer; then nothing was committed.
        """
        with self._lock:
            try:
                return self._run_batch(max_messages, max_seconds, start_offsets, commit)
            except (KafkaException, PyMongoError) as exc:
                self._assigned = {}  # the consumer moved past unwritten messages
                raise service_error(self.settings, exc) from exc

    def _run_batch(
        self,
        max_messages: int | None,
        max_seconds: float | None,
        start_offsets: Mapping[Any, int] | None,
        commit: bool,
    ) -> IngestResult:
        max_messages = max_messages or self.settings.ingest_max_messages
        max_seconds = max_seconds or self.settings.ingest_max_seconds
        t_start = time.monotonic()
        deadline = t_start + max_seconds
        res = IngestResult(self.topic)
        timings = Counter[str]()

        parts = self._partitions()
        marks = {
            p: self.consumer.get_watermark_offsets(TP(self.topic, p), timeout=10, cached=False)
            for p in parts
        }
        pos = self._start_positions(parts, normalise_offsets(start_offsets), marks)
        res.end_offsets = {p: marks[p][1] for p in parts}
        res.next_offsets = dict(pos)
        pending = {p for p in parts if pos[p] < marks[p][1]}
        pending_at_start = set(pending)
        timings["offsets"] += time.monotonic() - t_start
        # forget where we left the consumer until this batch succeeds (a failed batch
        # moved it past unwritten messages, so it must be re-assigned next time)
        left_at, self._assigned = self._assigned, {}
        if pending:
            self._assign(pos, pending, left_at)
        while pending and res.n_messages < max_messages:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            # no more than the partitions hold up to the batch's end marks: consume() returns
            # once it has that many, instead of after its timeout (the last chunk of a batch)
            left = sum(marks[p][1] - res.next_offsets[p] for p in pending)
            want = min(self.chunk_size, max_messages - res.n_messages, max(left, 1))
            t0 = time.monotonic()
            msgs = self.consumer.consume(want, timeout=min(timeout, 1.0))
            t1 = time.monotonic()
            timings["consume"] += t1 - t0
            data = []
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if msg.offset() >= marks[msg.partition()][1]:  # else stale
                            pending.discard(msg.partition())
                    elif err.fatal():
                        raise KafkaException(err)
                    else:
                        log.warning("consumer: %s", err)
                    continue
                data.append(msg)
                p = msg.partition()
                res.next_offsets[p] = msg.offset() + 1
                if msg.offset() + 1 >= marks[p][1]:
                    pending.discard(p)
            if data:
                landed = self.lander.land(data)
                res.add(landed)
                timings.update(landed.timings)

        res.reached_end = not pending
        res.n_duplicates = res.n_valid - res.n_inserted
        res.offsets_to_commit = {p: o for p, o in res.next_offsets.items() if o != pos[p]}

        t4 = time.monotonic()
        if res.n_dead:
            self.lander.flush_dlq()
        if commit and res.offsets_to_commit:
            self.consumer.commit(
                offsets=[TP(self.topic, p, o) for p, o in res.offsets_to_commit.items()],
                asynchronous=False,
            )
            res.committed = True
        timings["commit"] += time.monotonic() - t4
        self._assigned = {p: res.next_offsets[p] for p in pending_at_start}
        res.duration_s = time.monotonic() - t_start
        res.timings = {k: round(v, 4) for k, v in timings.items()}
        log.info(
            "ingested %d messages: %d new, %d duplicate, %d dead in %.2f s (lag %d)",
            res.n_messages,
            res.n_inserted,
            res.n_duplicates,
            res.n_dead,
            res.duration_s,
            res.lag,
        )
        return res

    def _assign(self, pos: dict[int, int], pending: Iterable[int], left_at: dict[int, int]) -> None:
        """Assign at ``pos`` unless the consumer already sits exactly there (keeps prefetch)."""
        want = {p: pos[p] for p in pending}
        assigned = {tp.partition for tp in self.consumer.assignment()}
        if want == left_at and assigned == set(want):
            return
        self.consumer.assign([TP(self.topic, p, o) for p, o in want.items()])


def ingest_batch(
    source: Settings | Ingestor | None,
    db: Database,
    max_messages: int | None = None,
    max_seconds: float | None = None,
    start_offsets: Mapping[Any, int] | None = None,
    *,
    commit: bool = True,
    topic: str | None = None,
    strategy: WriteStrategy | None = None,
) -> IngestResult:
    """One bounded batch (see :class:`Ingestor.run_batch`).

    ``source`` is settings (a short-lived consumer is created and closed) or a
    long-lived :class:`Ingestor` (its own db/topic are used).
    """
    if isinstance(source, Ingestor):
        return source.run_batch(max_messages, max_seconds, start_offsets, commit=commit)
    settings = source or get_settings()
    with Ingestor(settings, db, topic=topic, strategy=strategy) as ing:
        return ing.run_batch(max_messages, max_seconds, start_offsets, commit=commit)
