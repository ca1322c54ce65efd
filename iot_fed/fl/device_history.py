"""A device's scoring context between calls: the readings its window needs next and the
newest reading scored (JSON for the scorer's state and the API's clients)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from iot_fed.fl.spans import offsets, spans


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


@dataclass(frozen=True)
class HistoryColumns:
    """Several devices' :class:`DeviceHistory` as arrays, with no Python object per reading
    (the streaming scorer's state): device ``i``'s context is ``lens[i]`` rows from
    ``offsets(lens)[i]``."""

    lens: np.ndarray  # (d,) int64
    epochs: np.ndarray  # (r,) int64
    ts_ms: np.ndarray  # (r,) int64
    values: np.ndarray  # (r, 4) float64
    last_seen: np.ndarray  # (d, 2) int64: (epoch, ts_ms) where ``seen``
    seen: np.ndarray  # (d,) bool: ``last_seen`` is set
    excluded_run: np.ndarray  # (d,) int64

    def __len__(self) -> int:
        return int(self.lens.shape[0])

    @classmethod
    def of(cls, histories: Sequence[DeviceHistory]) -> HistoryColumns:
        lens = np.array([len(h.ts_ms) for h in histories], np.int64)
        r = int(lens.sum())
        return cls(
            lens,
            np.fromiter(chain.from_iterable(h.epochs for h in histories), np.int64, r),
            np.fromiter(chain.from_iterable(h.ts_ms for h in histories), np.int64, r),
            np.array(list(chain.from_iterable(h.values for h in histories)), np.float64).reshape(
                r, 4
            ),
            np.array([h.last_seen or (0, 0) for h in histories], np.int64).reshape(-1, 2),
            np.array([h.last_seen is not None for h in histories], bool),
            np.array([h.excluded_run for h in histories], np.int64),
        )

    @classmethod
    def empty(cls, devices: int = 0) -> HistoryColumns:
        return cls.of([DeviceHistory.empty()] * devices)

    def histories(self) -> list[DeviceHistory]:
        """Each device's :class:`DeviceHistory`."""
        bounds = np.concatenate([[0], np.cumsum(self.lens)]).tolist()
        eps, tss = self.epochs.tolist(), self.ts_ms.tolist()
        vals = list(map(tuple, self.values.tolist()))
        seen, runs = self.last_seen.tolist(), self.excluded_run.tolist()
        return [
            DeviceHistory(
                tuple(eps[a:b]),
                tuple(tss[a:b]),
                tuple(vals[a:b]),
                (s[0], s[1]) if has else None,
                run,
            )
            for a, b, s, has, run in zip(
                bounds[:-1], bounds[1:], seen, self.seen.tolist(), runs, strict=True
            )
        ]

    def take(self, idx: np.ndarray) -> HistoryColumns:
        """The devices at ``idx`` (``-1``: an empty history)."""
        idx = np.asarray(idx, np.int64)
        have = idx >= 0
        at = np.where(have, idx, 0)
        lens = np.where(have, self.lens[at] if len(self) else 0, 0)
        rows = spans(offsets(self.lens)[at] if len(self) else np.zeros(idx.size, np.int64), lens)
        seen = np.zeros(idx.size, bool)
        last = np.zeros((idx.size, 2), np.int64)
        runs = np.zeros(idx.size, np.int64)
        if len(self):
            seen, last, runs = (
                self.seen[at] & have,
                self.last_seen[at],
                self.excluded_run[at] * have,
            )
        return HistoryColumns(
            lens, self.epochs[rows], self.ts_ms[rows], self.values[rows], last, seen, runs
        )

    @classmethod
    def concat(cls, parts: Sequence[HistoryColumns]) -> HistoryColumns:
        return cls(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in _COLUMNS),
        )

    def last_epochs(self) -> np.ndarray:
        """(d,) each device's :attr:`DeviceHistory.last_epoch`; ``NO_EPOCH`` when none."""
        ends = offsets(self.lens) + self.lens - 1
        ctx = np.where(
            self.lens > 0, self.epochs[np.maximum(ends, 0)] if self.epochs.size else 0, NO_EPOCH
        )
        return np.where(self.seen, self.last_seen[:, 0], ctx)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in _COLUMNS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> HistoryColumns:
        return cls(*(arrays[f] for f in _COLUMNS))


NO_EPOCH = np.iinfo(np.int64).min
"""A device's last epoch when it has none (older than every epoch)."""
_COLUMNS = ("lens", "epochs", "ts_ms", "values", "last_seen", "seen", "excluded_run")
