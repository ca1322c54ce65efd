"""``iot-fed reporting refresh [--rebuild]``: bring the PostgreSQL reporting store up to date."""

from __future__ import annotations

import argparse
import json
import sys

import psycopg

from iot_fed.config import get_settings
from iot_fed.redact import redact
from iot_fed.store.client import StoreConnectionError, connect


def _refresh(args: argparse.Namespace) -> int:
    from iot_fed.reporting.refresh import (
        ReportingError,
        load_positions,
        refresh_until_caught_up,
        reset,
    )

    s = get_settings()
    try:
        db = connect(s.mongodb_uri, s.mongodb_database, s.mongodb_timeout_s)
    except StoreConnectionError as exc:
        print(f"iot-fed reporting: {exc}", file=sys.stderr)
        return 1
    try:
        with psycopg.connect(s.postgres_uri, connect_timeout=5) as conn:
            if args.rebuild:
                reset(conn)
            results = refresh_until_caught_up(db, conn, positions=lambda: load_positions(s))
    except (psycopg.OperationalError, ReportingError) as exc:
        print(
            f"iot-fed reporting: PostgreSQL at IOT_FED_POSTGRES_URI={redact(s.postgres_uri)}: "
            f"{str(exc).strip().splitlines()[0]}",
            file=sys.stderr,
        )
        return 1
    finally:
        db.client.close()
    print(json.dumps([r.metadata() for r in results][-1] | {"rounds": len(results)}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``reporting`` command group to the ``iot-fed`` parser."""
    p = subparsers.add_parser("reporting", help="PostgreSQL reporting store (dashboards)")
    sub = p.add_subparsers(dest="reporting_command", required=True)
    r = sub.add_parser("refresh", help="copy what is new in MongoDB (until caught up)")
    r.add_argument("--rebuild", action="store_true", help="empty the tables first")
    r.set_defaults(func=_refresh)
