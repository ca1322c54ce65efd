"""``iot-fed devices``: device partitions in the Dagster instance ($DAGSTER_HOME)."""

from __future__ import annotations

import argparse


def _sync(args: argparse.Namespace) -> int:
    import dagster as dg

    from iot_fed.config import get_settings
    from iot_fed.defs.partitions import devices
    from iot_fed.store.client import connect
    from iot_fed.store.repository import reading_counts

    s = get_settings()
    motes = sorted(reading_counts(connect(s.mongodb_uri, s.mongodb_database)))
    with dg.DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions(devices.name))
        new = [str(m) for m in motes if str(m) not in known]
        if new:
            instance.add_dynamic_partitions(devices.name, new)
    print(f"devices: {len(motes)} motes with readings, {len(new)} partitions added")
    return 0


def _list(args: argparse.Namespace) -> int:
    import dagster as dg

    from iot_fed.defs.partitions import devices

    with dg.DagsterInstance.get() as instance:
        print("\n".join(instance.get_dynamic_partitions(devices.name)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("devices", help="device partitions of the Dagster instance")
    sub = p.add_subparsers(dest="devices_command", required=True)
    sub.add_parser(
        "sync", help="add a partition for every mote with readings in MongoDB"
    ).set_defaults(func=_sync)
    sub.add_parser("list", help="list device partitions").set_defaults(func=_list)
