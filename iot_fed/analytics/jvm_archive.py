"""A class-data-sharing (CDS) archive of the Spark JVM's classes, built once at setup.

Why: every Dagster run of a Spark asset (an evaluation report per promoted global version)
starts a new Spark JVM, which loads, parses and verifies thousands of Spark classes before
it does any work; under ``make run`` that competes with the live scorer for the same
cores. With the classes mapped from an archive, a report's JVM used 12 s of CPU instead
of 20 (``bench/bench_spark.py`` report part, variants ``c1-jit`` vs ``c1-cds``).

What: :func:`build_archive` runs a small batch job in a child process whose Spark JVM dumps
the classes it loaded when it exits (``-XX:ArchiveClassesAtExit``, JDK 13+) into a
temporary file, renamed into place once that JVM is gone; :func:`archive_option` names it
for every later Spark JVM (``-XX:SharedArchiveFile``). The file name is keyed by the java
binary and pyspark's jars (their folder too: the class path must match), so another JDK,
Spark or virtual environment never finds a stale archive (a JVM
that cannot map an archive starts without it anyway). ``iot-fed spark install`` builds it.

Run as ``python -m iot_fed.analytics.jvm_archive <file>`` it is that child.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from iot_fed.config import Settings

log = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 300
PID_MARK = "archive-jvm-pid"


def java_binary() -> Path | None:
    """The java Spark's launcher runs: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = Path(home) / "bin" / "java" if home else None
    if found is None or not found.exists():
        which = shutil.which("java")
        found = Path(which) if which else None
    return found.resolve() if found else None


def archive_key() -> str | None:
    """Identifies the JDK and Spark an archive belongs to (None: no java found)."""
    import pyspark

    java = java_binary()
    if java is None:
        return None
    st = java.stat()
    jars_dir = Path(pyspark.__file__).parent / "jars"  # the JVM's class path: its paths too
    jars = sorted(p.name for p in jars_dir.glob("*.jar"))
    material = json.dumps(
        [str(java), st.st_size, st.st_mtime_ns, pyspark.__version__, str(jars_dir), jars]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def archive_path(settings: Settings) -> Path | None:
    key = archive_key()
    return None if key is None else settings.data_dir / "spark" / "cds" / f"spark-{key}.jsa"


def archive_option(settings: Settings) -> str:
    """``-XX:SharedArchiveFile=...`` when this JDK + Spark's archive exists, else ``""``."""
    path = archive_path(settings)
    return f"-XX:SharedArchiveFile={path}" if path is not None and path.exists() else ""


def _exited(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def build_archive(settings: Settings) -> Path:
    """Build this JDK + Spark's archive (kept once built); return its path.

    Raises ``RuntimeError`` with the reason when the JVM wrote no archive."""
    path = archive_path(settings)
    if path is None:
        raise RuntimeError("no java found (JAVA_HOME or PATH): Spark cannot run either")
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    t0 = time.monotonic()
    env = {**os.environ, "IOT_FED_DATA_DIR": str(settings.data_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", __name__, str(tmp)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        env=env,
        check=False,
    )
    marks = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith(PID_MARK)]
    pid = int(marks[-1]) if marks else None
    if proc.returncode != 0 or pid is None:
        raise RuntimeError(f"archive job failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    if not _exited(pid, 120):  # the JVM writes the archive as it exits, after its driver
        raise RuntimeError(f"the archive job's JVM (pid {pid}) did not exit within 120 s")
    if not tmp.exists() or tmp.stat().st_size == 0:
        raise RuntimeError(f"the JVM wrote no archive to {tmp}: {proc.stderr[-2000:]}")
    os.replace(tmp, path)
    for old in path.parent.glob("spark-*.jsa"):  # another JDK's or Spark's: never used again
        if old != path:
            old.unlink(missing_ok=True)
    log.info(
        "CDS archive %s (%.0f MB) in %.1fs", path, path.stat().st_size / 1e6, time.monotonic() - t0
    )
    return path


def _archive_job(out: Path) -> None:
    """The classes a report loads: a Spark session, ``mapInPandas``, a grouped aggregate
    and an Arrow collect; then exit, so that the JVM writes ``out``."""
    import pandas as pd
    from pyspark import SparkContext
    from pyspark.sql import functions as F

    from iot_fed.analytics.session import build_session, driver_java_options, jvm_option
    from iot_fed.config import load_settings

    settings = load_settings()
    archive_at_exit = jvm_option(f"-XX:ArchiveClassesAtExit={out}")
    opts = f"{driver_java_options(settings, archive=False)} {archive_at_exit}"
    spark = build_session(  # the connector jars are not on the JVM's class path anyway
        settings,
        "iot_fed-cds-archive",
        with_jars=False,
        **{"spark.driver.extraJavaOptions": opts},
    )
    df = spark.createDataFrame(pd.DataFrame({"m": [1, 2, 3] * 100, "x": range(300)}))

    def double(batches):
        for b in batches:
            yield b.assign(x=b["x"] * 2.0)

    scored = df.mapInPandas(double, "m long, x double")
    scored.groupBy("m").agg(F.sum("x").alias("s"), F.count(F.lit(1)).alias("n")).toPandas()
    pid = SparkContext._gateway.proc.pid  # type: ignore[union-attr]
    spark.stop()
    print(PID_MARK, pid, flush=True)


if __name__ == "__main__":
    _archive_job(Path(sys.argv[1]))
