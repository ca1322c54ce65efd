"""Sensors: the Kafka ingestion sensor (training trigger) and the aggregation sensor.

``iot_stream_sensor`` keeps the Kafka offsets and the per-device count of readings not yet
trained on as its cursor. A tick consumes one bounded batch through the ingestion core,
lands it in MongoDB, and only then returns the advanced cursor (so a crash before the
write re-reads the batch, and idempotent upserts make that harmless). Unseen motes become
``devices`` partitions in the same tick; all ready devices go into ONE run (a partition-range
run of ``local_model``, trained in one vmapped call). The run key is derived from the
offsets, so a re-evaluated tick never trains twice.
"""

import time

import dagster as dg

from iot_fed.defs.assets.models import global_model, local_model, promoted_model
from iot_fed.defs.partitions import covering_range, devices, range_tags
from iot_fed.defs.resources import KafkaResource, MongoDBResource, SettingsResource
from iot_fed.stream.cursor import StreamCursor
from iot_fed.stream.ingest import shared_ingestor


def sensor_interval() -> int:
    from iot_fed.config import load_settings

    return load_settings().sensor_interval_s


def aggregation_interval() -> int:
    from iot_fed.config import load_settings

    return max(load_settings().aggregation_interval_s, 1)


@dg.sensor(
    name="iot_stream_sensor",
    minimum_interval_seconds=sensor_interval(),
    asset_selection=[local_model],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Consumes iot_stream in bounded batches, lands readings in MongoDB, adds new "
    "devices as partitions and trains all ready devices in one run.",
)
def iot_stream_sensor(
    context: dg.SensorEvaluationContext,
    kafka: KafkaResource,
    mongodb: MongoDBResource,
    settings: SettingsResource,
) -> dg.SensorResult:
    s = settings.get()
    cursor = StreamCursor.parse(context.cursor)
    # built once per process (consumer, DLQ producer, topic check, db init); a service that
    # is down raises IngestError (one line naming it): the tick fails, the cursor stays.
    ingestor = shared_ingestor(kafka.settings(), mongodb.settings())
    res = ingestor.run_batch(
        s.ingest_max_messages, s.ingest_max_seconds, start_offsets=cursor.offsets, commit=True
    )
    # The writes are durable (acknowledged with j=true) here; only now may the cursor advance.
    known = list(context.instance.get_dynamic_partitions(devices.name))
    known_set = set(known)
    new_devices = sorted({str(d) for d in res.per_device_valid_counts} - known_set, key=int)
    pending = dict(cursor.pending)
    for d, n in res.per_device_valid_counts.items():
        pending[str(d)] = pending.get(str(d), 0) + int(n)
    ready = [d for d, n in pending.items() if n >= s.min_new_samples]
    nxt = StreamCursor({**cursor.offsets, **res.next_offsets}, pending)
    run_requests = []
    if ready:
        covered = covering_range(known + new_devices, ready)
        for d in covered:  # the run trains every device in its range
            nxt.pending.pop(d, None)
        run_requests.append(
            dg.RunRequest(
                run_key=nxt.run_key(),
                asset_selection=[local_model.key],
                tags={**range_tags(covered), "iot_fed/ready_devices": str(len(ready))},
            )
        )
    context.log.info(
        "batch: %d messages, %d new readings, %d dead letters, %d new devices, %d ready, lag %d",
        res.n_messages,
        res.n_inserted,
        res.n_dead,
        len(new_devices),
        len(ready),
        res.lag,
    )
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[devices.build_add_request(new_devices)] if new_devices else [],
        cursor=nxt.dump(),
    )


aggregate_job = dg.define_asset_job(
    "aggregate_global_model",
    selection=[global_model, promoted_model],
    description="Aggregate the newest local models into a global version and promote it.",
)


IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def training_in_flight(instance: dg.DagsterInstance) -> bool:
    """Is a run that materializes local_model queued or running?"""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT))
    return any(local_model.key in (r.asset_selection or ()) for r in runs)


@dg.sensor(
    name="aggregation_sensor",
    minimum_interval_seconds=aggregation_interval(),
    job=aggregate_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After new local models, aggregate a global version (at most once per "
    "aggregation_interval_s; after an in-flight training run, unless that would "
    "starve it) and promote it if it passes its blocking check.",
)
def aggregation_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=local_model.key, after_storage_id=after),
        ascending=False,
        limit=1,
    ).records
    if not records:
        return dg.SkipReason("no new local model materializations")
    newest = records[0].storage_id
    waited = time.time() - records[0].timestamp
    if training_in_flight(context.instance) and waited < aggregation_interval():
        # Let the round's training run land first, but never starve under back-to-back runs.
        return dg.SkipReason("a local_model run is still in flight; aggregating after it")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"aggregate-{newest}")], cursor=str(newest)
    )
