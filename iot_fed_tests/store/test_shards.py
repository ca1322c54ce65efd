"""Training shards in the store: append-only assignment and trained-through counts."""

from __future__ import annotations

import datetime as dt

import pytest

from iot_fed.store.ingest_progress import record_landed
from iot_fed.store.shards import (
    assign_shards,
    device_progress,
    mark_trained,
    plan_shards,
    shard_key,
)


def land(db, counts: dict[int, int]) -> None:
    now = dt.datetime.now(dt.UTC)
    record_landed(db, "t", {0: 1}, counts, dict.fromkeys(counts, now))


def test_new_devices_fill_the_newest_shard_then_open_the_next() -> None:
    assigned = {1: shard_key(0), 2: shard_key(0)}
    plan = plan_shards(assigned, [5, 3, 4], per_shard=3)
    assert plan == {3: "shard-0000", 4: "shard-0001", 5: "shard-0001"}
    with pytest.raises(ValueError):
        plan_shards({}, [1], per_shard=0)


def test_assignment_is_fixed_when_a_device_first_lands(mongo_db) -> None:
    land(mongo_db, {1: 5, 2: 5, 3: 5})
    assert assign_shards(mongo_db, device_progress(mongo_db), 2) == {
        1: "shard-0000",
        2: "shard-0000",
        3: "shard-0001",
    }
    land(mongo_db, {1: 5, 4: 5})
    # a smaller shard size later never moves a device; the new one fills the newest shard
    assert assign_shards(mongo_db, device_progress(mongo_db), 1) == {4: "shard-0002"}
    assert assign_shards(mongo_db, device_progress(mongo_db), 1) == {}, "nothing new"
    shards = {m: p.shard for m, p in device_progress(mongo_db).items()}
    assert shards == {1: "shard-0000", 2: "shard-0000", 3: "shard-0001", 4: "shard-0002"}
    assert sorted(device_progress(mongo_db, "shard-0000")) == [1, 2]


def test_pending_is_what_landed_since_the_last_stored_model(mongo_db) -> None:
    land(mongo_db, {1: 30, 2: 10})
    mark_trained(mongo_db, {1: 30})
    land(mongo_db, {1: 5})
    pending = {m: p.pending for m, p in device_progress(mongo_db).items()}
    assert pending == {1: 5, 2: 10}
