"""The Spark resource the analytics assets get: dagster-pyspark's ``PySparkResource``.

This module imports ``dagster_pyspark`` and so pyspark (about 0.25 s and 200 modules): only
``PySparkFactory.create_resource`` (``iot_fed/defs/resources.py``) imports it, in the runs
whose assets require the ``pyspark`` resource, never when the code location loads.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_pyspark import PySparkResource
from pyspark.sql import SparkSession

from iot_fed.analytics.jars import jars_installed
from iot_fed.analytics.session import spark_config, start_session
from iot_fed.config import Settings


class IotFedPySparkResource(PySparkResource):
    """``PySparkResource`` whose ``spark_config`` is :func:`~iot_fed.analytics.session.spark_config`
    (master, JVM options, worker daemon, connector jars: one place) and whose session starts
    lazily, on the first ``spark_session``, through the same ``start_session`` as the CLI.

    Lazy rather than in ``setup_for_execution``: a run that requires the resource but fails
    or skips before touching Spark starts no JVM (several seconds and ~2 GB).
    """

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> IotFedPySparkResource:
        """``spark_config(settings)`` (jars only when ``iot-fed spark install`` fetched them)
        with ``overrides`` (``spark.*`` keys) applied last."""
        conf = spark_config(settings, with_jars=jars_installed(settings))
        return cls(spark_config={**conf, **overrides})

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Nothing here: the session starts on first use (see the class docstring)."""

    @property
    def spark_session(self) -> SparkSession:
        if self._spark_session is None:
            self._spark_session = start_session(self.spark_config)
        return self._spark_session
