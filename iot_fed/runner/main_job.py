"""The main job of ``make run`` / ``iot-fed run``: prepare, then supervise the processes.

Prepare (once, in order): services up, the scorer's Spark connector jars, database init,
the Dagster instance home, the dataset assets materialized through Dagster (download, else
the calibrated generator; skipped when ``intel_lab_clean`` is already materialized in this
instance).

Supervised (restarted with backoff, logs under ``<data_dir>/logs``): see :func:`children`.
To supervise one more process, append one :class:`Child` line there.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from iot_fed.config import Settings
from iot_fed.runner.supervisor import Child, Supervisor

log = logging.getLogger(__name__)

DATASET_ASSETS = "intel_lab_raw,intel_lab_clean,mote_locations"


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def children(settings: Settings, rate: float, root: Path) -> list[Child]:
    """The supervised processes of the main job (one line each)."""
    iot_fed = _bin("iot-fed")
    return [
        Child("producer", [iot_fed, "stream", "--loop", "--rate", f"{rate:g}"]),
        # the ingestion consumer group: Kafka -> MongoDB (the stream sensor only triggers)
        *(
            Child(f"ingester-{i}", [iot_fed, "ingest", "--name", f"ingester-{i}"])
            for i in range(1, settings.ingesters + 1)
        ),
        Child(
            "dagster",
            [
                _bin("dagster"),
                "dev",
                "-h",
                "127.0.0.1",
                "-p",
                str(settings.dagster_port),
                "-w",
                str(root / "workspace.yaml"),
            ],
            stop_grace_s=30,
            stop_signal=signal.SIGINT,  # dagster dev stops its code servers on SIGINT
            niceness=settings.batch_niceness,  # its runs too: training, aggregation, batch Spark
        ),
        Child(
            "scorer",
            [iot_fed, "spark-stream", "--trigger-seconds", f"{settings.scorer_trigger_s:g}"],
            stop_grace_s=30,
        ),
        Child("api", [iot_fed, "serve", "--port", str(settings.api_port)]),
        # the services themselves: one killed or crashed is started again (data kept)
        Child("services", [iot_fed, "services", "watch"]),
    ]


def dagster_home(settings: Settings, root: Path) -> Path:
    """``$DAGSTER_HOME`` with its ``dagster.yaml``: on the project's PostgreSQL when it answers
    (else SQLite); the password variable the YAML refers to is exported to the children."""
    from iot_fed.services import dagster_instance

    home = Path(os.environ.get("DAGSTER_HOME") or root / "assets_data" / "dagster_home")
    config = dagster_instance.configure(home, settings)
    os.environ.update(config.env)
    os.environ["DAGSTER_HOME"] = str(home)
    log.info("Dagster instance in %s: %s", home, config.note)
    return home


def start_dashboards(settings: Settings) -> None:
    """Start Superset in the background (it takes minutes to load; the pipeline does not wait
    for it). It is an ``iot-fed services`` service: PID-tracked, stopped by ``services down``.
    If it cannot start, the reason and the fix are printed on this console."""
    if not settings.reporting:
        log.warning("dashboards off (IOT_FED_REPORTING=false): no reporting store, no Superset")
        return
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / "superset-start.log"
    with open(path, "ab") as out:
        proc = subprocess.Popen(
            [_bin("iot-fed"), "services", "up", "--only", "superset"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    threading.Thread(target=_report_dashboards, args=(proc, path), daemon=True).start()


def _report_dashboards(proc: subprocess.Popen, path: Path) -> None:
    if proc.wait() == 0:
        log.info("dashboards up (Superset)")
        return
    lines = path.read_text(errors="replace").strip().splitlines() or ["?"]
    print(f"run: ERROR: the dashboards did not start: {lines[-1]} (log {path})", flush=True)


def dataset_materialized() -> bool:
    """True when this Dagster instance has a materialization of ``intel_lab_clean``."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        return instance.get_latest_materialization_event(dg.AssetKey("intel_lab_clean")) is not None


def prepare(settings: Settings, root: Path) -> None:
    """Services, database, Dagster home and the dataset assets (idempotent)."""
    from iot_fed.services import manager

    iot_fed = _bin("iot-fed")
    core = [name for name in manager.SERVICE_NAMES if name != "superset"]
    for status in manager.up(settings, core):
        print(status.line(), flush=True)
    from iot_fed.analytics.jars import SparkJarsError, install_spark_jars
    from iot_fed.services.process import ServiceError

    try:  # cached after the first time; a fresh IOT_FED_DATA_DIR has none yet
        install_spark_jars(settings)
    except SparkJarsError as exc:
        raise ServiceError(f"the streaming scorer's Spark jars: {exc}") from None
    subprocess.run([iot_fed, "db", "init"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([iot_fed, "kafka", "create-topics"], check=True, stdout=subprocess.DEVNULL)
    home = dagster_home(settings, root)
    start_dashboards(settings)
    from iot_fed.stream.producer import default_data_path

    if dataset_materialized() and default_data_path(settings).exists():
        log.info("dataset assets already materialized in %s", home)
        return
    log.info("materializing the dataset assets (%s) in %s", DATASET_ASSETS, home)
    subprocess.run(
        [
            _bin("dagster"),
            "asset",
            "materialize",
            "-m",
            "iot_fed.definitions",
            "--select",
            DATASET_ASSETS,
        ],
        check=True,
        cwd=root,
    )


def run_main_job(settings: Settings, rate: float, root: Path) -> int:
    prepare(settings, root)
    sup = Supervisor(children(settings, rate, root), settings.data_dir / "logs")
    print(
        f"run: producer at {rate:g} rec/s, Dagster UI http://127.0.0.1:{settings.dagster_port}, "
        f"model API http://127.0.0.1:{settings.api_port}/docs, dashboards "
        f"http://127.0.0.1:{settings.superset_port}/dashboard/list/ (Superset, starting: "
        "admin in assets_data/services/superset/admin.json); logs in "
        f"{settings.data_dir / 'logs'}; Ctrl-C stops all",
        flush=True,
    )
    sup.run()
    print("run: stopped (services stay up: `iot-fed services down`)", flush=True)
    return 0
