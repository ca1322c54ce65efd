"""Kafka side of iot_fed: message format, topic admin, replay producer, ingestion core.

Entry points: :func:`iot_fed.stream.ingest.ingest_batch` / :class:`~iot_fed.stream.ingest.Ingestor`
(the Dagster sensor), :func:`iot_fed.stream.producer.replay` (``iot-fed stream``),
:func:`iot_fed.stream.messages.decode_value` / ``encode_reading``. No Dagster imports here.
"""
