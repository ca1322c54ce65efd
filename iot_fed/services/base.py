"""What the manager needs to know about one service (Kafka broker, MongoDB-compatible server)."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from iot_fed.config import Settings

LOCAL_HOST = "127.0.0.1"


class Service(ABC):
    """One service: where it listens, how to install, prepare, run and probe it."""

    name: str
    setting: str  # the IOT_FED_* variable that points at it
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

    @property
    def workdir(self) -> Path:
        """The process's working directory (one its user can enter)."""
        return self.home

    def data_paths(self) -> list[Path]:
        """Everything ``iot-fed services purge`` deletes for this service."""
        return [self.home]

    off_switch: str | None = None  # the setting that leaves this service out on purpose

    def disabled(self) -> str | None:
        """Why this service is switched off by a setting (None: it is on, and required)."""
        return None

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


@dataclass(frozen=True)
class ServiceStatus:
    """One service after an operation: where it is and whether it answers."""

    name: str
    endpoint: str
    managed: bool  # False: the setting points elsewhere, iot-fed does not start it
    state: str  # started | already running | running | stopped | not running | external | ...
    healthy: bool | None  # None: not probed
    pid: int | None = None
    log: Path | None = None
    detail: str = ""

    def line(self) -> str:
        health = {True: "healthy", False: "unhealthy", None: "-"}[self.healthy]
        parts = [f"{self.name:<8}", f"{self.endpoint:<28}", f"{self.state:<24}", f"{health:<9}"]
        if self.pid:
            parts.append(f"pid={self.pid}")
        if self.log:
            parts.append(f"log={self.log}")
        if self.detail:
            parts.append(f"({self.detail})")
        return " ".join(parts).rstrip()


REPORTING_OFF = "IOT_FED_REPORTING=false"


class ReportingService(Service):
    """A service of the reporting store and its dashboards: on unless ``IOT_FED_REPORTING``
    is false, and then required (a failure stops ``up``, with the reason and the switch)."""

    off_switch = REPORTING_OFF

    def disabled(self) -> str | None:
        return None if self.settings.reporting else f"switched off ({REPORTING_OFF})"
