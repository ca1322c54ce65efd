"""One shard's part of a round: train the shard's devices with untrained readings (or the
requested ones) in one vmapped call, then record them trained through the readings they
had landed when the run read them. A run that fails or is killed before its models are
stored records nothing, so the next round retrains those devices."""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.database import Database

from iot_fed.config import Settings
from iot_fed.federation.local_round import train_local_models
from iot_fed.federation.outcomes import DeviceOutcome
from iot_fed.store.shards import DeviceProgress, device_progress, mark_trained


class NotInShard(ValueError):
    """Requested devices that are not (landed) devices of the shard."""


def shard_devices(
    db: Database, shard: str, requested: Sequence[int] | None = None
) -> dict[int, DeviceProgress]:
    """What a shard run trains, with each device's landed and trained counts: the shard's
    devices with readings landed since their last model, or ``requested`` (each must be
    in the shard)."""
    progress = device_progress(db, shard)
    if requested is None:
        return {m: p for m, p in sorted(progress.items()) if p.pending > 0}
    stray = sorted(set(int(m) for m in requested) - set(progress))
    if stray:
        raise NotInShard(f"devices {stray[:10]} are not landed devices of {shard}")
    return {int(m): progress[int(m)] for m in sorted(set(requested))}


def train_shard(
    db: Database,
    shard: str,
    settings: Settings,
    requested: Sequence[int] | None = None,
    seed: int = 0,
) -> list[DeviceOutcome]:
    """Train ``shard`` (see :func:`shard_devices`); skipped devices (no usable readings
    yet) count as trained too: their readings wait for more context, not for a rerun."""
    progress = shard_devices(db, shard, requested)  # read before the readings are loaded
    if not progress:
        return []
    pending = {m: p.pending for m, p in progress.items()}
    outcomes = train_local_models(
        db, [str(m) for m in progress], settings, seed=seed, new_readings=pending
    )
    mark_trained(db, {m: p.readings for m, p in progress.items()})  # after the models are stored
    return outcomes
