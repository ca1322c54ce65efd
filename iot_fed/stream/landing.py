"""Landing one chunk of Kafka messages: decode, store, dead-letter, count.

Shared by the bounded batch (:class:`iot_fed.stream.ingest.Ingestor`) and the consumer-group
member (:class:`iot_fed.stream.group_ingest.GroupIngester`). Valid readings go to
``sensor_readings`` idempotently (unique ``(moteid, epoch)``), rejected messages to
``dead_letters`` (``_id`` = topic position) and the DLQ topic with their reason, then the
chunk's progress to ``ingest_devices`` / ``ingest_offsets``. The caller commits Kafka
offsets only after :meth:`Lander.land` and :meth:`Lander.flush_dlq` returned.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Producer
from pymongo.database import Database

from iot_fed.config import Settings
from iot_fed.readings import dead_letter_doc, dead_letter_raw
from iot_fed.store import insert_dead_letters, insert_readings
from iot_fed.store.ingest_progress import record_landed
from iot_fed.store.repository import WriteStrategy
from iot_fed.stream.ingest_result import IngestError
from iot_fed.stream.kafka_config import producer_config
from iot_fed.stream.messages import decode_value


@dataclass
class Landed:
    """What one chunk landed."""

    n_messages: int = 0
    n_valid: int = 0
    n_inserted: int = 0
    n_dead: int = 0
    new_counts: Counter[int] = field(default_factory=Counter)
    valid_counts: Counter[int] = field(default_factory=Counter)
    dead_reasons: Counter[str] = field(default_factory=Counter)
    next_offsets: dict[int, int] = field(default_factory=dict)
    max_ts: dt.datetime | None = None
    timings: Counter[str] = field(default_factory=Counter)


class Lander:
    """Stores chunks of one topic's messages; owns the DLQ producer unless given one."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        topic: str,
        *,
        strategy: WriteStrategy | None = None,
        dlq_producer: Producer | None = None,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.topic = topic
        self.dlq_topic = settings.kafka_dlq_topic
        self.strategy = strategy or settings.ingest_write_strategy
        self.name = name
        self._own_dlq = dlq_producer is None
        self.dlq = dlq_producer or Producer(producer_config(settings, **{"linger.ms": 1}))
        self._dlq_errors: list[str] = []

    def close(self) -> None:
        if self._own_dlq:
            self.dlq.flush(10)
            self.dlq.close()  # else its connections outlive us (and retry a broker for ever)

    def land(self, msgs: list[Any]) -> Landed:
        """Store the data messages ``msgs`` (no error events) of :attr:`topic`."""
        out = Landed()
        t0 = time.monotonic()
        docs, dead = [], []
        last_ts: dict[int, dt.datetime] = {}
        last_epoch: dict[int, int] = {}
        for msg in msgs:
            p, off = msg.partition(), msg.offset()
            out.n_messages += 1
            out.next_offsets[p] = max(out.next_offsets.get(p, 0), off + 1)
            reading, reason = decode_value(
                msg.value(), self.settings.kafka_max_message_bytes, msg.key()
            )
            if reason is None:
                reading["kafka_partition"] = p  # flat: nested docs cost ~30% on FerretDB
                reading["kafka_offset"] = off
                docs.append(reading)
            else:
                out.dead_reasons[reason.split(":")[0]] += 1
                dead.append((self._dead_letter(msg, reason), msg.key()))
        t1 = time.monotonic()
        out.timings["decode"] += t1 - t0
        if docs:
            # decode_value already checked every field: skip the per-document schema check;
            # the dicts are fresh and ours: written without a copy
            new = insert_readings(self.db, docs, self.strategy, validate=False, owned=True)
            out.n_valid = len(docs)
            out.n_inserted = len(new)
            for i in new:
                out.new_counts[docs[i]["moteid"]] += 1
            for d in docs:
                m = d["moteid"]
                out.valid_counts[m] += 1
                if m not in last_ts or d["ts"] > last_ts[m]:
                    last_ts[m] = d["ts"]
                if m not in last_epoch or d["epoch"] > last_epoch[m]:
                    last_epoch[m] = d["epoch"]
            out.max_ts = max(last_ts.values())
        t2 = time.monotonic()
        out.timings["write"] += t2 - t1
        if dead:
            insert_dead_letters(self.db, [d for d, _ in dead])
            self._send_dlq(dead)
            out.n_dead = len(dead)
            out.timings["dead_letters"] += time.monotonic() - t2
        t3 = time.monotonic()
        record_landed(
            self.db,
            self.topic,
            out.next_offsets,
            out.new_counts,
            last_ts,
            self.name,
            last_epoch,
        )
        out.timings["progress"] += time.monotonic() - t3
        return out

    # --- dead letters ------------------------------------------------------------
    def _dead_letter(self, msg: Any, reason: str) -> dict[str, Any]:
        """A ``dead_letters`` document; ``_id`` is the source position (re-consuming is a no-op)."""
        return dead_letter_doc(
            doc_id=f"{msg.topic()}:{msg.partition()}:{msg.offset()}",
            reason=reason,
            raw=msg.value(),
            key=msg.key(),
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
        )

    def _send_dlq(self, dead: list[tuple[dict[str, Any], bytes | None]]) -> None:
        """The dead letter's value and key (:func:`dead_letter_raw`: a value over 256 KiB is
        cut, its ``raw_size`` header tells) to the DLQ topic; reason and source position
        as headers."""

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                self._dlq_errors.append(str(err))

        for d, key in dead:
            headers = [
                ("reason", d["reason"].encode()),
                ("source_topic", d["topic"].encode()),
                ("source_partition", str(d["partition"]).encode()),
                ("source_offset", str(d["offset"]).encode()),
            ]
            if d["raw_size"] is not None and d["raw_size"] > len(d["raw"]):
                headers.append(("raw_size", str(d["raw_size"]).encode()))
            while True:
                try:
                    self.dlq.produce(
                        self.dlq_topic,
                        d["raw"],
                        dead_letter_raw(key),
                        headers=headers,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    self.dlq.poll(0.05)
        self.dlq.poll(0)

    def flush_dlq(self) -> None:
        """Wait until every dead letter sent is on the DLQ topic; raise when one is not."""
        left = self.dlq.flush(30)
        errors, self._dlq_errors = self._dlq_errors, []
        if left or errors:
            raise IngestError(f"DLQ not durable ({left} undelivered, errors: {errors[:3]})")
