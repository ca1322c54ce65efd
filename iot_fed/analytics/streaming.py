"""Streaming evaluation: Spark Structured Streaming from Kafka to predictions in MongoDB.

Each micro-batch (``foreachBatch``):

1. looks up the promoted global version (one small query) and reloads + re-broadcasts
   the model only when it changed, so a newly promoted model is used without a restart;
2. in every Kafka partition's task (``mapInPandas``): decodes and validates the records
   with :func:`iot_fed.stream.messages.decode_value`, scores the valid ones as one numpy
   batch, upserts their predictions and stores the malformed ones in ``dead_letters``
   (reason + raw bytes; ``_id`` = ``spark:<topic>:<partition>:<offset>`` so a replayed
   batch adds no duplicates). Malformed records never stop the query.

Two ways to run it: :func:`run_streaming_evaluation` (long-running, processing-time
trigger, the ``iot-fed spark-stream`` CLI) and :func:`streaming_evaluation` (trigger
``availableNow``: everything currently in the topic, then stop; the Dagster asset).
Checkpoints live under ``<data_dir>/checkpoints/<name>``.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.broadcast import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery

from iot_fed.analytics.batch_scoring import score_with
from iot_fed.analytics.models import (
    ModelNotAvailableError,
    ScoringModel,
    bundle_from_blob,
    load_global_model,
)
from iot_fed.analytics.predictions import COUNT_FIELDS, store_scored
from iot_fed.analytics.readings import MongoTarget
from iot_fed.config import Settings
from iot_fed.store import DEAD_LETTERS, insert_dead_letters, promoted_version, validator
from iot_fed.stream.kafka_config import spark_source_options
from iot_fed.stream.messages import decode_value

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "streaming_evaluation"
DEAD_LETTER_STAGE = "spark-stream"
STREAM_FIELDS = ("records", *COUNT_FIELDS, "dead_letters")
STREAM_COUNTS_SCHEMA = T.StructType([T.StructField(c, T.LongType(), False) for c in STREAM_FIELDS])


@dataclass
class StreamCounts:
    """Totals over the micro-batches this process ran (driver side)."""

    batches: int = 0
    records: int = 0
    n: int = 0  # valid records scored
    anomalies: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    dead_letters: int = 0
    model_versions: list[int] = field(default_factory=list)  # in the order first used
    last_batch_id: int | None = None

    def add(self, batch_id: int, version: int, rows: Iterable[Any]) -> None:
        self.batches += 1
        self.last_batch_id = batch_id
        if version not in self.model_versions:
            self.model_versions.append(version)
        for r in rows:
            for f in STREAM_FIELDS:
                setattr(self, f, getattr(self, f) + int(r[f]))

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_versions"] = ",".join(str(v) for v in self.model_versions)
        return d


def checkpoint_dir(settings: Settings, name: str = DEFAULT_CHECKPOINT) -> Path:
    return settings.data_dir / "checkpoints" / name


def kafka_source_options(settings: Settings, topic: str | None = None) -> dict[str, str]:
    """``spark.readStream.format("kafka")`` options from the Kafka settings (SASL/TLS too)."""
    return spark_source_options(settings, topic)


def _dead_letter(
    key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int, reason: str
) -> dict[str, Any]:
    return {
        "_id": f"spark:{topic}:{partition}:{offset}",
        "ts": dt.datetime.now(dt.UTC),
        "reason": reason,
        "raw": None if value is None else bytes(value),
        "key": None if key is None else bytes(key).decode("utf-8", "backslashreplace"),
        "topic": topic,
        "partition": int(partition),
        "offset": int(offset),
        "stage": DEAD_LETTER_STAGE,
    }


def process_records(
    db, bundle, model: tuple[int, float], raw: pd.DataFrame, max_bytes: int
) -> dict[str, int]:
    """Decode, score and store one batch of Kafka records (key, value, topic, partition,
    offset); return :data:`STREAM_FIELDS` counts."""
    version, threshold = model
    readings: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    for key, value, topic, part, off in zip(
        raw["key"], raw["value"], raw["topic"], raw["partition"], raw["offset"], strict=True
    ):
        reading, reason = decode_value(
            None if value is None else bytes(value), max_bytes, None if key is None else bytes(key)
        )
        if reading is None:
            dead.append(_dead_letter(key, value, topic, part, off, reason or "invalid"))
        else:
            readings.append(reading)
    counts = dict.fromkeys(STREAM_FIELDS, 0)
    counts["records"] = len(raw)
    if readings:
        scored = score_with(bundle, threshold, pd.DataFrame.from_records(readings))
        counts.update(store_scored(db, scored, version, threshold, "streaming"))
    if dead:
        validator(DEAD_LETTERS).validate_many(dead)
        insert_dead_letters(db, dead)
        counts["dead_letters"] = len(dead)
    return counts


def _partition_processor(
    target: MongoTarget, blob: Broadcast, model: tuple[int, float], max_bytes: int
):
    """mapInPandas body over a micro-batch's Kafka records; yields one counts row."""

    def run(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bundle = bundle_from_blob(blob.value)
        total = dict.fromkeys(STREAM_FIELDS, 0)
        for raw in batches:
            if len(raw):
                got = process_records(target.shared(), bundle, model, raw, max_bytes)
                total = {k: total[k] + got[k] for k in STREAM_FIELDS}
        yield pd.DataFrame([total])

    return run


class PromotedModelTracker:
    """Driver side: the promoted global model, reloaded only when the version changes."""

    def __init__(self, spark: SparkSession, target: MongoTarget) -> None:
        self.spark = spark
        self.target = target
        self.db = target.connect()
        self.model: ScoringModel | None = None
        self.blob: Broadcast | None = None

    def current(self) -> tuple[ScoringModel, Broadcast]:
        version = promoted_version(self.db)
        if version is None:
            raise ModelNotAvailableError(
                f"no promoted global model in {self.db.name}.global_models; "
                "streaming evaluation needs one"
            )
        if self.model is None or self.model.version != version:
            model = load_global_model(self.db, version)
            old = self.blob
            self.blob = self.spark.sparkContext.broadcast(model.blob)
            if old is not None:
                old.unpersist()
            log.info(
                "streaming evaluation now scores with global model v%d (threshold %.4g)",
                model.version,
                model.threshold,
            )
            self.model = model
        assert self.blob is not None
        return self.model, self.blob

    def close(self) -> None:
        if self.blob is not None:
            self.blob.unpersist()
        self.db.client.close()


@dataclass
class StreamingRun:
    """A started query plus the driver-side counts its micro-batches update."""

    query: StreamingQuery
    counts: StreamCounts
    tracker: PromotedModelTracker
    checkpoint: Path

    def stop(self) -> None:
        if self.query.isActive:
            self.query.stop()
        self.tracker.close()


def start_streaming_evaluation(
    spark: SparkSession,
    settings: Settings,
    *,
    topic: str | None = None,
    checkpoint_name: str = DEFAULT_CHECKPOINT,
    available_now: bool = False,
    trigger_seconds: float = 1.0,
    max_offsets_per_trigger: int | None = None,
    write_partitions: int | None = 1,
) -> StreamingRun:
    """Start the query (it reads from the earliest offset on a fresh checkpoint).

    ``write_partitions`` coalesces each micro-batch to that many Spark tasks, which
    decode, score and write (default 1: one writer suits a single-writer SQLite-backed
    FerretDB; ``None`` keeps one task per Kafka partition, for a real MongoDB cluster);
    ``0`` collects each micro-batch (Arrow) and does the work on the driver: lowest
    latency for small micro-batches, no Python-worker round trip.
    Fails before starting when no promoted global model can be loaded.
    """
    target = MongoTarget.from_settings(settings)
    tracker = PromotedModelTracker(spark, target)
    try:
        tracker.current()
    except Exception:
        tracker.close()
        raise
    counts = StreamCounts()
    max_bytes = settings.kafka_max_message_bytes
    partitions = write_partitions

    def process_batch(batch: DataFrame, batch_id: int) -> None:
        model, blob = tracker.current()
        if partitions == 0:  # small micro-batches: decode, score and write on the driver
            raw = batch.toPandas()
            rows = [
                process_records(
                    target.shared(),
                    bundle_from_blob(model.blob),
                    (model.version, model.threshold),
                    raw,
                    max_bytes,
                )
            ]
        else:
            if partitions:
                batch = batch.coalesce(partitions)
            rows = batch.mapInPandas(
                _partition_processor(target, blob, (model.version, model.threshold), max_bytes),
                STREAM_COUNTS_SCHEMA,
            ).collect()
        counts.add(batch_id, model.version, rows)
        log.debug("micro-batch %d: model v%d, %s", batch_id, model.version, counts)

    reader = spark.readStream.format("kafka").options(**kafka_source_options(settings, topic))
    reader = reader.option("startingOffsets", "earliest")
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    source = reader.load().select("key", "value", "topic", "partition", "offset")
    checkpoint = checkpoint_dir(settings, checkpoint_name)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    writer = (
        source.writeStream.queryName(checkpoint_name)
        .foreachBatch(process_batch)
        .option("checkpointLocation", str(checkpoint))
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=f"{trigger_seconds} seconds")
    )
    try:
        query = writer.start()
    except Exception:
        tracker.close()
        raise
    return StreamingRun(query, counts, tracker, checkpoint)


