"""Every Kafka client configuration in one place: shared, producer, consumer, Spark source.

librdkafka clients (confluent-kafka) take :func:`client_config` plus their role's
settings; Spark's Kafka source takes the same security settings as ``kafka.*`` options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iot_fed.config import Settings

_JAAS = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def client_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings shared by producers, consumers and the admin client."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_username:
        conf["sasl.username"] = settings.kafka_sasl_username
    if settings.kafka_sasl_password:
        conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_ca_location:
        conf["ssl.ca.location"] = settings.kafka_ssl_ca_location
    return conf


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Idempotent producer (acks=all: no loss, no duplicate on retry)."""
    return {
        **client_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        **overrides,
    }


def consumer_config(settings: Settings, group: str | None = None, **overrides: Any) -> dict:
    """Manual-commit consumer: offsets are committed only after the writes are durable."""
    return {
        **client_config(settings),
        "group.id": group or settings.kafka_consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 100,
        **overrides,
    }


def spark_source_options(settings: Settings, topic: str | None = None) -> dict[str, str]:
    """``spark.readStream.format("kafka")`` options from the Kafka settings (SASL/TLS too)."""
    opts = {
        "kafka.bootstrap.servers": settings.kafka_bootstrap,
        "subscribe": topic or settings.kafka_topic,
        "kafka.security.protocol": settings.kafka_security_protocol,
        "failOnDataLoss": "false",
    }
    if settings.kafka_sasl_mechanism:
        mech = settings.kafka_sasl_mechanism.upper()
        opts["kafka.sasl.mechanism"] = mech
        if mech in _JAAS and settings.kafka_sasl_username:
            secret = settings.kafka_sasl_password
            pw = secret.get_secret_value() if secret else ""
            opts["kafka.sasl.jaas.config"] = (
                f'{_JAAS[mech]} required username="{settings.kafka_sasl_username}" password="{pw}";'
            )
    if settings.kafka_ssl_ca_location:
        opts["kafka.ssl.truststore.type"] = "PEM"
        opts["kafka.ssl.truststore.location"] = settings.kafka_ssl_ca_location
    return opts
