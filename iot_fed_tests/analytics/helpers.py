"""Test data: labelled readings, tiny model bundles stored through iot_fed.store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymongo.database import Database

from iot_fed.fl.model import init_params
from iot_fed.fl.rounds import calibrate_bundle, feature_stats
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.spec import ModelSpec
from iot_fed.fl.stream_scoring import DeviceHistory, score_device
from iot_fed.fl.window_features import window_features
from iot_fed.readings import CHANNELS, epoch_ms
from iot_fed.store import readings_to_docs, save_global_model, save_local_model, upsert_readings
from iot_fed.store.live import read_scorer_status
from iot_fed_tests.stream.helpers import produce_readings

SPEC = ModelSpec(hidden=(8, 4, 8), activation="relu", window=8, spread_k=4)


def make_readings(
    motes: int = 4, per_mote: int = 250, seed: int = 0, start: str = "2004-03-01"
) -> pd.DataFrame:
    """Smooth readings per mote with ~3% labelled spikes (label "spike")."""
    rng = np.random.default_rng(seed)
    n = motes * per_mote
    i = np.arange(n)
    mote = i % motes + 1
    epoch = i // motes
    df = pd.DataFrame(
        {
            "ts": pd.Timestamp(start, tz="UTC")
            + pd.to_timedelta(epoch * 31.0 + mote * 0.123, unit="s"),
            "epoch": epoch,
            "moteid": mote,
            "temperature": 20 + mote + np.sin(epoch / 20) + rng.normal(0, 0.1, n),
            "humidity": 40 - mote + np.cos(epoch / 20) + rng.normal(0, 0.2, n),
            "light": 100.0 + 10 * np.sin(epoch / 50) + rng.normal(0, 1, n),
            "voltage": 2.7 - epoch * 1e-4 + rng.normal(0, 0.005, n),
            "label": [None] * n,
        }
    )
    spikes = rng.random(n) < 0.03
    df.loc[spikes, "temperature"] += 40.0
    df["label"] = df["label"].astype(object)
    df.loc[spikes, "label"] = "spike"
    return df


def features(df: pd.DataFrame) -> dict[int, np.ndarray]:
    """Window features per mote (each mote's readings in epoch order, whole series as context)."""
    out = {}
    for mote, part in df.sort_values(["moteid", "epoch"]).groupby("moteid"):
        vals = part[list(CHANNELS)].to_numpy(np.float64)
        ts = epoch_ms(part["ts"])
        out[int(mote)], _ = window_features(ts, vals, len(part), SPEC.window_config())
    return out


def make_bundle(
    df: pd.DataFrame, seed: int, version: int | None = None, quantile: float = 0.9
) -> ModelBundle:
    """Random-init params, normalisation and thresholds calibrated on ``df`` (at ``quantile``)."""
    params = {
        k: {m: np.asarray(v) for m, v in layer.items()}
        for k, layer in init_params(SPEC, seed).items()
    }
    feats = features(df)
    norm = feature_stats(np.concatenate(list(feats.values()))).normalizer()
    bundle = ModelBundle(SPEC, params, norm, version=version)
    calibrate_bundle(bundle, feats, quantile)
    return bundle


def store_readings(db: Database, df: pd.DataFrame) -> None:
    inserted, _ = upsert_readings(db, readings_to_docs(df))
    assert inserted == len(df)


def store_global(db: Database, bundle: ModelBundle, promoted: bool = True) -> int:
    doc = save_global_model(db, bundle.to_bytes(), threshold=bundle.threshold, promoted=promoted)
    return int(doc["version"])


def store_local(db: Database, moteid: int, bundle: ModelBundle) -> int:
    doc = save_local_model(
        db, str(moteid), bundle.to_bytes(), threshold=bundle.threshold, n_samples=10
    )
    return int(doc["version"])


def stored_readings(db: Database) -> pd.DataFrame:
    """Readings as MongoDB returns them (ts truncated to milliseconds)."""
    docs = list(db["sensor_readings"].find({}, {"_id": 0}))
    df = pd.DataFrame(docs)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df.sort_values(["moteid", "epoch"]).reset_index(drop=True)


def expected(bundle: ModelBundle, df: pd.DataFrame) -> pd.DataFrame:
    """``score_device`` per mote over its readings in epoch order (empty history first), in
    ``df``'s row order: columns score, flag and the per-channel errors ``err_<channel>``."""
    parts = []
    for mote, part in df.sort_values(["moteid", "epoch"]).groupby("moteid"):
        got, _ = score_device(
            bundle,
            DeviceHistory.empty(),
            moteid=int(mote),
            epochs=part["epoch"].to_numpy(np.int64),
            ts_ms=epoch_ms(part["ts"]),
            values=part[list(CHANNELS)].to_numpy(np.float64),
        )
        cols = {"score": got.score, "flag": got.flag}
        cols.update({f"err_{c}": got.channel_errors[:, i] for i, c in enumerate(CHANNELS)})
        parts.append(pd.DataFrame(cols, index=part.index))
    return pd.concat(parts).loc[df.index]


def expected_scores(bundle: ModelBundle, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    e = expected(bundle, df)
    return e["score"].to_numpy(np.float64), e["flag"].to_numpy(bool)


IOT_FED = str(Path(sys.executable).with_name("iot-fed"))


def start_scorer(
    db_name: str, topic: str, checkpoint: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """``iot-fed spark-stream`` (local[2] unless ``env`` says otherwise) in its own
    process group: the Python driver and its Spark JVM."""
    env = {
        **os.environ,
        "IOT_FED_MONGODB_DATABASE": db_name,
        "IOT_FED_SPARK_MASTER": "local[2]",
        "IOT_FED_SPARK_SHUFFLE_PARTITIONS": "2",
        **(env or {}),
    }
    cmd = [IOT_FED, "spark-stream", "--topic", topic, "--checkpoint", checkpoint]
    return subprocess.Popen(
        [*cmd, "--trigger-seconds", "0.5"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def wait_scorer_running(db: Database, name: str, proc: subprocess.Popen, log: Path) -> None:
    """Until the scorer ``name`` says it is running (its log's tail if it exits first)."""
    wait_until(
        lambda: (
            (read_scorer_status(db, name) or {}).get("state") == "running"
            or proc.poll() is not None
        ),
        300,
        "the scorer to start",
    )
    assert proc.poll() is None, log.read_text()[-3000:]


def produce_in_steps(settings: Any, topic: str, df: pd.DataFrame, step: int = 30) -> None:
    """``df`` in steps of ``step`` readings a second, so that a kill lands mid-stream."""
    for i in range(0, len(df), step):
        produce_readings(settings, topic, df.iloc[i : i + step])
        time.sleep(1.0)
