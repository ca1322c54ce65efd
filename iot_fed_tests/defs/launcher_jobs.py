"""Jobs for the WarmRunLauncher tests (module level: the forked worker reconstructs them)."""

import sys
import time

import dagster as dg


@dg.op
def report_preloaded(context: dg.OpExecutionContext) -> None:
    # ``colorsys`` is imported by nothing but the launcher's preload list in the test
    context.log.info("preloaded colorsys: %s", "colorsys" in sys.modules)
    if "colorsys" not in sys.modules:
        raise RuntimeError("the run worker was not forked from the preloaded forkserver")


@dg.op
def sleep_long() -> None:
    time.sleep(120)


@dg.job
def preloaded_job() -> None:
    report_preloaded()


@dg.job
def sleepy_job() -> None:
    sleep_long()
