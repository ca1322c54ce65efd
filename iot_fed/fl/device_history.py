"""A device's scoring context between calls: the readings its window needs next and the
newest reading scored (JSON for the scorer's state and the API's clients)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeviceHistory:
    """What scoring one device's next readings needs: its context (the most recent
    readings the window uses, anomalies left out), and the newest reading scored."""

    epochs: tuple[int, ...]
    ts_ms: tuple[int, ...]
    values: tuple[tuple[float, float, float, float], ...]
    last_seen: tuple[int, int] | None = None
    """``(epoch, ts_ms)`` of the newest reading scored (in the context or not)."""
    excluded_run: int = 0
    """How many readings in a row, up to the newest, scored above the exclusion level."""

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of :meth:`to_json`."""
        return {
            "epochs": list(self.epochs),
            "ts_ms": list(self.ts_ms),
            "values": self.values,
            "last_seen": None if self.last_seen is None else list(self.last_seen),
            "excluded_run": self.excluded_run,
        }

    @classmethod
    def from_json(cls, text: str) -> DeviceHistory:
        """Parse :meth:`to_json` output; anything else raises ``ValueError`` saying why."""
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not a DeviceHistory: {exc!r}") from None
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: Any) -> DeviceHistory:
        """:meth:`from_json` of an already parsed object."""
        try:
            seen = d.get("last_seen")
            hist = cls(
                tuple(int(e) for e in d["epochs"]),
                tuple(int(t) for t in d["ts_ms"]),
                tuple(tuple(float(v) for v in row) for row in d["values"]),  # type: ignore[misc]
                None if seen is None else (int(seen[0]), int(seen[1])),
                int(d.get("excluded_run", 0)),
            )
        except (TypeError, KeyError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"not a DeviceHistory: {exc!r}") from None
        if not len(hist.epochs) == len(hist.ts_ms) == len(hist.values):
            raise ValueError("not a DeviceHistory: epochs, ts_ms and values differ in length")
        if any(len(row) != 4 for row in hist.values):
            raise ValueError("not a DeviceHistory: each values row needs 4 channels")
        return hist

    @property
    def last_epoch(self) -> int | None:
        """The newest epoch scored, None when nothing was."""
        if self.last_seen is not None:
            return self.last_seen[0]
        return self.epochs[-1] if self.epochs else None

    @classmethod
    def empty(cls) -> DeviceHistory:
        return cls((), (), ())
