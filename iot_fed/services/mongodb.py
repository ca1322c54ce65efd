"""The local MongoDB-wire-compatible server: mongo-java-server (H2) or FerretDB (SQLite).

mongo-java-server (the default) commits its H2 store before it acknowledges a write whose
write concern asks for durability (``j: true`` / ``w: "majority"``, the store's default) and
on the ``fsync`` command, so acknowledged writes survive kill -9.

``settings.mongodb_server`` picks the :class:`ServerKind`; the process management
(PID record, log, readiness probe) is the same for both. Each kind keeps its data in
its own place under ``<state_dir>/mongodb`` so switching kinds never mixes files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from iot_fed.services import artifacts
from iot_fed.services.base import LOCAL_HOST, Service
from iot_fed.services.process import port_open


class ServerKind(ABC):
    """One server implementation: its artifacts, its data directory and its command line."""

    name: str

    def __init__(self, state_dir: Path, home: Path, heap_mb: int) -> None:
        self.state_dir = state_dir
        self.home = home
        self.heap_mb = heap_mb  # a JVM server's heap (IOT_FED_MONGODB_SERVER_HEAP_MB)

    @abstractmethod
    def installed(self) -> bool: ...

    @abstractmethod
    def install(self) -> None: ...

    @abstractmethod
    def data_dirs(self) -> list[Path]:
        """Directories to create before start (existing data is kept)."""

    @abstractmethod
    def command(self, port: int) -> list[str]: ...


class FerretDB(ServerKind):
    """FerretDB v1 with its SQLite backend (one file per database under ``data/``)."""

    name = "ferretdb"

    def installed(self) -> bool:
        return artifacts.ferretdb_installed(self.state_dir)

    def install(self) -> None:
        artifacts.install_ferretdb(self.state_dir)

    def data_dirs(self) -> list[Path]:
        return [self.home / "data", self.home / "state"]

    def command(self, port: int) -> list[str]:
        return [
            str(artifacts.ferretdb_binary(self.state_dir)),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.home / 'data'}/",
            f"--state-dir={self.home / 'state'}",
            f"--listen-addr={LOCAL_HOST}:{port}",
            "--debug-addr=-",
            "--telemetry=disable",
            "--log-level=warn",
        ]


class MongoJavaServer(ServerKind):
    """mongo-java-server with its H2 backend: all databases in one MVStore file."""

    name = "mongo-java-server"
    cache_mb = 512  # H2 MVStore page cache; the 16 MB default thrashes on full scans
    durability = "concern"  # see mongo-server/README.md and bench/bench_durability.py

    def installed(self) -> bool:
        return artifacts.mongo_java_server_installed(self.state_dir)

    def install(self) -> None:
        artifacts.install_mongo_java_server(self.state_dir)

    @property
    def store_file(self) -> Path:
        return self.home / "mongo-java-server" / "data.mv"

    def data_dirs(self) -> list[Path]:
        return [self.store_file.parent]

    def command(self, port: int) -> list[str]:
        java = artifacts.require_tool("java", "to run mongo-java-server")
        return [
            java,
            f"-Xmx{self.heap_mb}m",
            "-Xms64m",
            "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            f"-Dmvstore.cacheMB={self.cache_mb}",
            # commit the store before acknowledging j/majority writes and `fsync` (kill -9 safe)
            f"-Dmvstore.durability={self.durability}",
            "-cp",
            artifacts.mongo_java_server_classpath(self.state_dir),
            artifacts.MONGO_JAVA_SERVER_MAIN,
            LOCAL_HOST,
            str(port),
            str(self.store_file),
        ]


SERVER_KINDS: dict[str, type[ServerKind]] = {k.name: k for k in (FerretDB, MongoJavaServer)}


class MongoService(Service):
    name = "mongodb"
    setting = "IOT_FED_MONGODB_URI"

    @property
    def kind(self) -> ServerKind:
        """The server implementation chosen by ``IOT_FED_MONGODB_SERVER``."""
        return SERVER_KINDS[self.settings.mongodb_server](
            self.state_dir, self.home, self.settings.mongodb_server_heap_mb
        )

    @property
    def is_local(self) -> bool:
        return self.settings.mongodb_is_local

    @property
    def endpoint(self) -> str:
        return self.settings.mongodb_uri

    @property
    def port(self) -> int:
        return self.settings.mongodb_port

    def ports(self) -> list[int]:
        return [self.port]

    def installed(self) -> bool:
        return self.kind.installed()

    def install(self) -> None:
        self.kind.install()

    def prepare(self) -> None:
        for path in self.kind.data_dirs():
            path.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return self.kind.command(self.port)

    def probe(self, timeout: float) -> str | None:
        if self.is_local and not port_open(LOCAL_HOST, self.port):
            return f"nothing listens on {LOCAL_HOST}:{self.port}"
        ms = int(max(timeout, 0.5) * 1000)
        client: MongoClient = MongoClient(
            self.endpoint, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms
        )
        try:
            client.admin.command("ping")
        except PyMongoError as exc:
            return f"no answer from MongoDB at {self.endpoint}: {exc}"
        finally:
            client.close()
        return None
