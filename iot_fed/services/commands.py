"""``iot-fed services install|up|down|status [--only kafka|mongodb]``."""

from __future__ import annotations

import argparse
import sys

from iot_fed.config import get_settings
from iot_fed.services import manager
from iot_fed.services.process import ServiceError


def _only(args: argparse.Namespace) -> list[str] | None:
    return [args.only] if args.only else None


def _print(statuses: list[manager.ServiceStatus]) -> None:
    for st in statuses:
        print(st.line())


def _cmd_install(args: argparse.Namespace) -> int:
    settings = get_settings()
    for name, secs in manager.install(settings, _only(args)).items():
        print(f"{name:<8} installed under {settings.state_dir / 'artifacts'} ({secs:.0f}s)")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    _print(manager.up(get_settings(), _only(args), timeout=args.timeout))
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    _print(manager.down(get_settings(), _only(args)))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    settings = get_settings()
    statuses = manager.status(settings, _only(args))
    _print(statuses)
    return 0 if all(st.healthy for st in statuses if st.state != "disabled") else 1


def _cmd_watch(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    manager.watch(get_settings(), args.interval, _only(args))
    return 0


def _cmd_purge(args: argparse.Namespace) -> int:
    for path in manager.purge(get_settings(), _only(args)):
        print(f"removed {path}")
    return 0


def _guard(func):
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ServiceError as exc:
            print(f"iot-fed services: {exc}", file=sys.stderr)
            return 1

    return run


def _cmd_dagster_instance(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from iot_fed.services import dagster_instance as di

    home = Path(args.home or os.environ.get("DAGSTER_HOME") or "assets_data/dagster_home")
    config = di.configure(home.resolve(), get_settings(), args.storage, args.database)
    print(f"dagster instance: {home.resolve() / 'dagster.yaml'} ({config.note})", file=sys.stderr)
    sys.stdout.write(config.exports())  # for `eval "$(iot-fed dagster-instance)"`
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``services`` command group (and ``dagster-instance``) to ``iot-fed``."""
    di = subparsers.add_parser(
        "dagster-instance",
        help="write $DAGSTER_HOME/dagster.yaml: PostgreSQL storage when it answers, else "
        "SQLite; prints the export lines it needs (eval them)",
    )
    di.add_argument("--home", help="Dagster home (default $DAGSTER_HOME)")
    di.add_argument("--storage", choices=("auto", "postgres", "sqlite"), default="auto")
    di.add_argument("--database", default="dagster", help="PostgreSQL database")
    di.set_defaults(func=_guard(_cmd_dagster_instance))
    p = subparsers.add_parser(
        "services", help="local Kafka broker, MongoDB-compatible server and PostgreSQL"
    )
    sub = p.add_subparsers(dest="services_command", required=True)
    specs = [
        ("install", _cmd_install, "fetch/build the artifacts only (cached)"),
        ("up", _cmd_up, "start local services not yet running and wait until they answer"),
        ("down", _cmd_down, "stop the services iot-fed started (data is kept)"),
        ("status", _cmd_status, "endpoints and health; exit 1 if one that is on is unhealthy"),
        ("purge", _cmd_purge, "stop the services and delete their data (cannot be undone)"),
        ("watch", _cmd_watch, "start again, until stopped, the services iot-fed started that died"),
    ]
    for name, func, help_ in specs:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--only", choices=manager.SERVICE_NAMES, help="just this service")
        if name == "watch":
            sp.add_argument("--interval", type=float, default=5.0, help="seconds between checks")
        if name == "up":
            sp.add_argument(
                "--timeout",
                type=float,
                default=manager.DEFAULT_START_TIMEOUT_S,
                help="seconds to wait for each service to answer",
            )
        sp.set_defaults(func=_guard(func))
