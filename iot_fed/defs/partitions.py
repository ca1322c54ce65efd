"""Dynamic shard partitions of ``local_model``: one per training shard
(:mod:`iot_fed.store.shards`), added by the stream sensor as shards open."""

from __future__ import annotations

import dagster as dg

shards = dg.DynamicPartitionsDefinition(name="shards")

ROUND_TAG = "iot_fed/round"
"""The round a shard run or an aggregation run belongs to (the stream sensor sets it)."""
