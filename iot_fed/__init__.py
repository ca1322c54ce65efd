"""iot_fed: federated anomaly detection for IoT sensor streams (Kafka, JAX, Spark, Dagster)."""

__version__ = "0.1.0"
