"""A round's shard runs, read from the Dagster instance: which shards finished, failed or
are still running. The stream sensor closes a round on it; ``global_model`` records it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from iot_fed.defs.partitions import ROUND_TAG

PARTITION_TAG = "dagster/partition"
WILL_RETRY_TAG = "dagster/will_retry"
"""Dagster tags a failed run ``true`` when ``run_retries`` will re-execute it."""
FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


@dataclass(frozen=True)
class RoundShards:
    """The shards of one round by the state of their newest run (a retry replaces its
    parent: it carries the parent's tags; a failed run that will be retried is running)."""

    round_id: str
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return not self.running

    def record(self) -> dict[str, Any]:
        """What a global version records of its round (missing: still running)."""
        return {
            "round": self.round_id,
            "shards_included": self.succeeded,
            "shards_failed": self.failed,
            "shards_missing": self.running,
        }


def round_shards(instance: dg.DagsterInstance, round_id: str) -> RoundShards:
    """The round's shard runs (one query), newest run per shard."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={ROUND_TAG: round_id}))
    newest: dict[str, dg.DagsterRun] = {}
    for run in runs:  # newest first
        shard = run.tags.get(PARTITION_TAG)
        if shard is not None and shard not in newest:
            newest[shard] = run
    out = RoundShards(round_id)
    for shard, run in sorted(newest.items()):
        if run.status == dg.DagsterRunStatus.SUCCESS:
            out.succeeded.append(shard)
        elif run.status in FAILED and run.tags.get(WILL_RETRY_TAG) != "true":
            out.failed.append(shard)
        else:
            out.running.append(shard)
    return out
