"""The Kafka sensor's cursor: what it has seen landed and what it has trained (JSON)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class StreamCursor:
    """Per device, the landed-readings count at its last training request (``trained``);
    the landed total and partition offsets at the last tick (for the next report)."""

    trained: dict[str, int] = field(default_factory=dict)
    landed: int = 0
    offsets: dict[int, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> StreamCursor:
        if not raw:
            return cls()
        d = json.loads(raw)
        if "trained" not in d:  # a cursor of the sensor that ingested itself: start over
            return cls()
        return cls(
            {str(k): int(v) for k, v in d["trained"].items()},
            int(d.get("landed", 0)),
            {int(p): int(o) for p, o in d.get("offsets", {}).items()},
        )

    def dump(self) -> str:
        return json.dumps(
            {
                "trained": dict(sorted(self.trained.items(), key=lambda kv: int(kv[0]))),
                "landed": self.landed,
                "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            }
        )

    def pending(self, landed: Mapping[int, int]) -> dict[str, int]:
        """Readings landed per device since its last training request (devices with any)."""
        out = {}
        for d, n in landed.items():
            t = self.trained.get(str(d), 0)
            new = n - t if n >= t else n  # a count that went back: the store was reset
            if new > 0:
                out[str(d)] = new
        return out

    def run_key(self) -> str:
        digest = hashlib.sha1(json.dumps(sorted(self.trained.items())).encode()).hexdigest()
        return f"local_model-{digest[:16]}"
