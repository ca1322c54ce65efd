"""``iot-fed run`` (the main job) and ``iot-fed serve`` (the model API alone)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iot_fed.config import get_settings


def _cmd_run(args: argparse.Namespace) -> int:
    from iot_fed.runner.main_job import run_main_job
    from iot_fed.services.process import ServiceError

    settings = get_settings()
    root = Path(__file__).resolve().parents[2]
    try:
        return run_main_job(settings, args.rate or settings.producer_rate, root)
    except ServiceError as exc:
        print(f"iot-fed run: cannot start: {exc}", file=sys.stderr)
        return 1


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from iot_fed.heap import freeze_heap
    from iot_fed.serving.app import create_app

    settings = get_settings()
    app = create_app(settings)
    freeze_heap()  # no full collection over FastAPI's and numpy's objects mid-request
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port or settings.api_port,
        log_level="warning",
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="the main job: services, dataset, supervised processes")
    p.add_argument("--rate", type=float, help="producer records/s (default IOT_FED_PRODUCER_RATE)")
    p.set_defaults(func=_cmd_run)
    s = subparsers.add_parser("serve", help="the global model API (FastAPI on 127.0.0.1)")
    s.add_argument("--port", type=int, help="default IOT_FED_API_PORT (8000)")
    s.set_defaults(func=_cmd_serve)
