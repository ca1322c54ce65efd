"""What one bounded ingestion batch did, and the one-line error when it could not be made
durable (naming the service that failed; nothing was committed)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from iot_fed.config import Settings
from iot_fed.redact import redact
from iot_fed.store import StoreConnectionError

if TYPE_CHECKING:
    from iot_fed.stream.landing import Landed


class IngestError(RuntimeError):
    """The batch could not be made durable (nothing was committed)."""


@dataclass
class IngestResult:
    """What one bounded batch did. Offsets are ``{partition: next offset to read}``."""

    topic: str
    n_messages: int = 0
    n_valid: int = 0
    n_inserted: int = 0
    n_duplicates: int = 0
    n_dead: int = 0
    per_device_new_counts: dict[int, int] = field(default_factory=dict)
    per_device_valid_counts: dict[int, int] = field(default_factory=dict)
    """Valid readings consumed per device, new or already stored (a re-read batch counts
    the same again: what a cursor-keyed trigger needs to be deterministic)."""
    offsets_to_commit: dict[int, int] = field(default_factory=dict)
    next_offsets: dict[int, int] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)
    committed: bool = False
    reached_end: bool = False
    dead_reasons: dict[str, int] = field(default_factory=dict)
    max_ts: datetime | None = None
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (partition keys as strings, ``max_ts`` ISO-8601)."""
        d = asdict(self)
        for k in (
            "per_device_new_counts",
            "per_device_valid_counts",
            "offsets_to_commit",
            "next_offsets",
            "end_offsets",
        ):
            d[k] = {str(p): v for p, v in d[k].items()}
        d["max_ts"] = self.max_ts.isoformat() if self.max_ts else None
        d["lag"] = self.lag
        return d

    def add(self, landed: Landed) -> None:
        """Count one landed chunk in."""
        self.n_valid += landed.n_valid
        self.n_inserted += landed.n_inserted
        self.n_dead += landed.n_dead
        self.n_messages += landed.n_messages
        for into, counts in (
            (self.per_device_new_counts, landed.new_counts),
            (self.per_device_valid_counts, landed.valid_counts),
            (self.dead_reasons, landed.dead_reasons),
        ):
            for k, n in counts.items():
                into[k] = into.get(k, 0) + n
        if landed.max_ts is not None:
            self.max_ts = landed.max_ts if self.max_ts is None else max(self.max_ts, landed.max_ts)

    @property
    def lag(self) -> int:
        """Messages left after this batch (vs the end offsets seen at its start)."""
        return sum(max(h - self.next_offsets.get(p, h), 0) for p, h in self.end_offsets.items())


def service_error(settings: Settings, exc: BaseException) -> IngestError:
    """One line naming the service that failed (the batch committed nothing)."""
    first = (str(exc).splitlines() or [""])[0][:300]
    if isinstance(exc, PyMongoError | StoreConnectionError):
        where = f"MongoDB at {redact(settings.mongodb_uri)}"
    else:
        where = f"Kafka at {settings.kafka_bootstrap}"
    return IngestError(
        f"{where} unavailable ({type(exc).__name__}: {first}); nothing committed, "
        "the batch will be re-read"
    )


def normalise_offsets(offsets: Mapping[Any, Any] | None) -> dict[int, int] | None:
    """Accept JSON-style cursors (string partition keys)."""
    if offsets is None:
        return None
    return {int(p): int(o) for p, o in offsets.items()}
