"""One verdict-document builder for the batch asset and the streaming scorer: the same
reading scored by the same model version gives the same document on both paths, and a
stored verdict is replaced only by a newer model version's."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
from pymongo.database import Database

from iot_fed.analytics.batch_scoring import score_devices
from iot_fed.analytics.bucket_state import BucketState, load_state, state_bytes
from iot_fed.analytics.incidents import advance
from iot_fed.analytics.live_state import decode_records, score_mote, step_mote
from iot_fed.analytics.predictions import store_scored
from iot_fed.analytics.stream_sink import store_batch
from iot_fed.analytics.verdicts import PROVENANCE, verdict_docs
from iot_fed.fl.device_history import DeviceHistory, HistoryColumns
from iot_fed.fl.stream_scoring import LEARNING_NO_THRESHOLD
from iot_fed.store.incidents import close_due_incidents, upsert_incidents
from iot_fed.store.live import store_verdicts
from iot_fed.stream.messages import encode_key, encode_reading
from iot_fed_tests.analytics.helpers import make_bundle, make_readings

T = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
VERSION = 7
QUIET_S = 300.0  # ~10 readings of a mote: several incidents per series


def _kafka_records(df: pd.DataFrame, first: int) -> pd.DataFrame:
    """One mote's readings as the stateful step receives them from the Kafka source."""
    rows = df.to_dict("records")
    return pd.DataFrame(
        {
            "key": [encode_key(r["moteid"]) for r in rows],
            "value": [encode_reading(r) for r in rows],
            "kafka_offset": [f"t:0:{first + i}" for i in range(len(rows))],
            "kafka_ts_ms": np.arange(len(rows), dtype=np.int64) + 1_700_000_000_000,
        }
    )


def _streamed(bundle, df: pd.DataFrame, chunk: int) -> pd.DataFrame:
    """The streaming path: each mote's readings in micro-batches of ``chunk``, its history
    threaded from one to the next, as the scorer's state does."""
    frames = []
    for _, part in df.sort_values(["moteid", "epoch"]).groupby("moteid"):
        history = DeviceHistory.empty()
        for i in range(0, len(part), chunk):
            decoded = decode_records(_kafka_records(part.iloc[i : i + chunk], i), 1 << 20)
            out, history = score_mote(bundle, VERSION, history, decoded)
            frames.append(out)
    return pd.concat(frames, ignore_index=True)


def _verdicts(docs: list[dict]) -> dict[tuple[int, int], dict]:
    return {
        (d["moteid"], d["epoch"]): {k: v for k, v in d.items() if k not in PROVENANCE} for d in docs
    }


def test_the_same_reading_gets_the_same_document_from_batch_and_stream() -> None:
    df = make_readings(motes=3, per_mote=90, seed=4)
    bundle = make_bundle(df, seed=1)
    batch_p, batch_a = verdict_docs(
        score_devices(bundle, float(bundle.threshold), df, VERSION), source="batch", scored_at=T
    )
    stream_p, stream_a = verdict_docs(_streamed(bundle, df, 13), source="streaming", scored_at=T)
    assert len(batch_p) == len(stream_p) == len(df)
    assert _verdicts(batch_p) == _verdicts(stream_p)
    assert _verdicts(batch_a) == _verdicts(stream_a) and batch_a
    doc = next(iter(_verdicts(batch_p).values()))
    assert {"threshold", "channel_errors", "reason", "score", "is_anomaly"} <= set(doc)
    # the threshold each verdict was judged by: a device's own where it has one
    own = {m for m in df["moteid"].unique() if int(m) in bundle.device_thresholds}
    for d in batch_p:
        if d["moteid"] in own and d["reason"] is None:
            assert d["threshold"] == bundle.device_thresholds[d["moteid"]]


def test_a_verdict_is_replaced_only_by_a_newer_model_version(mongo_db: Database) -> None:
    df = make_readings(motes=2, per_mote=60, seed=5)
    bundle = make_bundle(df, seed=2)
    scored = score_devices(bundle, float(bundle.threshold), df, VERSION)

    def store(version: int, source: str) -> dict[str, int]:
        frame = scored.assign(model_version=version)
        preds, anomalies = verdict_docs(frame, source=source, scored_at=T)
        return store_verdicts(mongo_db, preds, anomalies)

    n = len(df)
    assert store(VERSION, "streaming")["inserted"] == n
    assert store(VERSION, "batch") == {"inserted": 0, "updated": 0, "kept": n, "anomalies": 0}
    assert set(mongo_db.predictions.distinct("source")) == {"streaming"}
    assert store(VERSION - 1, "batch")["kept"] == n  # an older version never replaces
    newer = store(VERSION + 1, "batch")
    assert (newer["updated"], newer["kept"]) == (n, 0)
    assert set(mongo_db.predictions.distinct("model_version")) == {VERSION + 1}
    flagged = int(scored["flag"].sum())
    assert mongo_db.anomalies.count_documents({}) == flagged
    assert set(mongo_db.anomalies.distinct("model_version")) == {VERSION + 1}


