"""The stream group: the Kafka topic (observable) and the readings landed from it.

``iot_stream`` is observed for end offsets and lag. ``sensor_readings`` is landed by the
ingestion consumer group (``iot-fed ingest``); ``iot_stream_sensor`` reports what landed
since its last tick as a materialization with the offsets and counts the ingesters keep in
MongoDB, so the lineage runs topic -> readings -> local models.
"""

import dagster as dg

from iot_fed.defs.resources import KafkaResource

sensor_readings = dg.AssetSpec(
    "sensor_readings",
    deps=["iot_stream"],
    group_name="stream",
    kinds={"kafka", "mongodb"},
    description="Validated readings in MongoDB sensor_readings (unique (moteid, epoch)), "
    "landed by the ingestion consumer group (iot-fed ingest); rejected messages go to "
    "dead_letters and iot_stream_dlq with their reason. iot_stream_sensor reports what "
    "landed since its last tick as one materialization.",
)


@dg.observable_source_asset(
    name="iot_stream",
    group_name="stream",
    description="Kafka topic of sensor readings (keyed by mote id); observed for offsets/lag.",
    auto_observe_interval_minutes=1,
)
def iot_stream(kafka: KafkaResource) -> dg.ObserveResult:
    from iot_fed.stream.admin import topic_status

    s = kafka.settings()
    statuses = topic_status(s, [s.kafka_topic], s.kafka_consumer_group)
    if not statuses:
        raise dg.Failure(f"topic {s.kafka_topic} does not exist on {s.kafka_bootstrap} yet")
    st = statuses[0]
    end = {str(p.partition): p.high for p in st.partitions}
    return dg.ObserveResult(
        metadata={
            "topic": s.kafka_topic,
            "bootstrap": s.kafka_bootstrap,
            "partitions": len(end),
            "end_offsets": end,
            "messages_retained": st.messages,
            "consumer_group": s.kafka_consumer_group,
            "consumer_lag": dg.MetadataValue.int(int(st.lag or 0)),
        },
        data_version=dg.DataVersion(",".join(f"{p}:{o}" for p, o in sorted(end.items()))),
    )
