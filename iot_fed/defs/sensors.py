"""Sensors: the Kafka stream sensor (triggers training from what the ingesters landed) and
the aggregation sensor.

``iot_stream_sensor`` does not consume Kafka: the ingestion consumer group (``iot-fed ingest``,
:mod:`iot_fed.stream.group_ingest`) lands readings and keeps per-device landed counts and
per-partition offsets in MongoDB. A tick reads those (two queries), reports a
``sensor_readings`` materialization when more landed (offsets, new readings, devices),
adds unseen motes as ``devices`` partitions and puts all ready devices (``min_new_samples``
landed since their last training request) into ONE run (a partition-range run of
``local_model``, trained in one vmapped call). When no global version was made within
``aggregation_interval_s`` (or none was promoted yet, or a device of the run or with a new
local model has no calibrated threshold in the promoted version: it is *learning*, not
alarmed, until a version calibrates it) and none is being made, that run also
aggregates and promotes (``global_model``, its blocking check, ``promoted_model``): a round
is one run launch. The cursor keeps each device's landed count at its last request; the run
key is derived from it, so a re-evaluated tick never trains twice.

``aggregation_sensor`` aggregates local models that no global version has seen yet (a
training-only run), at most once per ``aggregation_interval_s``.

The sensors are built by :func:`build_sensors` when the definitions load, with the
cadences from the settings (nothing is read at import).
"""

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

from iot_fed.config import Settings
from iot_fed.defs.assets.models import global_model, local_model, promoted_model
from iot_fed.defs.assets.stream import sensor_readings
from iot_fed.defs.partitions import covering_range, devices, range_tags
from iot_fed.defs.resources import MongoDBResource, SettingsResource
from iot_fed.stream.cursor import StreamCursor

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
AGGREGATION_KEYS = [global_model.key, promoted_model.key]
MAX_RUNTIME_TAG = "dagster/max_runtime"

aggregate_job = dg.define_asset_job(
    "aggregate_global_model",
    selection=[global_model, promoted_model],
    description="Aggregate the newest local models into a global version, check it and "
    "promote it (the blocking check not_worse_than_promoted gates promotion).",
)


def in_flight(instance: dg.DagsterInstance, key: dg.AssetKey) -> bool:
    """Is a run that materializes ``key`` queued or running?"""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT))
    return any(key in (r.asset_selection or ()) for r in runs)


def aggregation_due(
    instance: dg.DagsterInstance,
    interval_s: float,
    awaiting_calibration: Callable[[], Sequence[int]] = tuple,
) -> bool:
    """None being made now, and no global version within ``interval_s``, or none promoted
    yet (until the fleet has a model, every round aggregates: a version held back by its
    blocking check is retried with the next round's models, not ``interval_s`` later), or
    learning devices that a new version would calibrate now (``awaiting_calibration``,
    asked only when the interval has not passed): their readings are not judged until
    then."""
    if in_flight(instance, global_model.key):
        return False
    if instance.get_latest_materialization_event(promoted_model.key) is None:
        return True
    last = instance.get_latest_materialization_event(global_model.key)
    if last is None or time.time() - last.timestamp >= interval_s:
        return True
    return bool(awaiting_calibration())


def landed_report(
    topic: str,
    cursor: StreamCursor,
    landed: Mapping[int, int],
    pending: Mapping[str, int],
    offsets: list[Any],
) -> dg.AssetMaterialization:
    """The ``sensor_readings`` materialization of what landed since the last report;
    ``pending`` is :meth:`StreamCursor.pending` of ``landed``."""
    total = sum(landed.values())
    untrained = dict(sorted(pending.items(), key=lambda kv: int(kv[0])))
    return dg.AssetMaterialization(
        asset_key=sensor_readings.key,
        description=f"{total - cursor.landed} new readings from {topic}",
        metadata={
            "topic": topic,
            "offsets_from": {str(p): o for p, o in sorted(cursor.offsets.items())},
            "offsets_to": {str(o.partition): o.next_offset for o in offsets},
            "landed_by": sorted({o.landed_by for o in offsets if o.landed_by}),
            "new_readings": total - cursor.landed,
            "readings_total": total,
            "devices": len(landed),
            "untrained_readings_per_device": (
                untrained if len(untrained) <= REPORT_DEVICES else "omitted"
            ),
        },
    )


REPORT_DEVICES = 200
"""Per-device counts go into the materialization's metadata up to this many devices."""