def test_each_path_replaces_a_verdict_only_with_a_newer_model_version(mongo_db: Database) -> None:
    """Through the paths' own writers: the batch asset's ``store_scored`` and the stream's
    micro-batch ``store_batch``, each against the other's stored verdicts."""
    df = make_readings(motes=2, per_mote=60, seed=6)
    bundle = make_bundle(df, seed=3)
    batch = score_devices(bundle, float(bundle.threshold), df, VERSION)
    stream = _streamed(bundle, df, 17)
    n = len(df)

    def stored() -> dict[tuple[int, int], dict]:
        return _verdicts(
            [{k: v for k, v in d.items() if k != "_id"} for d in mongo_db.predictions.find()]
        )

    def by(frame: pd.DataFrame, version: int) -> dict[tuple[int, int], dict]:
        preds, _ = verdict_docs(frame.assign(model_version=version), source="x", scored_at=T)
        out = _verdicts(preds)
        for d in out.values():  # as stored: BSON dates come back naive (UTC)
            d["ts"] = d["ts"].replace(tzinfo=None)
        return out

    def sources() -> set[str]:
        return set(mongo_db.predictions.distinct("source"))

    assert store_batch(mongo_db, stream, QUIET_S)["inserted"] == n
    got = store_scored(mongo_db, batch, "batch")  # the same version: the stream's verdict stays
    assert (got["inserted"], got["updated"], got["kept"]) == (0, 0, n) and sources() == {
        "streaming"
    }
    assert stored() == by(batch, VERSION)

    got = store_scored(mongo_db, batch.assign(model_version=VERSION + 1), "batch")
    assert (got["updated"], got["kept"]) == (n, 0) and sources() == {"batch"}
    got = store_batch(mongo_db, stream, QUIET_S)  # the stream still on the older version: kept
    assert (got["inserted"], got["updated"], got["kept"]) == (0, 0, n) and sources() == {"batch"}
    assert stored() == by(batch, VERSION + 1)

    got = store_batch(mongo_db, stream.assign(model_version=VERSION + 2), QUIET_S)
    assert (got["updated"], got["kept"]) == (n, 0) and sources() == {"streaming"}
    assert stored() == by(stream, VERSION + 2)
    flagged = int(stream["flag"].sum())
    assert mongo_db.anomalies.count_documents({"model_version": VERSION + 2}) == flagged
    assert mongo_db.anomalies.count_documents({}) == flagged


def test_learning_and_sanity_verdicts_are_the_same_on_every_path() -> None:
    """Batch asset, streaming scorer and the API's scorer: a device the version has not
    calibrated (mote 3) is never alarmed but for the sanity rule, which alarms on
    calibrated devices too and names its channel."""
    from iot_fed.serving.app import Reading, score_readings

    df = make_readings(motes=3, per_mote=90, seed=7)
    bundle = make_bundle(df[df["moteid"] != 3], seed=1)
    assert sorted(bundle.device_thresholds) == [1, 2]
    df = df.copy()
    bad = {(1, 50): ("voltage", 2.1), (3, 60): ("humidity", 120.0), (2, 70): ("light", -3.0)}
    for (mote, epoch), (channel, value) in bad.items():
        df.loc[(df["moteid"] == mote) & (df["epoch"] == epoch), channel] = value
    batch_p, batch_a = verdict_docs(
        score_devices(bundle, float(bundle.threshold), df, VERSION), source="batch", scored_at=T
    )
    stream_p, stream_a = verdict_docs(_streamed(bundle, df, 11), source="streaming", scored_at=T)
    assert _verdicts(batch_p) == _verdicts(stream_p)
    assert _verdicts(batch_a) == _verdicts(stream_a)
    rows = df.sort_values(["moteid", "epoch"]).to_dict("records")
    api, _ = score_readings(bundle, [Reading(**r) for r in rows], {})
    verdicts = _verdicts(batch_p)
    for r in api:
        doc = verdicts[(r["moteid"], r["epoch"])]
        assert (r["flag"], r["reason"]) == (doc["is_anomaly"], doc["reason"])
    for key, (channel, value) in bad.items():
        assert verdicts[key]["is_anomaly"]
        assert verdicts[key]["reason"].startswith(f"sanity:{channel} {value:.4g} ")
    channels = {(a["moteid"], a["epoch"]): a["channels"] for a in batch_a}
    assert {k: channels[k] for k in bad} == {k: [c] for k, (c, _) in bad.items()}
    learning = [d for (m, _), d in verdicts.items() if m == 3]
    assert [d for d in learning if d["is_anomaly"]] == [verdicts[(3, 60)]]
    assert {d["reason"] for d in learning} == {LEARNING_NO_THRESHOLD, verdicts[(3, 60)]["reason"]}
    assert any(d["is_anomaly"] and d["reason"] is None for d in batch_p), "calibrated: alarms"


