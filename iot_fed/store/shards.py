"""Training shards: each device's shard, fixed when the device first lands, and how far
each device is trained, kept next to its landed count in ``ingest_devices``.

A shard is a few hundred to ``devices_per_shard`` devices trained by one run. Assignment
is append-only (a device never moves): new devices fill the newest shard, then open the
next. ``trained`` is the device's landed count when its shard run stored its models, so
``readings - trained`` is what it has not been trained on; a run that fails or is killed
never advances it, and the next round retrains the device.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pymongo import UpdateOne
from pymongo.database import Database

from iot_fed.store.collections import INGEST_DEVICES
from iot_fed.store.durability import durable

SHARD_PREFIX = "shard-"


def shard_key(index: int) -> str:
    """The partition key of shard ``index`` (zero-padded: Dagster lists keys as added)."""
    return f"{SHARD_PREFIX}{index:04d}"


def shard_index(key: str) -> int:
    if not key.startswith(SHARD_PREFIX):
        raise ValueError(f"not a shard key: {key!r}")
    return int(key.removeprefix(SHARD_PREFIX))


@dataclass(frozen=True)
class DeviceProgress:
    """One device's landed and trained readings and its shard (None: not assigned yet)."""

    moteid: int
    readings: int
    trained: int
    shard: str | None

    @property
    def pending(self) -> int:
        """Readings landed since its last stored model (all of them after a store reset)."""
        return self.readings - self.trained if self.readings >= self.trained else self.readings


def device_progress(db: Database, shard: str | None = None) -> dict[int, DeviceProgress]:
    """Every landed device (or ``shard``'s): one query."""
    query = {} if shard is None else {"shard": shard}
    docs = db[INGEST_DEVICES].find(query, {"readings": 1, "trained": 1, "shard": 1})
    return {
        int(d["_id"]): DeviceProgress(
            int(d["_id"]), int(d["readings"]), int(d.get("trained", 0)), d.get("shard")
        )
        for d in docs
    }


def plan_shards(assigned: Mapping[int, str], new: Iterable[int], per_shard: int) -> dict[int, str]:
    """Shards for ``new`` devices (in mote id order): fill the newest shard up to
    ``per_shard`` devices, then open the next. Pure: :func:`assign_shards` stores it."""
    if per_shard < 1:
        raise ValueError(f"devices_per_shard must be >= 1, got {per_shard}")
    fill = Counter(assigned.values())
    index = max((shard_index(k) for k in fill), default=0)
    out: dict[int, str] = {}
    for m in sorted(new):
        if fill[shard_key(index)] >= per_shard:
            index += 1
        key = shard_key(index)
        out[m] = key
        fill[key] += 1
    return out


def assign_shards(
    db: Database, progress: Mapping[int, DeviceProgress], per_shard: int
) -> dict[int, str]:
    """Give every device of ``progress`` without a shard one (one bulk write; a device
    that got one meanwhile keeps it). Returns the new assignments."""
    assigned = {m: p.shard for m, p in progress.items() if p.shard is not None}
    plan = plan_shards(assigned, [m for m, p in progress.items() if p.shard is None], per_shard)
    if plan:
        ops = [
            UpdateOne({"_id": m, "shard": None}, {"$set": {"shard": key}})
            for m, key in sorted(plan.items())
        ]
        durable(db, INGEST_DEVICES).bulk_write(ops, ordered=False)
    return plan


def mark_trained(db: Database, landed: Mapping[int, int]) -> None:
    """Devices trained through ``landed`` readings (their count when the run read it):
    one bulk write (``$set``, not ``$max``: after a store reset the count starts over)."""
    ops = [UpdateOne({"_id": int(m)}, {"$set": {"trained": int(n)}}) for m, n in landed.items()]
    if ops:
        durable(db, INGEST_DEVICES).bulk_write(ops, ordered=False)
