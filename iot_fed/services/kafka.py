"""The local Apache Kafka broker: KRaft combined mode (broker + controller), one node."""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from iot_fed.services import artifacts
from iot_fed.services.artifacts import run_checked
from iot_fed.services.base import LOCAL_HOST, Service
from iot_fed.services.process import port_open

log = logging.getLogger(__name__)

HEAP = "-Xmx512m"
CONTROLLER_PORT_OFFSET = 1000

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def random_cluster_id() -> str:
    """A Kafka cluster id: url-safe base64 of 16 random bytes (no padding, no leading '-')."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class KafkaService(Service):
    name = "kafka"
    setting = "IOT_FED_KAFKA_BOOTSTRAP"

    @property
    def is_local(self) -> bool:
        return self.settings.kafka_is_local

    @property
    def endpoint(self) -> str:
        return self.settings.kafka_bootstrap

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    @property
    def controller_port(self) -> int:
        p = self.port + CONTROLLER_PORT_OFFSET
        return p if p <= 65535 else self.port - CONTROLLER_PORT_OFFSET

    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def installed(self) -> bool:
        return artifacts.kafka_installed(self.state_dir)

    def install(self) -> None:
        artifacts.install_kafka(self.state_dir)

    def _classpath(self) -> str:
        return str(artifacts.kafka_libs(self.state_dir) / "*")

    def server_properties(self) -> str:
        cport = self.controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{LOCAL_HOST}:{cport}",
            "listeners": f"PLAINTEXT://{LOCAL_HOST}:{self.port},CONTROLLER://{LOCAL_HOST}:{cport}",
            "advertised.listeners": f"PLAINTEXT://{LOCAL_HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.num.partitions": "10",
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "server.properties").write_text(self.server_properties())
        (self.home / "log4j2.properties").write_text(LOG4J2)
        if (self.data_dir / "meta.properties").exists():
            return  # formatted before: keep the data
        java = artifacts.require_tool("java", "to run the Kafka broker")
        log.info("formatting Kafka storage in %s", self.data_dir)
        run_checked(
            [
                java,
                "-Xmx256m",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                "-cp",
                self._classpath(),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                random_cluster_id(),
                "-c",
                str(self.home / "server.properties"),
            ],
            "kafka: formatting storage (kafka.tools.StorageTool format)",
        )

    def command(self) -> list[str]:
        java = artifacts.require_tool("java", "to run the Kafka broker")
        return [
            java,
            HEAP,
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.home / "server.properties"),
        ]

    def probe(self, timeout: float) -> str | None:
        if self.is_local and not port_open(LOCAL_HOST, self.port):
            return f"nothing listens on {LOCAL_HOST}:{self.port}"
        conf = {**self.settings.kafka_client_config(), "log_level": 0}
        try:
            md = AdminClient(conf).list_topics(timeout=max(timeout, 0.5))
        except KafkaException as exc:
            return f"no answer from Kafka at {self.endpoint}: {exc.args[0]}"
        if not md.brokers:
            return f"Kafka at {self.endpoint} reports no brokers"
        return None
