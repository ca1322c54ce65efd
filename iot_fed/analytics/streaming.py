"""Streaming scorer: Spark Structured Streaming from Kafka to predictions in MongoDB.

The query: Kafka source -> ``groupBy(bucket of the mote from the Kafka key)
.applyInPandasWithState`` (:mod:`iot_fed.analytics.live_state`: decode, each mote's
history as state inside its bucket's, all the bucket's motes scored in one ``score_batch``
call) -> ``foreachBatch``, whose one job has the executors upsert the rows
(:mod:`iot_fed.analytics.stream_sink`: one prediction per valid reading, ``_id`` =
``<moteid>:<ts ms>``, the flagged ones into ``anomalies`` under the same ``_id``, the
incidents) and return their counts; the driver closes the quiet incidents and writes the
heartbeat into ``scorer_status``. A replayed micro-batch (after a crash, Spark re-runs the
uncommitted batch from the checkpoint, with the state of the last committed one) or a
retried task (a lost executor) rewrites the same ids: no duplicate, no gap.

Dead letters have ONE owner: ingestion (:mod:`iot_fed.stream.ingest`) dead-letters a
malformed message; the scorer skips it and only counts it (``skipped`` in the heartbeat
and the counts, reasons in its log).

No promoted model yet: the query is not started; the scorer waits (heartbeat
``waiting_for_model``) and readings wait in Kafka, from the checkpoint's offsets.

Two ways to run it: :func:`run_streaming_evaluation` (long-running, processing-time
trigger; ``iot-fed spark-stream``, supervised by ``iot-fed run``) and
:func:`streaming_evaluation` (trigger ``availableNow``: everything in the topic now, then
stop). Checkpoints live under ``IOT_FED_SCORER_CHECKPOINT`` (default
``<data_dir>/checkpoints``) as ``<name>``: :mod:`iot_fed.analytics.checkpoint`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupStateTimeout

from iot_fed.analytics.bucket_state import STATE_SCHEMA
from iot_fed.analytics.checkpoint import (
    SHUFFLE_PARTITIONS,
    STATE_STORE_PROVIDER,
    STATE_STORES,
    check_checkpoint,
    checkpoint_location,
)
from iot_fed.analytics.live_state import OUTPUT_SCHEMA, bucket_key, stateful_scorer
from iot_fed.analytics.readings import MongoTarget
from iot_fed.analytics.stream_progress import ProgressLog
from iot_fed.analytics.stream_sink import (
    COUNTS_SCHEMA,
    close_quiet_incidents,
    merge_counts,
    partition_writer,
)
from iot_fed.analytics.stream_status import Heartbeat, StreamCounts, progress_extra
from iot_fed.config import Settings
from iot_fed.heap import freeze_heap
from iot_fed.store import promoted_version
from iot_fed.store.live import DEFAULT_SCORER
from iot_fed.stream.kafka_config import spark_source_options

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = DEFAULT_SCORER
STATE_TIMEOUT_MS = 3_600_000  # a mote silent for an hour loses its window
MODEL_REFRESH_S = 0.5
# Kafka consumer settings of the scorer's source, on top of the shared ones. The broker's
# default fetch.max.wait.ms (500) held the micro-batch's Kafka read stage for ~500 ms
# (median, 10 rec/s, 3 topic partitions); with 10 ms it took ~170 ms (bench/bench_scorer.py,
# variant daemon-only vs after). It only shortens the broker's wait at the log end: an
# executor consumer polls only while its task reads its offset range.
SOURCE_OPTIONS: dict[str, str] = {"kafka.fetch.max.wait.ms": "10"}


def mote_key() -> Column:
    """The stateful step's group key: the Kafka key as an integer, else (an unkeyed record,
    as foreign producers often send) the value's ``moteid``; null when neither is one.

    ``try_cast``: under ANSI mode (Spark 4's default) a plain cast of a key such as ``x``
    fails the micro-batch, and the restarted scorer failed on the same record for ever."""
    value_mote = F.get_json_object(F.col("value").cast("string"), "$.moteid")
    return F.coalesce(F.col("key").cast("string").try_cast("int"), value_mote.try_cast("int"))


def checkpoint_dir(settings: Settings, name: str = DEFAULT_CHECKPOINT) -> Path:
    """The checkpoint's local directory (a local ``IOT_FED_SCORER_CHECKPOINT`` only)."""
    return Path(checkpoint_location(settings, name))


@dataclass
class StreamingRun:
    """A started query plus the driver-side counts its micro-batches update."""

    query: StreamingQuery
    counts: StreamCounts
    heartbeat: Heartbeat
    checkpoint: str
    progress_log: ProgressLog | None = None

    def observe_progress(self) -> dict[str, Any] | None:
        """The query's last progress, judged by the progress log."""
        progress = self.query.lastProgress
        if self.progress_log is not None:
            self.progress_log.observe(progress)
        return progress

    def stop(self) -> None:
        if self.query.isActive:
            self.query.stop()
        self.observe_progress()
        self.heartbeat.write("stopped", self.counts)
        self.heartbeat.close()


def wait_for_model(
    settings: Settings, stop: threading.Event, heartbeat: Heartbeat, counts: StreamCounts
) -> bool:
    """Block until a promoted model exists (True) or ``stop`` is set (False)."""
    db = MongoTarget.from_settings(settings).connect()
    try:
        told = False
        while not stop.is_set():
            if promoted_version(db) is not None:
                return True
            if not told:
                log.warning("no promoted global model yet: waiting (readings wait in Kafka)")
                told = True
            heartbeat.write("waiting_for_model", counts, message="no promoted global model yet")
            stop.wait(2.0)
        return False
    finally:
        db.client.close()


def start_streaming_evaluation(
    spark: SparkSession,
    settings: Settings,
    *,
    topic: str | None = None,
    checkpoint_name: str = DEFAULT_CHECKPOINT,
    available_now: bool = False,
    trigger_seconds: float = 1.0,
    max_offsets_per_trigger: int | None = None,
    state_timeout_ms: int = STATE_TIMEOUT_MS,
    heartbeat: Heartbeat | None = None,
) -> StreamingRun:
    """Start the query (it reads from the earliest offset on a fresh checkpoint, from the
    committed offsets of the old one on a reset one); raise
    :class:`~iot_fed.analytics.checkpoint.CheckpointMismatchError` for a checkpoint made
    with other state settings."""
    target = MongoTarget.from_settings(settings)
    heartbeat = heartbeat or Heartbeat(target, checkpoint_name)
    counts = StreamCounts()
    # no "no-data" micro-batches just to expire idle motes: expiry happens in the next
    # batch with data (an idle 3 s stateful batch per trigger would swamp 2 cores)
    spark.conf.set("spark.sql.streaming.noDataMicroBatches.enabled", "false")
    # The stateful step's partitions (fixed in the checkpoint when it is created): each one
    # is a task, a Python worker call and a state-store commit per micro-batch. 4 -> 1 took
    # a 10 rec/s micro-batch from 2.9 s to 1.7 s on 2 cores (bench/bench_scorer.py).
    spark.conf.set(SHUFFLE_PARTITIONS, str(settings.scorer_state_partitions))
    # Spark keeps both from the checkpoint; a new one gets the configured store
    spark.conf.set(STATE_STORE_PROVIDER, STATE_STORES[settings.scorer_state_store])
    meta = check_checkpoint(spark, settings, checkpoint_name)  # refuses another layout
    driver_ms: dict[int, dict[str, Any]] = {}  # per batch id, read by the progress log
    started: list[StreamingRun] = []  # set once the query is started

    def process_batch(batch: DataFrame, batch_id: int) -> None:
        # ONE Spark job per micro-batch: the whole query (Kafka read, shuffle, stateful
        # step, state commit) and the executors' writes; the driver gets a row of counts
        # per partition, then closes the quiet incidents once
        t0 = time.perf_counter()
        rows = batch.mapInPandas(partition_writer(target), COUNTS_SCHEMA).collect()
        got = merge_counts([r.asDict() for r in rows])
        t1 = time.perf_counter()
        close_quiet_incidents(target.shared(), got, settings.incident_quiet_s)
        got["collect_ms"] = (t1 - t0) * 1000
        got["store_ms"] = (time.perf_counter() - t1) * 1000
        driver_ms[batch_id] = {k: got[k] for k in ("collect_ms", "store_ms")}
        counts.collect_ms += got["collect_ms"]
        counts.store_ms += got["store_ms"]
        counts.batches += 1
        counts.last_batch_id = batch_id
        counts.last_batch_at = dt.datetime.now(dt.UTC)
        counts.last_batch = got
        for k in (
            "records",
            "n",
            "anomalies",
            "inserted",
            "updated",
            "kept",
            "skipped",
        ):
            setattr(counts, k, getattr(counts, k) + int(got[k]))
        for v in got["versions"]:
            if v not in counts.model_versions:
                counts.model_versions.append(v)
                log.info("micro-batch %d scored with global model v%d", batch_id, v)
        if time.monotonic() - heartbeat.written_at >= heartbeat.batch_min_s:
            heartbeat.write("running", counts)
        if started:  # the previous batch's progress (this one's is posted after it)
            started[0].observe_progress()

    reader = spark.readStream.format("kafka").options(**spark_source_options(settings, topic))
    # a new checkpoint starts at the earliest offset, a reset one at its predecessor's
    # committed offsets (Spark ignores both once the checkpoint has batches)
    starting = json.dumps(meta.starting_offsets) if meta.starting_offsets else "earliest"
    reader = reader.options(**SOURCE_OPTIONS).option("startingOffsets", starting)
    cap = max_offsets_per_trigger or settings.scorer_max_offsets_per_trigger
    reader = reader.option("maxOffsetsPerTrigger", str(cap))
    source = reader.load().select(
        mote_key().alias("gkey"),
        "key",
        "value",
        # few columns, none a timestamp: pyspark builds each mote group's pandas frame
        # column by column (a third of the stateful step's time), and it tz-localises a
        # timestamp column (a tenth at 1,000 rec/s)
        F.concat_ws(":", "topic", "partition", "offset").alias("kafka_offset"),
        F.unix_millis("timestamp").alias("kafka_ts_ms"),
    )
    # one group per bucket of motes: one Python call scores all its motes with data
    source = source.withColumn("bucket", bucket_key(settings.scorer_buckets))
    scored = source.groupBy("bucket").applyInPandasWithState(
        stateful_scorer(
            target,
            settings.kafka_max_message_bytes,
            MODEL_REFRESH_S,
            state_timeout_ms,
            settings.incident_quiet_s,
        ),
        outputStructType=OUTPUT_SCHEMA,
        stateStructType=STATE_SCHEMA,
        outputMode="append",
        timeoutConf=GroupStateTimeout.ProcessingTimeTimeout,
    )
    checkpoint = checkpoint_location(settings, checkpoint_name)
    writer = (
        scored.writeStream.queryName(checkpoint_name)
        .foreachBatch(process_batch)
        .option("checkpointLocation", checkpoint)
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=f"{trigger_seconds} seconds")
    )
    progress_log = ProgressLog(checkpoint_name, trigger_seconds, driver_ms)
    run = StreamingRun(writer.start(), counts, heartbeat, checkpoint, progress_log)
    started.append(run)
    return run


