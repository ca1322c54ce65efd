"""PySpark analytics over the stored readings and the live Kafka stream (no Dagster here).

Entry points (each takes a ``SparkSession`` and :class:`~iot_fed.config.Settings`):

* :func:`iot_fed.analytics.evaluation.evaluation_report` — global vs local models, batch
* :func:`iot_fed.analytics.predictions.write_predictions` — scores for every reading
* :func:`iot_fed.analytics.streaming.streaming_evaluation` — Kafka -> predictions,
  available-now; :func:`~iot_fed.analytics.streaming.run_streaming_evaluation` runs forever
* :func:`iot_fed.analytics.session.spark_config` — the Spark settings: the ``spark_config``
  of the assets' ``dagster_pyspark.PySparkResource`` (``iot_fed/defs/spark.py``) and, through
  :func:`~iot_fed.analytics.session.build_session`, of the CLI's session
* :func:`iot_fed.analytics.jars.install_spark_jars` — the Kafka connector jars (Maven)
"""
