"""Spark's Python worker daemon with a trimmed import path (``spark.python.daemon.module``).

Why: every Python task calls ``importlib.invalidate_caches()``
(``pyspark.worker_util.setup_spark_files``), and on Python 3.10 / 3.11 that makes every
``zipimporter`` re-read its archive's central directory in pure Python (CPython gh-103200,
made lazy only in 3.12). Spark puts ``pyspark/python/lib/pyspark.zip``, the py4j zip and
spark-core's jar on the workers' ``PYTHONPATH``, so a worker imports pyspark from the zip
and holds one zipimporter per pyspark sub-package (1,220 entries each) plus two for the jar
(5,264 entries). Measured on the 2-core machine: ``invalidate_caches()`` took 0.6 s per
task, and the scorer's stateful step runs two Python tasks per micro-batch (new data, then
the timeout pass, even when nothing times out).

What: before starting :mod:`pyspark.daemon` (whose forked, reused workers inherit the
path), drop the jar entries (they hold no Python modules) and, when the same pyspark
install and py4j are importable without them, the zips of that install; then forget the
import finders already cached for the dropped entries. Anything else (a cluster's
``SPARK_HOME`` whose zips are the only pyspark) is left as it is.

Second, the garbage collector. A reused worker runs a full ``gc.collect()`` after every
task (``pyspark.daemon``), over every object of the modules it imported: 80 ms with pandas,
pyarrow and the scorer's modules (~96k objects), twice per scorer micro-batch (py-spy: over
half of the worker's CPU at 10 rec/s, and each one delays the next task). So the daemon
imports those modules (:data:`PRELOAD`) and then ``gc.freeze()`` s its heap: the forked
workers inherit it in the permanent generation, which collections skip, and start warm
(:func:`iot_fed.heap.freeze_heap`).

Spark runs it as ``python -m iot_fed.analytics.spark_daemon pyspark.worker``; it must not
import pyspark (or anything that does) before the path is trimmed.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.machinery import PathFinder

PRELOAD = (
    "pyspark.worker",
    "pandas",
    "pyarrow",
    "iot_fed.analytics.live_state",  # the streaming scorer's stateful step
    "iot_fed.analytics.stream_sink",  # and its executors' writes
    "iot_fed.analytics.batch_scoring",  # the batch scoring's mapInPandas bodies
)
"""Imported by the daemon before it forks workers (after the import path is trimmed)."""


def worker_path(path: list[str]) -> list[str]:
    """``path`` without JVM jars and, when redundant, the pyspark install's own zips."""
    kept = [p for p in path if not p.endswith(".jar")]
    zips = [p for p in kept if p.endswith(".zip")]
    rest = [p for p in kept if not p.endswith(".zip")]
    spark = PathFinder.find_spec("pyspark", rest)
    if spark is None or not spark.submodule_search_locations or not zips:
        return kept
    if PathFinder.find_spec("py4j", rest) is None:
        return kept
    lib = os.path.realpath(os.path.join(list(spark.submodule_search_locations)[0], "python", "lib"))
    own = {z for z in zips if os.path.dirname(os.path.realpath(z)) == lib}
    return [p for p in kept if p not in own]


def trim_import_path() -> list[str]:
    """Trim ``sys.path`` in place; return the entries dropped."""
    new = worker_path(sys.path)
    dropped = [p for p in sys.path if p not in new]
    sys.path[:] = new
    for key in list(sys.path_importer_cache):  # finders of dropped entries (and inside them)
        if any(key == d or key.startswith(d + os.sep) for d in dropped):
            del sys.path_importer_cache[key]
    return dropped


def preload(modules: tuple[str, ...] = PRELOAD) -> None:
    """Import ``modules`` and move every object so far to the permanent generation."""
    from iot_fed.heap import freeze_heap

    for name in modules:
        importlib.import_module(name)
    freeze_heap()


def main() -> None:
    trim_import_path()
    from pyspark import daemon

    preload()
    daemon.manager()


if __name__ == "__main__":
    main()
