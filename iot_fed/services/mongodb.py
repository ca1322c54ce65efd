"""The local MongoDB-wire-compatible server: FerretDB with its SQLite backend."""

from __future__ import annotations

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from iot_fed.services import artifacts
from iot_fed.services.base import LOCAL_HOST, Service
from iot_fed.services.process import port_open


class MongoService(Service):
    name = "mongodb"
    setting = "IOT_FED_MONGODB_URI"

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
        return artifacts.ferretdb_installed(self.state_dir)

    def install(self) -> None:
        artifacts.install_ferretdb(self.state_dir)

    def prepare(self) -> None:
        for sub in ("data", "state"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            str(artifacts.ferretdb_binary(self.state_dir)),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.home / 'data'}/",
            f"--state-dir={self.home / 'state'}",
            f"--listen-addr={LOCAL_HOST}:{self.port}",
            "--debug-addr=-",
            "--telemetry=disable",
            "--log-level=warn",
        ]

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
