"""Dynamic device partitions: one per mote id, added by the Kafka sensor as motes appear."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

devices = dg.DynamicPartitionsDefinition(name="devices")

# Dagster's tags for a run over a partition range (what a single-run backfill sets).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def range_tags(ordered_keys: Sequence[str], wanted: Sequence[str]) -> dict[str, str]:
    """Tags for ONE run covering every key in ``wanted`` (the smallest enclosing range of
    ``ordered_keys``, the partitions in the order Dagster keeps them)."""
    pos = {k: i for i, k in enumerate(ordered_keys)}
    idx = sorted(pos[k] for k in wanted)
    return {RANGE_START_TAG: ordered_keys[idx[0]], RANGE_END_TAG: ordered_keys[idx[-1]]}
