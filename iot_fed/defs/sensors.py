"""Sensors: the Kafka stream sensor (runs the rounds from what the ingesters landed) and
the aggregation sensor.

``iot_stream_sensor`` does not consume Kafka: the ingestion consumer group (``iot-fed ingest``,
:mod:`iot_fed.stream.group_ingest`) lands readings and keeps per-device landed counts and
per-partition offsets in MongoDB, next to each device's trained-through count and shard
(:mod:`iot_fed.store.shards`). A tick reads those (batched queries), gives new devices
their shard (one bulk write), reports a ``sensor_readings`` materialization when more
landed, adds new shards as ``shards`` partitions, and moves the round on (decision 0009):

- no round open: one ``local_model`` run per shard with ready devices (``min_new_samples``
  landed since their last model; a shard with a run in flight waits), tagged with the
  round; run keys derive from the round counter and the devices' trained-through counts,
  so a re-evaluated tick never trains twice;
- a round open: closed once its shard runs all ended or ``round_deadline_s`` passed; then,
  when aggregation is due (no global version within ``aggregation_interval_s``, none
  promoted yet, or learning devices a new version would calibrate), ONE aggregation run
  (``global_model``, its blocking check, ``promoted_model``) that records the shards it
  included and the failed or missing ones. A shard run that failed or was killed stored
  nothing, so its devices stay untrained and the next round retrains them.

``aggregation_sensor`` aggregates local models made outside rounds (a manual shard run)
that no global version has seen yet, at most once per ``aggregation_interval_s``.

The sensors are built by :func:`build_sensors` when the definitions load, with the
cadences from the settings (nothing is read at import).
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import dagster as dg

from iot_fed.config import Settings
from iot_fed.defs.assets.models import global_model, local_model, promoted_model
from iot_fed.defs.assets.stream import sensor_readings
from iot_fed.defs.partitions import ROUND_TAG, shards
from iot_fed.defs.resources import MongoDBResource, SettingsResource
from iot_fed.defs.rounds import PARTITION_TAG, round_shards
from iot_fed.stream.cursor import OpenRound, StreamCursor

if TYPE_CHECKING:
    from iot_fed.store.shards import DeviceProgress

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
    progress: Mapping[int, "DeviceProgress"],
    offsets: list[Any],
) -> dg.AssetMaterialization:
    """The ``sensor_readings`` materialization of what landed since the last report."""
    total = sum(p.readings for p in progress.values())
    untrained = {str(m): p.pending for m, p in sorted(progress.items()) if p.pending}
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
            "devices": len(progress),
            "untrained_readings_per_device": (
                untrained if len(untrained) <= REPORT_DEVICES else "omitted"
            ),
        },
    )


REPORT_DEVICES = 200
"""Per-device counts go into the materialization's metadata up to this many devices."""