def streaming_evaluation(
    spark: SparkSession,
    settings: Settings,
    *,
    topic: str | None = None,
    checkpoint_name: str = DEFAULT_CHECKPOINT,
    timeout_s: float | None = None,
    write_partitions: int | None = 1,
) -> StreamCounts:
    """Process everything available in the topic since the checkpoint, then stop
    (trigger ``availableNow``); return the counts. For the Dagster asset."""
    t0 = time.monotonic()
    run = start_streaming_evaluation(
        spark,
        settings,
        topic=topic,
        checkpoint_name=checkpoint_name,
        available_now=True,
        write_partitions=write_partitions,
    )
    try:
        finished = run.query.awaitTermination(timeout_s)
        if finished is False:
            raise TimeoutError(f"streaming evaluation did not finish within {timeout_s}s")
    finally:
        run.stop()
    log.info(
        "streaming evaluation (available now) in %.1fs: %s",
        time.monotonic() - t0,
        run.counts.summary(),
    )
    return run.counts


def run_streaming_evaluation(
    spark: SparkSession,
    settings: Settings,
    *,
    topic: str | None = None,
    checkpoint_name: str = DEFAULT_CHECKPOINT,
    trigger_seconds: float = 1.0,
    max_offsets_per_trigger: int | None = None,
    write_partitions: int | None = 1,
    stop_event: threading.Event | None = None,
) -> StreamCounts:
    """Run until ``stop_event`` is set, Ctrl-C or SIGTERM; stop the query cleanly."""
    stop = stop_event or threading.Event()
    run = start_streaming_evaluation(
        spark,
        settings,
        topic=topic,
        checkpoint_name=checkpoint_name,
        trigger_seconds=trigger_seconds,
        max_offsets_per_trigger=max_offsets_per_trigger,
        write_partitions=write_partitions,
    )
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while run.query.isActive and not stop.is_set():
            run.query.awaitTermination(1.0)
        if not run.query.isActive and run.query.exception() is not None:
            raise RuntimeError(f"streaming evaluation failed: {run.query.exception()}")
    except KeyboardInterrupt:
        log.info("interrupted; stopping the streaming query")
    finally:
        run.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return run.counts
