"""Kafka side of iot_fed: message format, topic admin, replay producer, ingestion.

Entry points: :class:`iot_fed.stream.group_ingest.GroupIngester` (``iot-fed ingest``, the
ingestion consumer group), :func:`iot_fed.stream.ingest.ingest_batch` (a bounded batch:
benchmarks, backfills), :func:`iot_fed.stream.producer.replay` (``iot-fed stream``),
:func:`iot_fed.stream.messages.decode_value` / ``encode_reading``. No Dagster imports here.
"""
