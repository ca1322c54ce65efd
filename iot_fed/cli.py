"""The ``iot-fed`` command. Each area registers its own subcommands (``commands.py``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from iot_fed.config import ConfigError

# Modules exposing ``register(subparsers) -> None``; each subcommand sets ``func(args) -> int``.
COMMAND_MODULES = (
    "iot_fed.services.commands",
    "iot_fed.store.commands",
    "iot_fed.stream.commands",
    "iot_fed.analytics.commands",
    "iot_fed.defs.commands",
    "iot_fed.reporting.commands",
    "iot_fed.runner.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iot-fed", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # py4j logs every JVM callback (each streaming micro-batch) at INFO
        logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"iot-fed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
