"""A bucket's state: one value back to the same motes' states; an update rewrites only
the motes given and keeps the bucket's motes in order."""

from __future__ import annotations

import numpy as np

from iot_fed.analytics.bucket_state import BucketState, load_state, state_bytes
from iot_fed.analytics.incidents import IncidentState
from iot_fed.fl.device_history import DeviceHistory, HistoryColumns


def _history(epoch: int) -> DeviceHistory:
    return DeviceHistory((epoch,), (epoch * 10,), ((1.0, 2.0, 3.0, float(epoch)),), None, 0)


def test_a_bucket_state_round_trips_and_updates_only_the_motes_given() -> None:
    state = BucketState(
        np.array([2, 5], np.int64),
        np.array([100, 200], np.int64),
        HistoryColumns.of([_history(1), _history(2)]),
        [IncidentState(1), IncidentState(None)],
    )
    back = load_state(state_bytes(state))
    assert back.motes.tolist() == [2, 5] and back.seen_ms.tolist() == [100, 200]
    assert back.histories.histories() == [_history(1), _history(2)]
    assert back.incidents == state.incidents
    assert back.find(np.array([1, 5, 9])).tolist() == [-1, 1, -1]
    assert BucketState.empty().find(np.array([3])).tolist() == [-1]
    new = back.updated(
        np.array([1, 5], np.int64),
        300,
        HistoryColumns.of([_history(3), _history(4)]),
        [IncidentState(3), IncidentState(4)],
    )
    assert new.motes.tolist() == [1, 2, 5] and new.seen_ms.tolist() == [300, 100, 300]
    assert new.histories.histories() == [_history(3), _history(1), _history(4)]
    assert [s.last_epoch for s in new.incidents] == [3, 1, 4]
    assert new.take(np.array([1])).histories.histories() == [_history(1)]
