"""The stream sensor's cursor (JSON): offsets and the landed total at the last tick (the
watermark of the next report), the rounds started so far and the open round. What each
device is trained through lives in MongoDB (:mod:`iot_fed.store.shards`), not here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class OpenRound:
    """A round whose shard runs were requested: ``closed`` once they all ended or its
    deadline passed, then it waits for its aggregation to be due."""

    id: str
    started: float
    closed: bool = False


@dataclass
class StreamCursor:
    landed: int = 0
    offsets: dict[int, int] = field(default_factory=dict)
    rounds: int = 0
    round: OpenRound | None = None

    @classmethod
    def parse(cls, raw: str | None) -> StreamCursor:
        if not raw:
            return cls()
        d = json.loads(raw)
        r = d.get("round")
        return cls(
            int(d.get("landed", 0)),
            {int(p): int(o) for p, o in d.get("offsets", {}).items()},
            int(d.get("rounds", 0)),
            OpenRound(str(r["id"]), float(r["started"]), bool(r["closed"])) if r else None,
        )

    def dump(self) -> str:
        r = self.round
        return json.dumps(
            {
                "landed": self.landed,
                "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
                "rounds": self.rounds,
                "round": {"id": r.id, "started": r.started, "closed": r.closed} if r else None,
            }
        )

    def next_round_id(self, ready: Iterable[tuple[int, int]]) -> str:
        """The id of the round that trains ``ready`` (device, trained-through count) pairs:
        a re-evaluated tick (same cursor, nothing trained meanwhile) gets the same id, so
        the same run keys; the round counter makes a retrained shard's key new."""
        digest = hashlib.sha1(json.dumps(sorted(ready)).encode()).hexdigest()
        return f"{self.rounds + 1}-{digest[:10]}"