def test_a_late_reading_is_flagged_only_by_a_data_fault_or_the_sanity_rule() -> None:
    from iot_fed.analytics.live_state import OUT_OF_ORDER

    df = make_readings(motes=1, per_mote=60, seed=8)
    bundle = make_bundle(df, seed=1)
    _, history = score_mote(
        bundle, VERSION, DeviceHistory.empty(), decode_records(_kafka_records(df, 0), 1 << 20)
    )
    late = df.iloc[[10, 20]].copy()
    late.loc[late.index[1], "voltage"] = 2.0
    out, _ = score_mote(bundle, VERSION, history, decode_records(_kafka_records(late, 60), 1 << 20))
    assert out["reason"].tolist() == [OUT_OF_ORDER, "sanity:voltage 2 < 2.3"]
    assert out["flag"].tolist() == [False, True]


def _streamed_steps(bundle, df: pd.DataFrame, chunk: int, resend: int = 0) -> pd.DataFrame:
    """The scorer's whole stateful step (:func:`step_mote`), its state string threaded
    through micro-batches of ``chunk`` as Spark keeps it; ``resend``: each micro-batch
    after the first also carries the previous one's last ``resend`` records again."""
    frames = []
    for mote, part in df.sort_values(["moteid", "epoch"]).groupby("moteid"):
        text = None
        for i in range(0, len(part), chunk):
            lo = max(0, i - resend) if i else 0
            decoded = decode_records(_kafka_records(part.iloc[lo : i + chunk], lo), 1 << 20)
            history, incidents = DeviceHistory.empty(), None
            if text:
                state = load_state(text)
                history, incidents = state.histories.histories()[0], state.incidents[0]
            out, history, incidents = step_mote(
                bundle, VERSION, history, incidents, decoded, QUIET_S
            )
            one = np.array([mote], np.int64)
            text = state_bytes(BucketState(one, one, HistoryColumns.of([history]), [incidents]))
            frames += out
    return pd.concat(frames, ignore_index=True)


def _batch_incidents(scored: pd.DataFrame) -> dict[str, dict]:
    docs = {}
    for mote, part in scored.groupby("moteid"):
        docs.update({d["_id"]: d for d in advance(int(mote), None, part, QUIET_S)[1]})
    return docs


def _faulty_readings(seed: int) -> pd.DataFrame:
    """On top of the helpers' spikes: mote 1 stuck, then a fault and a silent half hour
    (stale), mote 2 a dying battery, mote 3 a fault at the end (open)."""
    df = make_readings(motes=3, per_mote=240, seed=seed)
    one, two, three = (df["moteid"] == m for m in (1, 2, 3))
    df.loc[one & df["epoch"].between(100, 115), "temperature"] = 30.0
    df.loc[one & df["epoch"].between(135, 139), "temperature"] += 40.0
    df.loc[two & df["epoch"].between(150, 160), "voltage"] = 2.2
    df.loc[three & df["epoch"].between(234, 239), "temperature"] += 40.0
    return df[~(one & df["epoch"].between(140, 200))].reset_index(drop=True)


def test_the_same_incidents_from_batch_and_stream() -> None:
    df = _faulty_readings(9)
    bundle = make_bundle(df, seed=1)
    batch = _batch_incidents(score_devices(bundle, float(bundle.threshold), df, VERSION))
    out = _streamed_steps(bundle, df, 13)
    stream: dict[str, dict] = {}
    for text in out.loc[out["kind"] == "incident", "incident"]:  # the newest of each id
        doc = json.loads(text)
        stream[doc["_id"]] = doc
    assert stream == batch
    states = {d["state"] for d in batch.values()}
    assert {"open", "resolved", "stale"} <= states, states
    types = {d["fault_type"] for d in batch.values() if d["moteid"] == 2}
    assert "battery" in types
    # fewer incidents than alarms: an episode's flagged readings are one incident
    assert len(batch) < int(out["flag"].fillna(False).astype(bool).sum())


