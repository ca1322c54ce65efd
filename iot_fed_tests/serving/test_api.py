"""The model API through a real HTTP client against uvicorn (``iot-fed serve``) on a port."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from iot_fed.federation.device_params import split
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.stream_scoring import (
    LEARNING_NO_PARAMS,
    LEARNING_NO_THRESHOLD,
    DeviceHistory,
    score_device,
)
from iot_fed.readings import CHANNELS, epoch_ms
from iot_fed.store import init_database, save_global_model
from iot_fed.store.live import write_scorer_status
from iot_fed_tests.analytics.helpers import make_bundle, make_readings, store_global, store_local

IOT_FED = str(Path(sys.executable).with_name("iot-fed"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api(mongo_db):
    init_database(mongo_db)
    port = _free_port()
    env = {**os.environ, "IOT_FED_MONGODB_DATABASE": mongo_db.name}
    proc = subprocess.Popen(
        [IOT_FED, "serve", "--port", str(port)], env=env, start_new_session=True
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    deadline = time.monotonic() + 60
    while True:
        try:
            client.get("/openapi.json")
            break
        except httpx.TransportError:
            assert proc.poll() is None and time.monotonic() < deadline, "API did not start"
            time.sleep(0.3)
    yield client
    client.close()
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)


def _payload(df) -> list[dict]:
    return [
        {
            "moteid": int(r.moteid),
            "epoch": int(r.epoch),
            "ts": r.ts.isoformat(),
            **{c: float(getattr(r, c)) for c in CHANNELS},
        }
        for r in df.itertuples()
    ]


def test_api_endpoints_and_scoring(api, mongo_db):
    assert (
        api.post("/api/score", json={"readings": _payload(make_readings(1, 3))}).status_code == 409
    )
    df = make_readings(motes=2, per_mote=50, seed=4)
    bundle = make_bundle(df, seed=1)
    assert store_global(mongo_db, bundle) == 1
    write_scorer_status(
        mongo_db, {"updated_at": __import__("datetime").datetime.now(), "state": "running"}
    )

    st = api.get("/api/status").json()
    assert st["promoted_version"] == 1 and st["global_versions"] == 1
    assert st["last_refused"] is None
    # a version its promotion replay refused: /api/status says which and why
    replay = {"ok": False, "reason": "alarm rate 40 incidents/device-day", "alarm_rate": 40.0}
    metrics = {"verdict": {"ok": True, "reason": "ok"}, "replay": replay}
    save_global_model(mongo_db, b"refused", metrics=metrics)
    refused = api.get("/api/status").json()["last_refused"]
    assert refused["version"] == 2
    assert refused["reason"] == "replay: alarm rate 40 incidents/device-day"
    assert refused["replay"]["alarm_rate"] == 40.0
    mongo_db.global_models.delete_one({"version": 2})
    assert st["scorer"]["state"] == "running"
    hist = api.get("/api/history").json()
    assert [h["version"] for h in hist] == [1] and "params" not in hist[0]
    m = api.get("/api/models/1").json()
    import base64

    blob = base64.b64decode(m["bundle_base64"])
    assert hashlib.sha256(blob).hexdigest() == m["sha256"]
    assert ModelBundle.from_bytes(blob).spec == bundle.spec
    assert api.get("/api/models/7").status_code == 404
    assert "/api/score" in api.get("/openapi.json").json()["paths"]
    assert api.get("/docs").status_code == 200

    got = api.post("/api/score", json={"readings": _payload(df)})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["model_version"] == 1 and len(body["results"]) == len(df)
    one = df[df["moteid"] == 1].sort_values("epoch")
    ts_ms = (one["ts"].astype("int64") // 1_000_000).to_numpy()
    want, _ = score_device(
        bundle,
        DeviceHistory.empty(),
        moteid=1,
        epochs=one["epoch"].to_numpy(),
        ts_ms=ts_ms,
        values=one[list(CHANNELS)].to_numpy(),
    )
    res = [r for r in body["results"] if r["moteid"] == 1]
    assert np.allclose([r["score"] for r in res], want.score, rtol=1e-5)
    assert [r["flag"] for r in res] == want.flag.tolist() and any(want.flag)
    assert DeviceHistory.from_json(body["histories"]["1"]).last_epoch == int(one["epoch"].max())

    # a new promotion is served within the API's one-second cache of the promoted version
    assert store_global(mongo_db, make_bundle(df, seed=2)) == 2
    deadline = time.monotonic() + 60  # a liveness bound: the refresh runs every second
    while api.post("/api/score", json={"readings": _payload(df)}).json()["model_version"] != 2:
        assert time.monotonic() < deadline, "promotion not served"
        time.sleep(0.1)


def test_status_tells_learning_devices_and_scoring_does_not_alarm_them(api, mongo_db):
    """Mote 3 has a local model but no threshold in the promoted version: learning, its
    readings scored and not flagged, but for the sanity rule."""
    df = make_readings(motes=2, per_mote=50, seed=4)
    bundle = make_bundle(df, seed=1)
    assert sorted(bundle.device_thresholds) == [1, 2]
    store_global(mongo_db, bundle)
    for mote in (1, 2, 3):
        store_local(mongo_db, mote, bundle)
    cal = api.get("/api/status").json()["calibration"]
    assert cal == {
        "model_version": 1,
        "calibrated": 2,
        "learning": 1,
        "learning_devices": [3],
        "learning_devices_truncated": False,
    }
    three = make_readings(motes=3, per_mote=50, seed=5)
    three = three[three["moteid"] == 3].sort_values("epoch").reset_index(drop=True)
    three.loc[45, "voltage"] = 2.21
    res = api.post("/api/score", json={"readings": _payload(three)}).json()["results"]
    assert [r["flag"] for r in res] == [i == 45 for i in range(50)]
    assert res[45]["reason"] == "sanity:voltage 2.21 < 2.3"
    assert {r["reason"] for i, r in enumerate(res) if i != 45} == {LEARNING_NO_THRESHOLD}


def test_a_version_with_its_device_params_apart_is_served_and_paged(api, mongo_db):
    """Per-device params stored apart: read a page at a time, served through the scorer's
    loader; a device without params is learning (``learning:no_device_params``)."""
    df = make_readings(motes=2, per_mote=50, seed=4)
    bundle = make_bundle(df, seed=1)
    shared, rows = split(bundle, {1: {"version": 1, "n_samples": 10, "weight": 1.0}})
    doc = save_global_model(
        mongo_db, shared.to_bytes(), threshold=bundle.threshold, device_params=rows, promoted=True
    )
    first = api.get("/api/models/1/devices", params={"limit": 1}).json()
    assert first["count"] == 2 and [d["moteid"] for d in first["devices"]] == [1]
    assert first["devices"][0]["threshold"] == bundle.device_thresholds[1]
    assert first["devices"][0]["lineage"]["n_samples"] == 10
    rest = api.get("/api/models/1/devices", params={"after": 1}).json()["devices"]
    assert [d["moteid"] for d in rest] == [2]
    assert api.get("/api/models/1").json()["device_params"]["count"] == 2
    assert doc["device_params"]["calibrated"] == 2
    for mote in (1, 2, 3):
        store_local(mongo_db, mote, bundle)
    cal = api.get("/api/status").json()["calibration"]
    assert (cal["calibrated"], cal["learning_devices"]) == (2, [3])

    res = api.post("/api/score", json={"readings": _payload(df)}).json()["results"]
    one = df[df["moteid"] == 1].sort_values("epoch")
    want, _ = score_device(
        bundle,
        DeviceHistory.empty(),
        moteid=1,
        epochs=one["epoch"].to_numpy(),
        ts_ms=epoch_ms(one["ts"]),
        values=one[list(CHANNELS)].to_numpy(np.float64),
    )
    got = [r for r in res if r["moteid"] == 1]
    assert np.allclose([r["score"] for r in got], want.score, rtol=1e-5, equal_nan=True)
    three = make_readings(motes=3, per_mote=20, seed=5)
    three = three[three["moteid"] == 3].sort_values("epoch")
    res = api.post("/api/score", json={"readings": _payload(three)}).json()["results"]
    assert {r["reason"] for r in res} == {LEARNING_NO_PARAMS}


def _reading(moteid: int, epoch: int) -> dict:
    """A well-formed reading body (every channel 1)."""
    channels = dict.fromkeys(CHANNELS, 1)
    return {"moteid": moteid, "epoch": epoch, "ts": "2004-03-01T00:00:00Z", **channels}


@pytest.mark.parametrize(
    "body, code",
    [
        ("not json", 422),
        ({"readings": []}, 422),
        ({"readings": [{"moteid": 1}]}, 422),
        ({"readings": [_reading(0, 1)]}, 422),
        ({"readings": [_reading(1, e) for e in (5, 3)]}, 400),
        ({"readings": [_reading(1, 1)], "histories": {"1": "{"}}, 400),
    ],
)
def test_malformed_requests_get_4xx_with_reason(api, mongo_db, body, code):
    store_global(mongo_db, make_bundle(make_readings(1, 20), seed=1))
    kw = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, str)
        else {"json": body}
    )
    r = api.post("/api/score", **kw)
    assert r.status_code == code, r.text
    assert r.json()["detail"]


def test_the_model_cache_refreshes_in_the_background_and_requests_never_query(mongo_db):
    """Before a promotion a request is told 409; once a bundle is loaded, requests read
    the cache only (no database round trip on the request path) and a new promotion is
    picked up by the refresh thread within its interval."""
    from fastapi import HTTPException

    from iot_fed.serving.app import ModelCache

    init_database(mongo_db)
    cache = ModelCache(ttl_s=0.2)
    with pytest.raises(HTTPException) as err:
        cache.get(mongo_db)
    assert err.value.status_code == 409
    df = make_readings(motes=2, per_mote=50, seed=4)
    assert store_global(mongo_db, make_bundle(df, seed=1)) == 1
    assert cache.get(mongo_db)[0] == 1

    class NoDatabase:  # a request path that touched the database would fail here
        def __getitem__(self, name):
            raise AssertionError("the request path queried the database")

    assert cache.get(NoDatabase())[0] == 1
    cache.start(mongo_db)
    try:
        assert store_global(mongo_db, make_bundle(df, seed=2)) == 2
        deadline = time.monotonic() + 60  # a liveness bound: the refresh runs every second
        while cache.get(NoDatabase())[0] != 2:
            assert time.monotonic() < deadline, "promotion not picked up"
            time.sleep(0.05)
    finally:
        cache.stop()


def test_incidents_endpoint_filters_and_bounds(api, mongo_db):
    from iot_fed.analytics.incidents import Episode, incident_doc
    from iot_fed.store.incidents import upsert_incidents

    step = 31_000
    docs = []
    for i in range(6):  # motes 17 and 18, every other one still open
        start = 1_078_000_000_000 + i * 3_600_000
        ep = Episode(start, start + 3 * step, start + 5 * step, n_flagged=4, n_readings=6)
        docs.append(incident_doc(17 + i % 2, ep, "open" if i % 3 == 0 else "resolved"))
    assert upsert_incidents(mongo_db, docs, source="test") == 6
    got = api.get("/api/incidents").json()
    assert [d["id"] for d in got] == [d["_id"] for d in reversed(docs)]  # newest first
    assert {"start", "last_seen", "end", "state", "channels", "fault_type"} <= set(got[0])
    got = api.get("/api/incidents", params={"state": "open", "moteid": 17, "limit": 100}).json()
    assert [d["id"] for d in got] == [docs[0]["_id"]]
    assert got[0]["end"] is None and got[0]["moteid"] == 17
    assert len(api.get("/api/incidents", params={"limit": 2}).json()) == 2
    for bad in ({"limit": 0}, {"limit": 10_001}, {"state": "closed"}, {"moteid": "x"}):
        r = api.get("/api/incidents", params=bad)
        assert r.status_code == 422, (bad, r.text)
