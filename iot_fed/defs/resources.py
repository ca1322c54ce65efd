"""Dagster resources: settings, Kafka (confluent-kafka factory), MongoDB (pymongo), Spark
(dagster-pyspark's ``PySparkResource``, made by ``PySparkFactory``).

Every field defaults to ``None`` = "take it from :mod:`iot_fed.config` settings", so one
definition serves local defaults, ``.env`` files and production environment variables.
Settings are read when a resource is used (never at import); a bad or unreachable endpoint
fails there with a message naming the setting. Client libraries (confluent-kafka, pymongo,
pyspark) are imported where they are used, so loading the code location stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import dagster as dg
from pydantic import PrivateAttr

from iot_fed.config import Settings, load_settings
from iot_fed.defs.settings_fields import config_class, overrides, public_settings

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient
    from dagster_pyspark import PySparkResource
    from pymongo.database import Database


def _settings_with(**values: Any) -> Settings:
    return load_settings(**{k: v for k, v in values.items() if v is not None})


class _SettingsBase(dg.ConfigurableResource):
    def get(self, **run_overrides: Any) -> Settings:
        """Settings with this resource's fields and then ``run_overrides`` applied."""
        return load_settings(**{**overrides(self), **run_overrides})


SettingsResource = config_class(
    "SettingsResource",
    _SettingsBase,
    public_settings(),
    "Every iot_fed setting (model, federation, orchestration, endpoints) as a typed field; "
    "unset fields come from IOT_FED_* / .env / project_config.yaml. Secrets are not here: "
    "they stay dg.EnvVar on the resource that uses them.",
    __name__,
)


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
        from confluent_kafka import KafkaException

        s = self.settings()
        try:
            self.admin().list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise dg.Failure(
                f"Kafka at IOT_FED_KAFKA_BOOTSTRAP={s.kafka_bootstrap} did not answer within "
                f"{timeout_s:.0f} s ({exc}); is it running (`iot-fed services status`)?"
            ) from None

    def client_config(self) -> dict[str, Any]:
        from iot_fed.stream.kafka_config import client_config

        return client_config(self.settings())

    def admin(self) -> AdminClient:
        from confluent_kafka.admin import AdminClient

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
        from iot_fed.store.setup import ensure_database

        if self.init_collections:
            ensure_database(self.db)  # once per process and database

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._db is not None:
            self._db.client.close()
            self._db = None

    @property
    def db(self) -> Database:
        if self._db is None:  # connects on first use (a run's setup, or a sensor tick)
            from iot_fed.store.client import connect

            s = self.settings()
            self._db = connect(s.mongodb_uri, s.mongodb_database)
        return self._db


class PySparkFactory(dg.ConfigurableResource["PySparkResource"]):
    """Makes the ``pyspark`` resource: a ``dagster_pyspark.PySparkResource``
    (:class:`iot_fed.defs.spark.IotFedPySparkResource`) configured from the settings.

    A factory (Dagster's documented ``create_resource`` override) because dagster_pyspark
    imports pyspark at import: the code location loads only these typed fields; only runs
    whose assets require ``pyspark`` (``evaluation_report``, ``predictions``) import it, when
    Dagster creates the resource, and they start the session on first use. Unset fields come
    from ``IOT_FED_SPARK_MASTER`` (``local[*]``, or ``spark://host:7077`` for a cluster) and
    ``IOT_FED_SPARK_SHUFFLE_PARTITIONS``.
    """

    master: str | None = None
    shuffle_partitions: int | None = None
    spark_conf: dict[str, str] = {}
    """Extra ``spark.*`` settings, applied last."""

    def settings(self) -> Settings:
        return _settings_with(
            spark_master=self.master, spark_shuffle_partitions=self.shuffle_partitions
        )

    def create_resource(self, context: dg.InitResourceContext) -> PySparkResource:
        from iot_fed.defs.spark import IotFedPySparkResource

        return IotFedPySparkResource.from_settings(self.settings(), **self.spark_conf)


# the annotation of an asset's ``pyspark`` parameter (what ``PySparkFactory`` makes)
if TYPE_CHECKING:
    PySparkParam: TypeAlias = dg.ResourceParam[PySparkResource]
else:  # Dagster resolves annotations at load: the real class would import pyspark there
    PySparkParam = dg.ResourceParam[Any]
