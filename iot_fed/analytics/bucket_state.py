"""A mote bucket's state in the streaming scorer: its motes' histories and incident states
as arrays, pickled as ONE value per bucket (layout ``buckets-v2`` of
:mod:`iot_fed.analytics.checkpoint`).

Per mote it keeps exactly what the scorer threads from one micro-batch to the next (its
:class:`~iot_fed.fl.device_history.DeviceHistory` and
:class:`~iot_fed.analytics.incidents.IncidentState`), as columns: no Python object per
reading is built or pickled (a pickled tuple per mote was a fifth of the bucket's Python
time, ``bench/bench_scorer.py --python-cost``)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from pyspark.sql import types as T

from iot_fed.analytics.incidents import Episode, IncidentState
from iot_fed.fl.device_history import NO_EPOCH, HistoryColumns

STATE_SCHEMA = T.StructType([T.StructField("state", T.BinaryType(), False)])
"""A bucket's state: one value, :func:`state_bytes` of its :class:`BucketState`."""


@dataclass(frozen=True)
class BucketState:
    """A bucket's motes (ascending), when each last had a reading (processing time: its
    own timeout), their histories and incident states."""

    motes: np.ndarray  # (d,) int64
    seen_ms: np.ndarray  # (d,) int64
    histories: HistoryColumns
    incidents: list[IncidentState]

    @classmethod
    def empty(cls) -> BucketState:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), HistoryColumns.empty(), [])

    def __len__(self) -> int:
        return int(self.motes.shape[0])

    def take(self, idx: np.ndarray) -> BucketState:
        """The motes at ``idx``."""
        idx = np.asarray(idx, np.int64)
        return BucketState(
            self.motes[idx],
            self.seen_ms[idx],
            self.histories.take(idx),
            [self.incidents[i] for i in idx.tolist()],
        )

    def find(self, motes: np.ndarray) -> np.ndarray:
        """Each of ``motes``' index here, -1 where it has no state."""
        pos = np.searchsorted(self.motes, motes)
        at = np.minimum(pos, max(len(self) - 1, 0))
        found = (pos < len(self)) & (self.motes[at] == motes) if len(self) else pos < 0
        return np.where(found, pos, -1)

    def updated(
        self,
        motes: np.ndarray,
        now_ms: int,
        histories: HistoryColumns,
        incidents: Sequence[IncidentState],
    ) -> BucketState:
        """This state with ``motes`` (ascending) given new states, seen at ``now_ms``."""
        rest = np.flatnonzero(~np.isin(self.motes, motes))
        all_motes = np.concatenate([self.motes[rest], motes])
        order = np.argsort(all_motes, kind="stable")
        kept = [self.incidents[i] for i in rest.tolist()] + list(incidents)
        return BucketState(
            all_motes[order],
            np.concatenate([self.seen_ms[rest], np.full(motes.shape[0], now_ms, np.int64)])[order],
            HistoryColumns.concat([self.histories.take(rest), histories]).take(order),
            [kept[i] for i in order.tolist()],
        )


def state_bytes(state: BucketState) -> bytes:
    """A bucket's state as one value (our own arrays, written and read only here)."""
    last = [NO_EPOCH if s.last_epoch is None else s.last_epoch for s in state.incidents]
    return pickle.dumps(
        {
            "motes": state.motes,
            "seen_ms": state.seen_ms,
            "histories": state.histories.to_arrays(),
            "incident_last": np.array(last, np.int64),
            "incident_open": {
                i: asdict(s.open) for i, s in enumerate(state.incidents) if s.open is not None
            },
        },
        protocol=5,
    )


def load_state(blob: bytes) -> BucketState:
    """:func:`state_bytes`' bucket state."""
    d = pickle.loads(blob)
    opens = d["incident_open"]
    incidents = [
        IncidentState(None if e == NO_EPOCH else e, Episode(**opens[i]) if i in opens else None)
        for i, e in enumerate(d["incident_last"].tolist())
    ]
    return BucketState(
        d["motes"], d["seen_ms"], HistoryColumns.from_arrays(d["histories"]), incidents
    )
