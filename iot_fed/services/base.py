"""What the manager needs to know about one service (Kafka broker, MongoDB-compatible server)."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from pathlib import Path

from iot_fed.config import Settings

LOCAL_HOST = "127.0.0.1"


class Service(ABC):
    """One service: where it listens, how to install, prepare, run and probe it."""

    name: str
    setting: str  # the IOT_FED_* variable that points at it
    optional: bool = False  # True: `up` reports its failure and keeps the others running
    stop_signal: signal.Signals = signal.SIGTERM  # what `down` sends first

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # --- where -----------------------------------------------------------------
    @property
    @abstractmethod
    def is_local(self) -> bool:
        """True when the setting points at this machine (iot-fed may start it)."""

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """What clients connect to (bootstrap servers or URI)."""

    @abstractmethod
    def ports(self) -> list[int]:
        """Local TCP ports the process will listen on (all must be free to start)."""

    @property
    def state_dir(self) -> Path:
        """Absolute: processes run with their own working directory."""
        return self.settings.state_dir.resolve()

    @property
    def home(self) -> Path:
        return self.state_dir / self.name

    @property
    def record_path(self) -> Path:
        return self.home / "process.json"

    @property
    def log_path(self) -> Path:
        return self.home / f"{self.name}.log"

    # --- how -------------------------------------------------------------------
    @abstractmethod
    def installed(self) -> bool: ...

    @abstractmethod
    def install(self) -> None:
        """Fetch or build the artifacts (cached)."""

    @abstractmethod
    def prepare(self) -> None:
        """Write config files and initialise storage (idempotent; keeps existing data)."""

    @abstractmethod
    def command(self) -> list[str]: ...

    def run_as(self) -> str | None:
        """The system user the process runs as (None: the caller's)."""
        return None

    def after_start(self) -> None:
        """Runs once the service answers (also when it was already running); idempotent."""
        return None

    @abstractmethod
    def probe(self, timeout: float) -> str | None:
        """None when the service answers a real client request, else the reason it does not."""


def redact(endpoint: str) -> str:
    """``endpoint`` with any ``user:password@`` replaced, for printing."""
    scheme, sep, rest = endpoint.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return endpoint