def test_stored_incidents_are_the_same_and_resent_readings_change_nothing(
    mongo_db: Database,
) -> None:
    """Through the paths' writers: the stream's ``store_batch`` (with re-sent records in
    every micro-batch) and the batch asset's task, into ``incidents``."""
    df = _faulty_readings(10)
    bundle = make_bundle(df, seed=2)

    def stored() -> dict[str, dict]:
        skip = {"updated_at", "source"}
        return {
            d["_id"]: {k: v for k, v in d.items() if k not in skip}
            for d in mongo_db.incidents.find()
        }

    out = _streamed_steps(bundle, df, 11, resend=4)
    for lo in range(0, len(out), 50):  # the driver's micro-batches
        store_batch(mongo_db, out.iloc[lo : lo + 50], QUIET_S)
    from_stream = stored()
    scored = score_devices(bundle, float(bundle.threshold), df, VERSION)
    mongo_db.incidents.delete_many({})
    for mote, part in scored.groupby("moteid"):
        upsert_incidents(mongo_db, advance(int(mote), None, part, QUIET_S)[1], source="batch")
    close_due_incidents(mongo_db, int(scored["ts_ms"].max()), QUIET_S)
    assert stored() == from_stream and from_stream
    # the whole stream once more (a replay, a producer sending everything again): no change
    for lo in range(0, len(out), 50):
        store_batch(mongo_db, out.iloc[lo : lo + 50], QUIET_S)
    assert stored() == from_stream
    # an older revision written late never takes an incident back
    first = {}
    for text in out.loc[out["kind"] == "incident", "incident"]:
        first.setdefault(json.loads(text)["_id"], json.loads(text))
    upsert_incidents(mongo_db, list(first.values()), source="late")
    assert stored() == from_stream


class _State:
    """The ``GroupState`` calls of the stateful function."""

    def __init__(self) -> None:
        self.value, self.hasTimedOut, self.now = None, False, 0

    exists = property(lambda self: self.value is not None)
    get = property(lambda self: self.value)

    def update(self, value) -> None:
        self.value = value

    def remove(self) -> None:
        self.value = None

    def setTimeoutDuration(self, ms: int) -> None:  # noqa: N802 (pyspark's name)
        pass

    def getCurrentProcessingTimeMs(self) -> int:  # noqa: N802
        return self.now


def test_a_bucket_of_motes_is_scored_as_each_mote_alone(monkeypatch) -> None:
    """The bucketed stateful function (all motes in ONE group, one ``score_many`` call
    per micro-batch) gives each mote the predictions and incidents of its own step; a
    mote silent for the timeout starts again from an empty history."""
    import iot_fed.analytics.live_state as live_state

    df = _faulty_readings(9)
    bundle = make_bundle(df, seed=1)

    class Model:
        def current(self):
            return VERSION, bundle

    monkeypatch.setattr(live_state, "executor_model", lambda *_: Model())
    run = live_state.stateful_scorer(None, 1 << 20, 1.0, 60_000, QUIET_S)
    state, frames = _State(), []
    parts = [p for _, p in df.sort_values(["moteid", "epoch"]).groupby("moteid")]
    for i in range(0, max(len(p) for p in parts), 13):
        raw = pd.concat([_kafka_records(p.iloc[i : i + 13], i) for p in parts], ignore_index=True)
        raw["gkey"] = [int(k) for k in raw["key"]]
        frames += list(run((0,), iter([raw]), state))
    got = pd.concat(frames, ignore_index=True)
    want = _streamed_steps(bundle, df, 13)
    key = ["moteid", "epoch"]
    g = got[got["kind"] == "prediction"].sort_values(key).reset_index(drop=True)
    w = want[want["kind"] == "prediction"].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        g[[*key, "score", "flag", "reason"]], w[[*key, "score", "flag", "reason"]]
    )
    incidents = lambda f: sorted(f.loc[f["kind"] == "incident", "incident"])  # noqa: E731
    assert incidents(got) == incidents(want) and incidents(got)
    assert load_state(state.value[0]).motes.tolist() == [1, 2, 3]
    # mote 1 silent past the timeout: its state is gone at the bucket's next call
    state.now = 120_000
    late = df[df["moteid"] == 2].iloc[-1:].assign(epoch=10_000)
    raw = _kafka_records(late, 99_999).assign(gkey=2)
    list(run((0,), iter([raw]), state))
    assert load_state(state.value[0]).motes.tolist() == [2]
