"""Dagster resources: Kafka (confluent-kafka factory), MongoDB (pymongo) and PySpark.

Every field defaults to ``None`` = "take it from :mod:`iot_fed.config` settings", so one
definition serves local defaults, ``.env`` files and production environment variables.
Settings are read when a resource starts (never at import); a bad or unreachable endpoint
fails there with a message naming the setting.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from pydantic import PrivateAttr
from pymongo.database import Database

from iot_fed.config import Settings, load_settings
from iot_fed.store.client import connect
from iot_fed.store.setup import ensure_database
from iot_fed.stream.kafka_config import client_config, consumer_config, producer_config


def _settings_with(**overrides: Any) -> Settings:
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


class SettingsResource(dg.ConfigurableResource):
    """Typed iot_fed settings (model, federation and orchestration knobs) for assets."""

    def get(self) -> Settings:
        return load_settings()


class KafkaResource(dg.ConfigurableResource):
    """Producer / consumer / admin factory for the readings topic (SASL/TLS passable)."""

    bootstrap_servers: str | None = None
    topic: str | None = None
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    check_on_start: bool = True

    def settings(self) -> Settings:
        return _settings_with(
            kafka_bootstrap=self.bootstrap_servers,
            kafka_topic=self.topic,
            kafka_security_protocol=self.security_protocol,
            kafka_sasl_mechanism=self.sasl_mechanism,
            kafka_sasl_username=self.sasl_username,
            kafka_sasl_password=self.sasl_password,
            kafka_ssl_ca_location=self.ssl_ca_location,
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.check_on_start:
            self.check_reachable()

    def check_reachable(self, timeout_s: float = 10.0) -> None:
        """Fail with a clear message when the brokers do not answer."""
        s = self.settings()
        try:
            self.admin().list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise dg.Failure(
                f"Kafka at IOT_FED_KAFKA_BOOTSTRAP={s.kafka_bootstrap} did not answer within "
                f"{timeout_s:.0f} s ({exc}); is it running (`iot-fed services status`)?"
            ) from None

    def client_config(self) -> dict[str, Any]:
        return client_config(self.settings())

    def producer(self, **extra: Any) -> Producer:
        """Idempotent producer (acks=all), as ``iot-fed stream`` uses."""
        return Producer(producer_config(self.settings(), **extra))

    def consumer(self, group_id: str | None = None, **extra: Any) -> Consumer:
        """Manual-commit consumer, as the ingestion core uses."""
        return Consumer(consumer_config(self.settings(), group_id, **extra))

    def admin(self) -> AdminClient:
        return AdminClient(self.client_config())


class MongoDBResource(dg.ConfigurableResource):
    """pymongo client + database; creates collections, validators and indexes on start."""

    uri: str | None = None
    database: str | None = None
    init_collections: bool = True
    _db: Database | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        return _settings_with(mongodb_uri=self.uri, mongodb_database=self.database)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        s = self.settings()
        self._db = connect(s.mongodb_uri, s.mongodb_database)
        if self.init_collections:
            ensure_database(self._db)  # once per process and database

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._db is not None:
            self._db.client.close()
            self._db = None

    @property
    def db(self) -> Database:
        if self._db is None:  # used outside a run (e.g. direct calls in a sensor)
            s = self.settings()
            self._db = connect(s.mongodb_uri, s.mongodb_database)
        return self._db
