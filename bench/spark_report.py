"""The ``report`` part of ``bench_spark.py``: one ``evaluation_report`` as Dagster runs it,
in a fresh process and JVM.

Every promoted version gets a report (``evaluation_report_sensor``), and each run starts
its own Spark JVM, so under ``make run`` the report's fixed cost (JVM start-up, class
loading, JIT compilation, query planning, Python workers) competes with the live scorer
for the same 2 cores. This seeds a database with ``readings`` readings of 54 motes, a
promoted global model and a local model per mote, then makes the report in a child
process per run (this module run as a script with ``--child``), round-robin over the
variants ``repeat`` times (:data:`VARIANTS`: the JVM's default JIT, C1 only, C1 only with
the class-data-sharing archive that ``iot-fed spark install`` builds: the product's
default). Reported: wall time (process start to report stored) and the CPU seconds of
the child's process tree (driver, JVM, Python workers), sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import C1, descendants, print_table, process_role, processes

VARIANTS: dict[str, tuple[str, bool]] = {  # name -> (spark_java_options, map the archive)
    "c2-jit": ("", False),  # the JVM's default tiered JIT (C1, then C2 for hot code)
    "c1-jit": (C1, False),  # C1 only
    "c1-cds": (C1, True),  # C1 only + the class archive: the product's default
}


def seed(database: str, n: int) -> None:
    """``n`` synthetic readings, a promoted global model, a local model per mote."""
    from bench_spark import make_model, synthetic

    from iot_fed.config import load_settings
    from iot_fed.fl.spec import ModelSpec
    from iot_fed.store import (
        connect,
        init_database,
        readings_to_docs,
        save_global_model,
        save_local_model,
        upsert_readings,
    )

    s = load_settings()
    db = connect(s.mongodb_uri, database)
    init_database(db)
    df = synthetic(n)
    upsert_readings(db, readings_to_docs(df))
    bundle = make_model(df, ModelSpec())
    blob = bundle.to_bytes()
    save_global_model(db, blob, threshold=bundle.threshold, promoted=True)
    for mote in sorted(df["moteid"].unique()):
        save_local_model(db, str(mote), blob, threshold=bundle.threshold, n_samples=10)
    db.client.close()


def child(database: str, variant: str, out_dir: str) -> None:
    """One report, as the ``evaluation_report`` asset makes it; prints its timings."""
    t0 = time.monotonic()
    from iot_fed.analytics.evaluation import evaluation_report
    from iot_fed.analytics.session import build_session, driver_java_options
    from iot_fed.config import load_settings

    java_options, archive = VARIANTS[variant]
    s = load_settings().model_copy(
        update={"mongodb_database": database, "spark_java_options": java_options}
    )
    t_import = time.monotonic()
    opts = driver_java_options(s, archive=archive)
    spark = build_session(s, "bench_report", **{"spark.driver.extraJavaOptions": opts})
    t_session = time.monotonic()
    rep = evaluation_report(spark, s, out_dir=Path(out_dir))
    t_report = time.monotonic()
    spark.stop()
    print(
        json.dumps(
            {
                "import_s": t_import - t0,
                "session_s": t_session - t_import,
                "report_s": t_report - t_session,
                "n_readings": rep.summary["n_readings"],
            }
        ),
        flush=True,
    )


def one(database: str, variant: str, out_dir: Path) -> dict:
    """A report in a child process; CPU of its process tree, sampled every 0.2 s (the JVM
    is not waited for by the child, so its rusage would not count it)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", database, f"--variants={variant}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "IOT_FED_BENCH_OUT": str(out_dir)},
    )
    seen: dict[tuple[int, int], tuple[str, int]] = {}  # (pid, start) -> (role, CPU ticks)
    while proc.poll() is None:
        procs = processes()
        for pid in descendants(procs, proc.pid):
            _, start, ticks = procs[pid]
            seen[(pid, start)] = (process_role(pid, proc.pid), ticks)  # a script may exec java
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"report child failed:\n{stderr[-3000:]}")
    timings = json.loads(stdout.strip().splitlines()[-1])
    hz = os.sysconf("SC_CLK_TCK")
    by_role: dict[str, float] = {}
    for role, ticks in seen.values():
        by_role[role] = by_role.get(role, 0.0) + ticks / hz
    cpu = sum(by_role.values())
    return {"variant": variant, "wall_s": wall, "cpu_s": cpu, "cpu_s_by": by_role, **timings}


def report(readings: int, repeat: int, names: list[str]) -> dict:
    """The report in a fresh child process per run, round-robin over ``names``."""
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown report variants {unknown}; known: {', '.join(VARIANTS)}")
    from iot_fed.config import load_settings
    from iot_fed.store import connect

    database = f"bench_report_{uuid.uuid4().hex[:8]}"
    out_dir = load_settings().data_dir / "bench" / database
    if any(VARIANTS[n][1] for n in names):
        from iot_fed.analytics.jvm_archive import build_archive

        build_archive(load_settings())  # what `iot-fed spark install` builds
    seed(database, readings)
    rows = []
    try:
        for rnd in range(repeat):
            for name in names if rnd % 2 == 0 else names[::-1]:
                rows.append({"round": rnd, **one(database, name, out_dir)})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        s = load_settings()
        connect(s.mongodb_uri, database).client.drop_database(database)
        shutil.rmtree(out_dir, ignore_errors=True)  # the reports' Parquet and plots
    summary = []
    for name in names:
        rs = [r for r in rows if r["variant"] == name]
        summary.append(
            {
                "variant": name,
                "java_options": VARIANTS[name][0],
                "class_archive": VARIANTS[name][1],
                "runs": len(rs),
                **{
                    k: statistics.median(r[k] for r in rs)
                    for k in ("wall_s", "cpu_s", "import_s", "session_s", "report_s")
                },
                "cpu_s_by": {
                    role: statistics.median(r["cpu_s_by"].get(role, 0.0) for r in rs)
                    for role in ("driver", "jvm", "python-workers", "other")
                },
            }
        )
    print_table(
        f"evaluation_report, {readings} readings, 54 motes, median of {repeat}",
        [
            "variant",
            "JVM",
            "wall s",
            "CPU s",
            "driver / JVM / Python workers CPU s",
            "import / session / report s",
        ],
        [
            [
                r["variant"],
                (r["java_options"] or "(default)") + (" + archive" if r["class_archive"] else ""),
                r["wall_s"],
                r["cpu_s"],
                " / ".join(f"{r['cpu_s_by'][k]:.1f}" for k in ("driver", "jvm", "python-workers")),
                " / ".join(f"{r[k]:.1f}" for k in ("import_s", "session_s", "report_s")),
            ]
            for r in summary
        ],
    )
    base = summary[0]
    for r in summary[1:]:
        print(
            f"{r['variant']} / {base['variant']}: wall {r['wall_s'] / base['wall_s']:.2f}x, "
            f"CPU {r['cpu_s'] / base['cpu_s']:.2f}x"
        )
    return {"readings": readings, "summary": summary, "runs": rows}


if __name__ == "__main__":  # the child: one report (see :func:`one`)
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", required=True)
    ap.add_argument("--variants", required=True)
    a = ap.parse_args()
    child(a.child, a.variants, os.environ["IOT_FED_BENCH_OUT"])