def shards_in_flight(instance: dg.DagsterInstance) -> set[str]:
    """Shards with a ``local_model`` run queued or running (one query)."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT))
    return {
        r.tags[PARTITION_TAG]
        for r in runs
        if local_model.key in (r.asset_selection or ()) and PARTITION_TAG in r.tags
    }


def ready_shards(
    progress: Mapping[int, "DeviceProgress"], min_new: int, busy: set[str]
) -> dict[str, list[int]]:
    """Ready devices (``min_new`` readings landed since their last model) by shard, but
    for shards with a run in flight (theirs join the next round)."""
    out: dict[str, list[int]] = {}
    for m, p in sorted(progress.items()):
        if p.pending >= min_new and p.shard is not None and p.shard not in busy:
            out.setdefault(p.shard, []).append(m)
    return out


def round_step(
    instance: dg.DagsterInstance,
    cursor: StreamCursor,
    nxt: StreamCursor,
    s: "Settings",
    awaiting: Callable[[], Sequence[int]],
) -> list[dg.RunRequest]:
    """Advance the open round: closed once its shard runs ended or its deadline passed;
    a closed round with a shard that succeeded is aggregated (its own run) when
    aggregation is due. Updates ``nxt.round``."""
    r = cursor.round
    assert r is not None
    state = round_shards(instance, r.id)
    late = s.round_deadline_s > 0 and time.time() - r.started >= s.round_deadline_s
    # past the deadline the shards that finished are aggregated, if any did
    closed = r.closed or state.finished or (late and bool(state.succeeded))
    nxt.round = OpenRound(r.id, r.started, closed)
    if not closed:
        return []
    if not state.succeeded:  # nothing to aggregate: its devices are retrained next round
        nxt.round = None
        return []
    if not aggregation_due(instance, s.aggregation_interval_s, awaiting):
        return []
    nxt.round = None
    return [
        dg.RunRequest(
            run_key=f"aggregate-{r.id}",
            asset_selection=AGGREGATION_KEYS,
            tags={ROUND_TAG: r.id},
        )
    ]


def start_round(
    nxt: StreamCursor,
    progress: Mapping[int, "DeviceProgress"],
    ready: Mapping[str, list[int]],
    s: "Settings",
) -> list[dg.RunRequest]:
    """One shard run per shard with ready devices; the round opens in ``nxt``."""
    round_id = nxt.next_round_id(
        (m, progress[m].trained) for devices in ready.values() for m in devices
    )
    nxt.rounds += 1
    nxt.round = OpenRound(round_id, time.time())
    return [
        dg.RunRequest(
            run_key=f"{round_id}-{shard}",
            partition_key=shard,
            asset_selection=[local_model.key],
            tags={
                ROUND_TAG: round_id,
                "iot_fed/ready_devices": str(len(devices)),
                # run monitoring fails a run whose worker died with it (then retried)
                MAX_RUNTIME_TAG: str(s.training_run_max_runtime_s),
            },
        )
        for shard, devices in sorted(ready.items())
    ]


def stream_tick(
    context: dg.SensorEvaluationContext,
    mongodb: MongoDBResource,
    settings: SettingsResource,
) -> dg.SensorResult:
    """One ``iot_stream_sensor`` tick (see the module docstring)."""
    from iot_fed.federation.calibration import awaiting_calibration  # sensor ticks only
    from iot_fed.store.ingest_progress import landed_offsets
    from iot_fed.store.shards import assign_shards, device_progress

    s = settings.get()
    instance = context.instance
    cursor = StreamCursor.parse(context.cursor)
    db = mongodb.db
    # what the ingesters made durable and what is trained (a store that does not answer
    # fails the tick); a device's shard is fixed the first time a tick sees it
    progress = device_progress(db)
    added = assign_shards(db, progress, s.devices_per_shard)
    progress = {m: replace(p, shard=added.get(m, p.shard)) for m, p in progress.items()}
    offsets = landed_offsets(db, s.kafka_topic)
    total = sum(p.readings for p in progress.values())
    known = set(instance.get_dynamic_partitions(shards.name))
    new_shards = sorted({p.shard for p in progress.values() if p.shard} - known)
    nxt = StreamCursor(
        total, {o.partition: o.next_offset for o in offsets}, cursor.rounds, cursor.round
    )
    run_requests: list[dg.RunRequest] = []
    ready: dict[str, list[int]] = {}
    if cursor.round is not None:
        awaiting = lambda: awaiting_calibration(db, [], s.calibration_min_span_h)  # noqa: E731
        run_requests = round_step(instance, cursor, nxt, s, awaiting)
    elif not in_flight(instance, global_model.key):
        ready = ready_shards(progress, s.min_new_samples, shards_in_flight(instance))
        if ready:
            run_requests = start_round(nxt, progress, ready, s)
    context.log.info(
        "landed: %d readings (%d new since the last tick), %d devices (%d new), "
        "%d shards (%d new); round %s; started %d shard runs; aggregating: %s",
        total,
        total - cursor.landed,
        len(progress),
        len(added),
        len(known) + len(new_shards),
        len(new_shards),
        nxt.round.id if nxt.round else "none open",
        len(ready),
        any(r.partition_key is None for r in run_requests),
    )
    report = landed_report(s.kafka_topic, cursor, progress, offsets)
    return dg.SensorResult(
        run_requests=run_requests,
        asset_events=[report] if total != cursor.landed else [],
        dynamic_partitions_requests=[shards.build_add_request(new_shards)] if new_shards else [],
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
    run = instance.get_run_by_id(records[0].run_id)
    if run is not None and ROUND_TAG in run.tags:
        return dg.SensorResult(
            skip_reason="the newest local models are a round's: the stream sensor aggregates it",
            cursor=str(newest),
        )
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
        "(sensor_readings), gives new devices a shard and runs the rounds: one run per shard "
        "with ready devices, then one aggregation run once they ended (or the round's "
        "deadline passed) and aggregation is due.",
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
        description="Aggregates local models made outside the stream sensor's rounds that "
        "no global version has seen yet (at most once per aggregation_interval_s; after an "
        "in-flight training run, unless that would starve it) and promotes the version if "
        "it passes its blocking check.",
    )
    def aggregation_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        return aggregation_tick(context, interval)

    return [iot_stream_sensor, aggregation_sensor]
