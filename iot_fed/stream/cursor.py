"""The Kafka sensor's cursor: offsets + readings per device not yet trained on (JSON)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass
class StreamCursor:
    """Kafka offsets (``{partition: next offset}``) + new readings per device not yet trained."""

    offsets: dict[int, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> StreamCursor:
        if not raw:
            return cls()
        d = json.loads(raw)
        return cls(
            {int(p): int(o) for p, o in d.get("offsets", {}).items()},
            {str(k): int(v) for k, v in d.get("pending", {}).items()},
        )

    def dump(self) -> str:
        return json.dumps(
            {
                "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
                "pending": dict(sorted(self.pending.items(), key=lambda kv: int(kv[0]))),
            }
        )

    def run_key(self) -> str:
        digest = hashlib.sha1(json.dumps(sorted(self.offsets.items())).encode()).hexdigest()
        return f"local_model-{digest[:16]}"
