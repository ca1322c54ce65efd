"""``bench_scorer.py --against-running``: latency of the live pipeline, measured against a
RUNNING `make run` / `iot-fed run`.

1. End to end, Kafka record timestamp -> prediction stored (``scored_at``, set just before
   its bulk write; the poll-observed store time is reported too), at each ``--rates`` for
   ``--seconds``. Bench readings go to the pipeline's topic under motes 9001.. (not the
   Intel Lab motes, so the real devices' state is untouched) with unique epochs.
2. Promotion -> first prediction with the new version: the promoted bundle is re-saved and
   promoted as a new global version while bench readings flow at 10 rec/s.
3. ``POST /api/score`` with 100 readings: p50/p99 over ``--api-requests`` calls.

Table on stdout; section ``running`` of bench/results/scorer.json.
Note: bench motes and the extra version stay in the pipeline's database.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from typing import Any

import httpx
import numpy as np
from common import print_table
from confluent_kafka import Producer

from iot_fed.config import load_settings
from iot_fed.store import (
    connect,
    get_global_model,
    prediction_id,
    promoted_version,
    save_global_model,
)
from iot_fed.store.live import read_scorer_status
from iot_fed.stream.messages import encode_key, encode_reading
from iot_fed.stream.producer import producer_config

BENCH_MOTE0 = 9001
_T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def _reading(mote: int, epoch: int) -> dict[str, Any]:
    return {
        "ts": _T0 + dt.timedelta(seconds=epoch * 31.0),
        "epoch": epoch,
        "moteid": mote,
        "temperature": 21.0 + 0.5 * np.sin(epoch / 30),
        "humidity": 38.0 + np.cos(epoch / 30),
        "light": 120.0,
        "voltage": 2.68,
        "label": None,
    }


class BenchStream:
    """Bench readings at a fixed rate over ``motes`` motes with ever-increasing epochs."""

    def __init__(self, settings, db, motes: int = 10) -> None:
        self.settings = settings
        self.motes = motes
        self.producer = Producer(producer_config(settings, **{"linger.ms": 1}))
        # after every bench reading already scored: a run sends more epochs than seconds
        # pass between runs, so a clock-based start repeated the previous run's readings
        last = db["predictions"].find_one(
            {"moteid": {"$gte": BENCH_MOTE0, "$lt": BENCH_MOTE0 + motes}}, sort=[("epoch", -1)]
        )
        self.epoch = max(int(time.time()), int(last["epoch"]) + 1 if last else 0)

    def send(self, rate: float, seconds: float, stop=None) -> list[tuple[int, int]]:
        keys: list[tuple[int, int]] = []
        t0 = time.time()
        for j in range(int(rate * seconds)):
            due = t0 + j / rate
            while (now := time.time()) < due:
                time.sleep(min(due - now, 0.002))
            mote = BENCH_MOTE0 + j % self.motes
            if j % self.motes == 0:
                self.epoch += 1
            r = _reading(mote, self.epoch)
            self.producer.produce(self.settings.kafka_topic, encode_reading(r), encode_key(mote))
            self.producer.poll(0)
            keys.append((mote, self.epoch))
            if stop is not None and stop():
                break
        self.producer.flush(30)
        return keys


def _pct(a: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(a, q)), 3) if a.size else None


def wait_stored(db, keys: list[tuple[int, int]], timeout: float) -> tuple[list[dict], float]:
    """Wait until every (mote, epoch) has a prediction; return them and the time of the
    poll that found the last one.

    The bench must not load the server the scorer writes to while it measures: it polls
    only each mote's newest reading by ``_id`` (:func:`prediction_id`; the scorer stores
    a mote's readings in order), then reads the rest once, by ``_id`` in chunks. Polling
    every missing id five times a second (30,000 ids after the 1,000 rec/s burst) was a
    query load on the server while the scorer caught up."""
    want = {prediction_id(m, _reading(m, e)["ts"]): (m, e) for m, e in keys}
    newest: dict[int, str] = {}
    for i, (m, _) in want.items():
        newest[m] = i  # keys are in send order: the last one per mote is its newest
    fields = {"moteid": 1, "epoch": 1, "kafka_ts": 1, "scored_at": 1, "model_version": 1}
    deadline = time.time() + timeout
    docs: dict[str, dict] = {}
    seen = time.time()
    while time.time() < deadline:
        seen = time.time()
        probe = [i for i in newest.values() if i not in docs]
        docs.update({d["_id"]: d for d in db["predictions"].find({"_id": {"$in": probe}}, fields)})
        if all(i in docs for i in newest.values()):
            missing = [i for i in want if i not in docs]
            for k in range(0, len(missing), 1000):
                chunk = {"_id": {"$in": missing[k : k + 1000]}}
                docs.update({d["_id"]: d for d in db["predictions"].find(chunk, fields)})
            if len(docs) == len(want):
                break
        time.sleep(0.2)
    return list(docs.values()), seen


def bench_rate(db, stream: BenchStream, rate: float, seconds: float) -> dict[str, Any]:
    keys = stream.send(rate, seconds)
    sent = time.time()
    docs, seen = wait_stored(db, keys, timeout=120 + seconds)
    lat = np.array([(d["scored_at"] - d["kafka_ts"]).total_seconds() for d in docs])
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "sent": len(keys),
        "stored": len(docs),
        "p50_s": _pct(lat, 50),
        "p99_s": _pct(lat, 99),
        "max_s": _pct(lat, 100),
        "all_stored_after_send_s": round(seen - sent, 3),  # as polled (0.2 s)
    }


def bench_promotion(db, stream: BenchStream, timeout: float = 120) -> dict[str, Any]:
    version = promoted_version(db)
    if version is None:
        return {"error": "no promoted model"}
    doc = get_global_model(db, version)
    new = save_global_model(
        db,
        bytes(doc["params"]),
        threshold=doc.get("threshold"),
        parent_version=version,
        strategy=doc.get("strategy", "fedavg"),
        metrics={"bench": "bench_latency promotion"},
    )["version"]
    t0 = time.time()
    from iot_fed.store import promote

    promote(db, new)
    first = None
    while first is None and time.time() - t0 < timeout:
        stream.send(10, 1.0)
        d = db["predictions"].find_one(
            {"model_version": new, "source": "streaming"}, sort=[("scored_at", 1)]
        )
        if d is not None:
            first = d["scored_at"].timestamp()
    return {
        "from_version": version,
        "to_version": new,
        "promotion_to_first_prediction_s": None if first is None else round(first - t0, 3),
    }


def bench_api(port: int, n_requests: int) -> dict[str, Any]:
    readings = [
        {**_reading(1 + i % 5, 10_000 + i // 5), "ts": _reading(1, i)["ts"].isoformat()}
        for i in range(100)
    ]
    for r in readings:
        r.pop("label")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        c.post("/api/score", json={"readings": readings}).raise_for_status()  # warm
        t = []
        for _ in range(n_requests):
            t0 = time.perf_counter()
            r = c.post("/api/score", json={"readings": readings})
            t.append(time.perf_counter() - t0)
            r.raise_for_status()
    a = np.array(t) * 1000
    return {"readings": 100, "requests": n_requests, "p50_ms": _pct(a, 50), "p99_ms": _pct(a, 99)}


def against_running(
    rates: str, seconds: float, api_requests: int, skip_promotion: bool
) -> dict[str, Any] | None:
    """Every measurement above on the running pipeline; None (and says why) if none runs."""
    settings = load_settings()
    db = connect(settings.mongodb_uri, settings.mongodb_database, 10)
    db = db.client.get_database(
        settings.mongodb_database, codec_options=db.codec_options.with_options(tz_aware=True)
    )
    hb = read_scorer_status(db) or {}
    if hb.get("state") != "running":
        print(f"--against-running: the scorer is not running ({hb.get('state')}); start `make run`")
        return None
    stream = BenchStream(settings, db)
    res: dict[str, Any] = {
        "trigger_s": settings.scorer_trigger_s,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 1),
        "cores": os.cpu_count(),
        "rates": [],
    }
    stream.send(10, 3)  # warm the bench motes
    for rate in (float(r) for r in rates.split(",")):
        res["rates"].append(bench_rate(db, stream, rate, seconds))
        print(json.dumps(res["rates"][-1]), flush=True)
    if not skip_promotion:
        res["promotion"] = bench_promotion(db, stream)
        print(json.dumps(res["promotion"]), flush=True)
    res["api"] = bench_api(settings.api_port, api_requests)
    rows = [
        (
            f"e2e p50 / p99 at {r['rate_per_s']:g} rec/s (s)",
            f"{r['p50_s']} / {r['p99_s']}",
            "p99 <= 2" if r["rate_per_s"] <= 10 else "p99 <= 5",
        )
        for r in res["rates"]
    ]
    if "promotion" in res:
        rows.append(
            (
                "promotion -> first prediction (s)",
                str(res["promotion"].get("promotion_to_first_prediction_s")),
                f"<= {settings.scorer_trigger_s + 2:g}",
            )
        )
    rows.append(
        (
            "/api/score 100 readings p50 / p99 (ms)",
            f"{res['api']['p50_ms']} / {res['api']['p99_ms']}",
            "p99 <= 50",
        )
    )
    print_table("The running pipeline", ["metric", "value", "goal"], rows)
    return res
