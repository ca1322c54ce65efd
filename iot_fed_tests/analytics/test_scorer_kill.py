"""The long-running scorer (``iot-fed spark-stream``) killed with SIGKILL mid-stream:
after a restart from its checkpoint every reading has exactly one prediction, and the
incidents are those of the stored verdicts (none opened twice, none lost)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import uuid

import numpy as np
import pandas as pd

from iot_fed.analytics.incidents import advance, due_state
from iot_fed.analytics.streaming import checkpoint_dir
from iot_fed.readings import CHANNELS, epoch_ms
from iot_fed_tests.analytics.helpers import (
    make_bundle,
    make_readings,
    produce_in_steps,
    start_scorer,
    store_global,
    wait_scorer_running,
    wait_until,
)


def test_kill_9_mid_stream_no_duplicate_no_gap(settings, mongo_db, kafka_topic, tmp_path):
    from iot_fed.store import init_database

    init_database(mongo_db)
    df = make_readings(motes=4, per_mote=150, seed=11)
    store_global(mongo_db, make_bundle(df, seed=2))
    name = f"test_kill_{uuid.uuid4().hex[:8]}"
    log = tmp_path / "scorer.log"
    preds = mongo_db["predictions"]

    proc = start_scorer(mongo_db.name, kafka_topic, name, log)
    try:
        wait_scorer_running(mongo_db, name, proc, log)
        feeder = threading.Thread(target=produce_in_steps, args=(settings, kafka_topic, df))
        feeder.start()
        wait_until(lambda: preds.count_documents({}) >= 60, 240, "first predictions")
        os.killpg(proc.pid, signal.SIGKILL)  # the python driver and its Spark JVM
        proc.wait(30)
        killed_at = preds.count_documents({})
        feeder.join()
        assert killed_at < len(df), "the kill came too late to be mid-stream"
        proc = start_scorer(mongo_db.name, kafka_topic, name, log)
        wait_until(
            lambda: preds.count_documents({}) >= len(df), 300, "all predictions after restart"
        )
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
    # the incidents survived the kill: those of the stored verdicts, none twice, none lost
    assert _incidents(mongo_db) == _expected_incidents(mongo_db, df, settings.incident_quiet_s)


_COMPARED = ("state", "n_flagged", "n_readings", "channels", "fault_type", "model_version", "rev")


def _incidents(db) -> dict[str, dict]:
    return {d["_id"]: {k: d[k] for k in _COMPARED} for d in db["incidents"].find()}


def _expected_incidents(db, df: pd.DataFrame, quiet_s: float) -> dict[str, dict]:
    """The incidents of the stored verdicts (with the readings' values), as the batch
    asset builds them: one :func:`advance` per device over its whole series, then the
    fleet's data time closes the quiet ones."""
    preds = pd.DataFrame(list(db["predictions"].find()))
    errs = np.array(preds["channel_errors"].tolist(), np.float64)
    scored = pd.DataFrame(
        {
            "moteid": preds["moteid"],
            "epoch": preds["epoch"],
            "ts_ms": epoch_ms(preds["ts"]),
            "score": preds["score"].astype(float),
            "threshold": preds["threshold"].astype(float),
            "flag": preds["is_anomaly"],
            "reason": preds["reason"],
            "model_version": preds["model_version"],
            **{f"err_{c}": errs[:, j] for j, c in enumerate(CHANNELS)},
        }
    ).merge(df[["moteid", "epoch", *CHANNELS]], on=["moteid", "epoch"])
    fleet_ms = int(scored["ts_ms"].max())
    out = {}
    for mote, part in scored.groupby("moteid"):
        for d in advance(int(mote), None, part, quiet_s)[1]:
            if d["state"] == "open":
                closed = due_state(d["last_seen_ms"], d["last_reading_ms"], fleet_ms, quiet_s)
                if closed is not None:
                    d = {**d, "state": closed, "rev": d["rev"] | 1}
            out[d["_id"]] = {k: d[k] for k in _COMPARED}
    return out
