"""The long-running scorer (``iot-fed spark-stream``) killed with SIGKILL mid-stream:
after a restart from its checkpoint every reading has exactly one prediction."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from iot_fed.analytics.streaming import checkpoint_dir
from iot_fed.store.live import read_scorer_status
from iot_fed_tests.analytics.helpers import make_bundle, make_readings, store_global
from iot_fed_tests.stream.helpers import produce_readings

IOT_FED = str(Path(sys.executable).with_name("iot-fed"))


def _scorer(settings, db_name: str, topic: str, checkpoint: str, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "IOT_FED_MONGODB_DATABASE": db_name,
        "IOT_FED_SPARK_MASTER": "local[2]",
        "IOT_FED_SPARK_SHUFFLE_PARTITIONS": "2",
    }
    cmd = [
        IOT_FED,
        "spark-stream",
        "--topic",
        topic,
        "--checkpoint",
        checkpoint,
        "--trigger-seconds",
        "0.5",
    ]
    return subprocess.Popen(
        cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_kill_9_mid_stream_no_duplicate_no_gap(settings, mongo_db, kafka_topic, tmp_path):
    from iot_fed.store import init_database

    init_database(mongo_db)
    df = make_readings(motes=4, per_mote=150, seed=11)
    store_global(mongo_db, make_bundle(df, seed=2))
    name = f"test_kill_{uuid.uuid4().hex[:8]}"
    log = tmp_path / "scorer.log"
    preds = mongo_db["predictions"]

    def produce_slowly() -> None:  # 600 readings over ~20 s, so the kill lands mid-stream
        for i in range(0, len(df), 30):
            produce_readings(settings, kafka_topic, df.iloc[i : i + 30])
            time.sleep(1.0)

    proc = _scorer(settings, mongo_db.name, kafka_topic, name, log)
    try:
        _wait(
            lambda: (read_scorer_status(mongo_db, name) or {}).get("state") == "running",
            240,
            "the scorer to start",
        )
        feeder = threading.Thread(target=produce_slowly)
        feeder.start()
        _wait(lambda: preds.count_documents({}) >= 60, 240, "first predictions")
        os.killpg(proc.pid, signal.SIGKILL)  # the python driver and its Spark JVM
        proc.wait(30)
        killed_at = preds.count_documents({})
        feeder.join()
        assert killed_at < len(df), "the kill came too late to be mid-stream"
        proc = _scorer(settings, mongo_db.name, kafka_topic, name, log)
        _wait(lambda: preds.count_documents({}) >= len(df), 300, "all predictions after restart")
        time.sleep(3)  # a late duplicate would show up here
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        shutil.rmtree(checkpoint_dir(settings, name), ignore_errors=True)
    docs = list(preds.find({}, {"moteid": 1, "epoch": 1, "kafka_ts": 1, "scored_at": 1}))
    keys = [(d["moteid"], d["epoch"]) for d in docs]
    assert len(keys) == len(set(keys)) == len(df), log.read_text()[-3000:]
    assert set(keys) == set(zip(df["moteid"], df["epoch"], strict=True))
    assert all(d["kafka_ts"] <= d["scored_at"] for d in docs)
    flagged = preds.count_documents({"is_anomaly": True})
    assert mongo_db["anomalies"].count_documents({}) == flagged > 0
