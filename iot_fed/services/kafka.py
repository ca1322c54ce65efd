"""The local Apache Kafka: KRaft combined mode (broker + controller per node).

One node by default. A bootstrap that lists N local ports (``IOT_FED_KAFKA_BOOTSTRAP=
127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094``) is a cluster of N nodes on loopback, node i
listening on the i-th port (its controller on that port + 1000), all of them controller
voters, internal topics replicated min(3, N) times with min.insync.replicas min(2, N).
"""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from iot_fed.config import Settings
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

    def __init__(self, settings: Settings, node: int = 1) -> None:
        super().__init__(settings)
        self.node = node
        if node > 1:
            self.name = f"kafka-{node}"

    @classmethod
    def cluster(cls, settings: Settings) -> list[KafkaService]:
        """One service per node: every local bootstrap port (one, remote or not)."""
        n = len(settings.kafka_ports) if settings.kafka_is_local else 1
        return [cls(settings, i) for i in range(1, n + 1)]

    @property
    def nodes(self) -> int:
        return len(self.settings.kafka_ports) if self.settings.kafka_is_local else 1

    @property
    def cluster_id_path(self) -> Path:
        """Shared by every node (the first node's home)."""
        return self.state_dir / "kafka" / "cluster.id"

    @property
    def is_local(self) -> bool:
        return self.settings.kafka_is_local

    @property
    def endpoint(self) -> str:
        if self.nodes > 1:  # a node of a local cluster: its own listener
            return f"{LOCAL_HOST}:{self.port}"
        return self.settings.kafka_bootstrap

    @property
    def port(self) -> int:
        return self.settings.kafka_ports[self.node - 1]

    @staticmethod
    def _controller_port(port: int) -> int:
        p = port + CONTROLLER_PORT_OFFSET
        return p if p <= 65535 else port - CONTROLLER_PORT_OFFSET

    @property
    def controller_port(self) -> int:
        return self._controller_port(self.port)

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
        voters = ",".join(
            f"{i}@{LOCAL_HOST}:{self._controller_port(p)}"
            for i, p in enumerate(self.settings.kafka_ports[: self.nodes], start=1)
        )
        replicas, min_isr = str(min(3, self.nodes)), str(min(2, self.nodes))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{LOCAL_HOST}:{self.port},CONTROLLER://{LOCAL_HOST}:{cport}",
            "advertised.listeners": f"PLAINTEXT://{LOCAL_HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
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
        if not self.cluster_id_path.exists():  # the first node formatted decides it
            self.cluster_id_path.parent.mkdir(parents=True, exist_ok=True)
            self.cluster_id_path.write_text(random_cluster_id())
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
                self.cluster_id_path.read_text().strip(),
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
        if self.is_local and self.node < self.nodes:
            # a node alone has no quorum: it is up when it listens; the last one started
            # checks the whole cluster
            if port_open(LOCAL_HOST, self.controller_port) or port_open(LOCAL_HOST, self.port):
                return None
            return f"nothing listens on {LOCAL_HOST}:{self.controller_port}"
        if self.is_local and not port_open(LOCAL_HOST, self.port):
            return f"nothing listens on {LOCAL_HOST}:{self.port}"
        conf = {**self.settings.kafka_client_config(), "log_level": 0}
        try:
            md = AdminClient(conf).list_topics(timeout=max(timeout, 0.5))
        except KafkaException as exc:
            return f"no answer from Kafka at {self.endpoint}: {exc.args[0]}"
        if not md.brokers:
            return f"Kafka at {self.endpoint} reports no brokers"
        if self.is_local and len(md.brokers) < self.nodes:
            return f"Kafka at {self.endpoint}: {len(md.brokers)} of {self.nodes} brokers up"
        return None
