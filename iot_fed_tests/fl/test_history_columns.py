"""Several devices' histories as columns: the same histories back, by device."""

from __future__ import annotations

import numpy as np

from iot_fed.fl.device_history import NO_EPOCH, DeviceHistory, HistoryColumns

ROWS = ((1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0))
HISTORIES = [
    DeviceHistory.empty(),
    DeviceHistory((1, 2), (10, 20), ROWS, (3, 30), 1),
    DeviceHistory((), (), (), (7, 70), 0),  # a reading seen, none in the context
    DeviceHistory((4,), (40,), ROWS[:1]),
]


def test_histories_round_trip_and_are_taken_by_device() -> None:
    cols = HistoryColumns.of(HISTORIES)
    assert cols.histories() == HISTORIES
    assert cols.last_epochs().tolist() == [NO_EPOCH, 3, 7, 4]
    taken = cols.take(np.array([2, -1, 1]))
    assert taken.histories() == [HISTORIES[2], DeviceHistory.empty(), HISTORIES[1]]
    both = HistoryColumns.concat([cols, cols.take(np.array([1]))])
    assert both.histories() == [*HISTORIES, HISTORIES[1]]
    assert HistoryColumns.empty(2).take(np.array([-1])).histories() == [DeviceHistory.empty()]
