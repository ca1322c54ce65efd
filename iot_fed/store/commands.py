"""``iot-fed db init|status``: set up the MongoDB database and show collection counts."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TypeVar

from pymongo.database import Database

from iot_fed.config import get_settings
from iot_fed.store.client import StoreConnectionError, connect
from iot_fed.store.setup import database_status, init_database

T = TypeVar("T")


def _with_db(
    args: argparse.Namespace, command: str, fn: Callable[[Database], T]
) -> tuple[str, T] | None:
    """(database name, ``fn(db)``) on a fresh connection, closed after; None (and a message
    on stderr) when the server cannot be reached."""
    s = get_settings()
    try:
        db = connect(
            args.uri or s.mongodb_uri, args.database or s.mongodb_database, s.mongodb_timeout_s
        )
    except StoreConnectionError as exc:
        print(f"iot-fed db {command}: {exc}", file=sys.stderr)
        return None
    try:
        return db.name, fn(db)
    finally:
        db.client.close()


def _init(args: argparse.Namespace) -> int:
    got = _with_db(args, "init", init_database)
    if got is None:
        return 1
    _, report = got
    for name, info in report.items():
        state = "created" if info["created"] else "exists"
        print(
            f"{name:18s} {state:8s} validator: {info['validator']}; "
            f"indexes: {', '.join(info['indexes'])}"
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    got = _with_db(args, "status", database_status)
    if got is None:
        return 1
    name, status = got
    if args.json:
        print(json.dumps({"database": name, "collections": status}, indent=2))
        return 0
    print(f"database {name}")
    for name, info in status.items():
        if not info["exists"]:
            print(f"  {name:18s} missing (run `iot-fed db init`)")
        else:
            print(
                f"  {name:18s} {info['count']:>10d} documents  indexes: "
                f"{', '.join(info['indexes'])}"
            )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``db init`` and ``db status`` to the ``iot-fed`` command."""
    db = subparsers.add_parser("db", help="MongoDB database: init, status")
    sub = db.add_subparsers(dest="db_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--uri", help="MongoDB URI (default: IOT_FED_MONGODB_URI)")
    common.add_argument("--database", help="database (default: IOT_FED_MONGODB_DATABASE)")
    p = sub.add_parser(
        "init", parents=[common], help="create collections, validators and indexes (idempotent)"
    )
    p.set_defaults(func=_init)
    p = sub.add_parser("status", parents=[common], help="collection counts and indexes")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_status)