def streaming_evaluation(
    spark: SparkSession,
    settings: Settings,
    *,
    topic: str | None = None,
    checkpoint_name: str = DEFAULT_CHECKPOINT,
    timeout_s: float | None = None,
) -> StreamCounts:
    """Process everything available in the topic since the checkpoint, then stop
    (trigger ``availableNow``); return the counts. Needs a promoted model."""
    t0 = time.monotonic()
    run = start_streaming_evaluation(
        spark, settings, topic=topic, checkpoint_name=checkpoint_name, available_now=True
    )
    try:
        finished = run.query.awaitTermination(timeout_s)
        if finished is False:
            raise TimeoutError(f"streaming evaluation did not finish within {timeout_s}s")
        if run.query.exception() is not None:
            raise RuntimeError(f"streaming evaluation failed: {run.query.exception()}")
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
    stop_event: threading.Event | None = None,
    heartbeat_s: float = 2.0,
) -> StreamCounts:
    """Run until ``stop_event`` is set, Ctrl-C or SIGTERM; stop the query cleanly.

    Waits for a promoted model first; writes the heartbeat every ``heartbeat_s``."""
    stop = stop_event or threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    heartbeat = Heartbeat(MongoTarget.from_settings(settings), checkpoint_name)
    counts = StreamCounts()
    run: StreamingRun | None = None
    try:
        heartbeat.write("starting", counts)
        if not wait_for_model(settings, stop, heartbeat, counts):
            return counts
        run = start_streaming_evaluation(
            spark,
            settings,
            topic=topic,
            checkpoint_name=checkpoint_name,
            trigger_seconds=trigger_seconds,
            max_offsets_per_trigger=max_offsets_per_trigger,
            heartbeat=heartbeat,
        )
        freeze_heap()  # the session, the query and their modules: no full GC over them
        while run.query.isActive and not stop.is_set():
            run.query.awaitTermination(heartbeat_s)
            heartbeat.write("running", run.counts, **progress_extra(run.observe_progress()))
        if not run.query.isActive and run.query.exception() is not None:
            raise RuntimeError(f"streaming evaluation failed: {run.query.exception()}")
    except KeyboardInterrupt:
        log.info("interrupted; stopping the streaming query")
    finally:
        if run is not None:
            run.stop()
            counts = run.counts
        else:
            heartbeat.write("stopped", counts)
            heartbeat.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return counts