def stream_tick(
    context: dg.SensorEvaluationContext,
    mongodb: MongoDBResource,
    settings: SettingsResource,
) -> dg.SensorResult:
    """One ``iot_stream_sensor`` tick (see the module docstring)."""
    from iot_fed.federation.calibration import awaiting_calibration  # sensor ticks only
    from iot_fed.store.ingest_progress import landed_offsets, landed_per_device

    s = settings.get()
    cursor = StreamCursor.parse(context.cursor)
    db = mongodb.db
    # what the ingesters made durable (a store that does not answer fails the tick)
    landed = landed_per_device(db)
    offsets = landed_offsets(db, s.kafka_topic)
    total = sum(landed.values())
    known = list(context.instance.get_dynamic_partitions(devices.name))
    new_devices = sorted({str(d) for d in landed} - set(known), key=int)
    pending = cursor.pending(landed)
    ready = [d for d, n in pending.items() if n >= s.min_new_samples]
    nxt = StreamCursor(dict(cursor.trained), total, {o.partition: o.next_offset for o in offsets})
    run_requests = []
    aggregate = False
    # One training run at a time: while one is queued or running, ready devices stay pending
    # (their readings are landed) and join the next run, so a slow machine never piles up a
    # queue of training runs.
    training_busy = bool(ready) and in_flight(context.instance, local_model.key)
    if ready and not training_busy:
        covered = covering_range(known + new_devices, ready)
        for d in covered:  # the run trains every device in its range
            if int(d) in landed:
                nxt.trained[d] = landed[int(d)]
        aggregate = aggregation_due(
            context.instance,
            s.aggregation_interval_s,
            lambda: awaiting_calibration(db, covered, s.calibration_min_span_h),
        )
        run_requests.append(
            dg.RunRequest(
                run_key=nxt.run_key(),
                asset_selection=[local_model.key, *(AGGREGATION_KEYS if aggregate else [])],
                tags={
                    **range_tags(covered),
                    "iot_fed/ready_devices": str(len(ready)),
                    # run monitoring fails a run whose worker died with it (then retried)
                    MAX_RUNTIME_TAG: str(s.training_run_max_runtime_s),
                },
            )
        )
    context.log.info(
        "landed: %d readings (%d new since the last tick), %d devices (%d new), %d ready "
        "(aggregating in the same run: %s; waiting for the training run in flight: %s)",
        total,
        total - cursor.landed,
        len(landed),
        len(new_devices),
        len(ready),
        aggregate,
        training_busy,
    )
    report = landed_report(s.kafka_topic, cursor, landed, pending, offsets)
    return dg.SensorResult(
        run_requests=run_requests,
        asset_events=[report] if total != cursor.landed else [],
        dynamic_partitions_requests=[devices.build_add_request(new_devices)] if new_devices else [],
        cursor=nxt.dump(),
    )


def aggregation_tick(
    context: dg.SensorEvaluationContext, interval_s: float
) -> dg.SensorResult | dg.SkipReason:
    """One ``aggregation_sensor`` tick: local models newer than any global version."""
    instance = context.instance
    after = int(context.cursor) if context.cursor else None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=local_model.key, after_storage_id=after),
        ascending=False,
        limit=1,
    ).records
    if not records:
        return dg.SkipReason("no new local model materializations")
    newest = records[0].storage_id
    last_global = instance.fetch_materializations(global_model.key, limit=1).records
    if last_global and last_global[0].storage_id > newest:
        return dg.SensorResult(
            skip_reason="the newest local models were aggregated in their training run",
            cursor=str(newest),
        )
    if in_flight(instance, global_model.key):
        return dg.SkipReason("an aggregation is in flight")
    waited = time.time() - records[0].timestamp
    if in_flight(instance, local_model.key) and waited < interval_s:
        # Let the round's training run land first, but never starve under back-to-back runs.
        return dg.SkipReason("a local_model run is still in flight; aggregating after it")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"aggregate-{newest}")], cursor=str(newest)
    )


DAEMON_LOOP_SLACK_S = 1
"""Dagster's sensor daemon evaluates sensors on a 5 s loop and skips one whose last tick
started less than ``minimum_interval_seconds`` ago, by however little: a 5 s (or 30 s)
interval then ticks every 10 s (35 s) half the time. The declared minimum is one second
under the cadence the settings ask for, so ticks land on the loop that meets it."""


def minimum_interval(cadence_s: int) -> int:
    """``minimum_interval_seconds`` for a sensor that should tick every ``cadence_s``."""
    return max(cadence_s - DAEMON_LOOP_SLACK_S, 1)


def build_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    """The two sensors, with their cadences from ``settings``; both run by default."""
    interval = max(settings.aggregation_interval_s, 1)

    @dg.sensor(
        name="iot_stream_sensor",
        minimum_interval_seconds=minimum_interval(settings.sensor_interval_s),
        asset_selection=[local_model.key, *AGGREGATION_KEYS],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Watches what the ingestion consumer group landed from iot_stream "
        "(sensor_readings), adds new devices as partitions and trains all ready devices in "
        "one run, which also aggregates and promotes when aggregation is due.",
    )
    def iot_stream_sensor(
        context: dg.SensorEvaluationContext,
        mongodb: MongoDBResource,
        settings: SettingsResource,
    ) -> dg.SensorResult:
        return stream_tick(context, mongodb, settings)

    @dg.sensor(
        name="aggregation_sensor",
        minimum_interval_seconds=minimum_interval(interval),
        job=aggregate_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Aggregates local models that no global version has seen yet (at most "
        "once per aggregation_interval_s; after an in-flight training run, unless that "
        "would starve it) and promotes the version if it passes its blocking check.",
    )
    def aggregation_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        return aggregation_tick(context, interval)

    return [iot_stream_sensor, aggregation_sensor]
