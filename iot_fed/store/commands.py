"""``iot-fed db init|status``: set up the MongoDB database and show collection counts."""

from __future__ import annotations

import argparse
import json
import sys

from iot_fed.config import get_settings
from iot_fed.store.client import StoreConnectionError, connect
from iot_fed.store.setup import database_status, init_database


def _db(args: argparse.Namespace):
    s = get_settings()
    return connect(
        args.uri or s.mongodb_uri, args.database or s.mongodb_database, s.mongodb_timeout_s
    )


def _init(args: argparse.Namespace) -> int:
    try:
        db = _db(args)
    except StoreConnectionError as exc:
        print(f"iot-fed db init: {exc}", file=sys.stderr)
        return 1
    try:
        report = init_database(db)
    finally:
        db.client.close()
    for name, info in report.items():
        state = "created" if info["created"] else "exists"
        print(f"{name:16s} {state:8s} validator: {info['validator']}; "
              f"indexes: {', '.join(info['indexes'])}")
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        db = _db(args)
    except StoreConnectionError as exc:
        print(f"iot-fed db status: {exc}", file=sys.stderr)
        return 1
    try:
        status = database_status(db)
    finally:
        db.client.close()
    if args.json:
        print(json.dumps({"database": db.name, "collections": status}, indent=2))
        return 0
    print(f"database {db.name}")
    for name, info in status.items():
        if not info["exists"]:
            print(f"  {name:16s} missing (run `iot-fed db init`)")
        else:
            print(f"  {name:16s} {info['count']:>10d} documents  indexes: "
                  f"{', '.join(info['indexes'])}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``db init`` and ``db status`` to the ``iot-fed`` command."""
    db = subparsers.add_parser("db", help="MongoDB database: init, status")
    sub = db.add_subparsers(dest="db_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--uri", help="MongoDB URI (default: IOT_FED_MONGODB_URI)")
    common.add_argument("--database", help="database (default: IOT_FED_MONGODB_DATABASE)")
    p = sub.add_parser("init", parents=[common],
                       help="create collections, validators and indexes (idempotent)")
    p.set_defaults(func=_init)
    p = sub.add_parser("status", parents=[common], help="collection counts and indexes")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_status)
