"""The streaming scorer on a Spark standalone cluster (a master and 2 workers on
loopback), 2 state partitions: one worker, its executor JVM and its Python workers
killed with SIGKILL mid-stream; Spark re-runs the lost tasks on the other executor from
the checkpointed state, and every reading still gets exactly one verdict."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from iot_fed.store import init_database
from iot_fed_tests.analytics.helpers import (
    make_bundle,
    make_readings,
    produce_in_steps,
    start_scorer,
    store_global,
    wait_scorer_running,
    wait_until,
)
from iot_fed_tests.analytics.spark_cluster import cluster_env


@pytest.mark.slow
def test_worker_killed_mid_stream_every_reading_one_verdict(
    settings, mongo_db, kafka_topic, tmp_path, spark_cluster
):
    init_database(mongo_db)
    df = make_readings(motes=12, per_mote=50, seed=5)  # 12 motes: buckets on both partitions
    store_global(mongo_db, make_bundle(df, seed=2))
    name = f"test_cluster_{uuid.uuid4().hex[:8]}"
    log = tmp_path / "scorer.log"
    preds = mongo_db["predictions"]
    env = {
        **cluster_env(),
        "IOT_FED_SPARK_MASTER": spark_cluster.url,
        "IOT_FED_SCORER_STATE_PARTITIONS": "2",
        "IOT_FED_SCORER_CHECKPOINT": str(tmp_path / "checkpoints"),  # shared: one machine
    }

    proc = start_scorer(mongo_db.name, kafka_topic, name, log, env)
    try:
        wait_scorer_running(mongo_db, name, proc, log)
        feeder = threading.Thread(target=produce_in_steps, args=(settings, kafka_topic, df))
        feeder.start()
        wait_until(lambda: preds.count_documents({}) >= 60, 240, "first predictions")
        assert spark_cluster.executor_pids(0), "worker 0 runs an executor"
        spark_cluster.kill_worker(0)  # the worker, its executor JVM, its Python workers
        killed_at = preds.count_documents({})
        feeder.join()
        assert killed_at < len(df), "the kill came too late to be mid-stream"
        wait_until(lambda: preds.count_documents({}) >= len(df), 300, "all predictions")
        time.sleep(3)  # a late duplicate would show up here
        assert proc.poll() is None, "the scorer survived the lost executor"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)
    docs = list(preds.find({}, {"moteid": 1, "epoch": 1}))
    keys = [(d["moteid"], d["epoch"]) for d in docs]
    assert len(keys) == len(set(keys)) == len(df), log.read_text()[-3000:]
    assert set(keys) == set(zip(df["moteid"], df["epoch"], strict=True))
    flagged = preds.count_documents({"is_anomaly": True})
    assert mongo_db["anomalies"].count_documents({}) == flagged > 0
