"""``iot-fed shards``: training shards in MongoDB and as partitions of the Dagster instance
($DAGSTER_HOME)."""

from __future__ import annotations

import argparse
from collections import Counter


def _sync(args: argparse.Namespace) -> int:
    import dagster as dg

    from iot_fed.config import get_settings
    from iot_fed.defs.partitions import shards
    from iot_fed.store.client import connect
    from iot_fed.store.shards import assign_shards, device_progress

    s = get_settings()
    db = connect(s.mongodb_uri, s.mongodb_database)
    progress = device_progress(db)
    added = assign_shards(db, progress, s.devices_per_shard)
    keys = {p.shard for p in progress.values() if p.shard} | set(added.values())
    with dg.DagsterInstance.get() as instance:
        new = sorted(keys - set(instance.get_dynamic_partitions(shards.name)))
        if new:
            instance.add_dynamic_partitions(shards.name, new)
    print(
        f"shards: {len(progress)} landed devices ({len(added)} newly assigned), "
        f"{len(keys)} shards, {len(new)} partitions added"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from iot_fed.config import get_settings
    from iot_fed.store.client import connect
    from iot_fed.store.shards import device_progress

    s = get_settings()
    progress = device_progress(connect(s.mongodb_uri, s.mongodb_database)).values()
    devices = Counter(p.shard for p in progress)
    pending = Counter(p.shard for p in progress if p.pending >= s.min_new_samples)
    for shard in sorted(devices, key=lambda k: (k is None, k or "")):
        print(f"{shard or '(unassigned)'}\t{devices[shard]} devices\t{pending[shard]} ready")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("shards", help="training shards (local_model partitions)")
    sub = p.add_subparsers(dest="shards_command", required=True)
    sub.add_parser(
        "sync", help="give every landed device a shard and add the shards as partitions"
    ).set_defaults(func=_sync)
    sub.add_parser("list", help="shards with their devices and ready devices").set_defaults(
        func=_list
    )
