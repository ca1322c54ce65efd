"""Structured Streaming from a real Kafka topic to predictions / dead letters in MongoDB."""

from __future__ import annotations

import json
import time

import pandas as pd

from iot_fed.analytics.streaming import (
    MODEL_REFRESH_S,
    start_streaming_evaluation,
    streaming_evaluation,
)
from iot_fed.stream.messages import encode_key, encode_reading
from iot_fed_tests.analytics.helpers import (
    expected_scores,
    make_bundle,
    make_readings,
    store_global,
)
from iot_fed_tests.stream.helpers import produce_raw, produce_readings

MALFORMED = [
    (b"1", b"{not json"),
    (b"2", json.dumps({"schema_version": 1, "moteid": 0}).encode()),
]


def _wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_available_now_scores_everything_and_skips_malformed(
    spark, analytics_settings, mongo_db, kafka_topic
):
    df = make_readings(motes=3, per_mote=40)
    g = make_bundle(df, seed=3)
    store_global(mongo_db, g)
    produce_readings(analytics_settings, kafka_topic, df.iloc[:60])
    produce_raw(analytics_settings, kafka_topic, MALFORMED)
    produce_readings(analytics_settings, kafka_topic, df.iloc[60:])

    counts = streaming_evaluation(
        spark,
        analytics_settings,
        topic=kafka_topic,
        checkpoint_name="avail",
        timeout_s=300,
    )
    assert (counts.records, counts.n, counts.skipped) == (len(df) + 2, len(df), 2)
    assert counts.inserted == len(df) and counts.model_versions == [1]

    preds = pd.DataFrame(list(mongo_db["predictions"].find({}, {"_id": 0})))
    assert len(preds) == len(df) and set(preds["source"]) == {"streaming"}
    preds = preds.sort_values(["moteid", "epoch"]).reset_index(drop=True)
    want = df.sort_values(["moteid", "epoch"]).reset_index(drop=True)
    scores, flags = expected_scores(g, want)  # Kafka keeps microseconds: same features
    assert abs(preds["score"] - scores).max() < 1e-5 * max(1.0, abs(scores).max())
    assert (preds["is_anomaly"].to_numpy() == flags).mean() > 0.99  # float32 ties only
    assert mongo_db["dead_letters"].count_documents({}) == 0  # ingestion owns dead letters
    assert all(p["kafka_ts"] <= p["scored_at"] for p in mongo_db["predictions"].find())
    assert all(len(p["channel_errors"]) == 4 for p in mongo_db["predictions"].find())
    flagged = preds[preds["is_anomaly"]]
    assert mongo_db["anomalies"].count_documents({}) == len(flagged) > 0
    a = mongo_db["anomalies"].find_one()
    assert a["channels"] and a["model_version"] == 1 and a["ratio"] > 1
    # every anomaly belongs to exactly one incident of its mote (written by the scorer)
    incidents = list(mongo_db["incidents"].find())
    assert 0 < len(incidents) <= len(flagged)
    assert {i["source"] for i in incidents} == {"streaming"}
    for a in mongo_db["anomalies"].find():
        inside = [
            i
            for i in incidents
            if i["moteid"] == a["moteid"] and i["start"] <= a["ts"] <= i["last_seen"]
        ]
        assert len(inside) == 1, a
    assert sum(i["n_flagged"] for i in incidents) == len(flagged)

    again = streaming_evaluation(
        spark, analytics_settings, topic=kafka_topic, checkpoint_name="avail", timeout_s=300
    )
    assert again.records == 0  # the checkpoint remembers the offsets


def test_newly_promoted_model_is_used_without_restart(
    spark, analytics_settings, mongo_db, kafka_topic
):
    df = make_readings(motes=2, per_mote=30)
    first, second = df.iloc[:30], df.iloc[30:]
    store_global(mongo_db, make_bundle(df, seed=4))
    preds = mongo_db["predictions"]
    run = start_streaming_evaluation(
        spark, analytics_settings, topic=kafka_topic, checkpoint_name="promote", trigger_seconds=0.5
    )
    try:
        produce_readings(analytics_settings, kafka_topic, first)
        _wait_for(lambda: preds.count_documents({}) == len(first), what="first predictions")
        assert store_global(mongo_db, make_bundle(df, seed=5)) == 2  # promoted
        # a worker's cached version is at most MODEL_REFRESH_S old: readings sent later
        # than that after the promotion are scored with the new one
        time.sleep(2 * MODEL_REFRESH_S)
        produce_raw(
            analytics_settings,
            kafka_topic,
            [(encode_key(r["moteid"]), encode_reading(r)) for r in second.to_dict("records")],
        )
        _wait_for(lambda: preds.count_documents({}) == len(df), what="second predictions")
    finally:
        run.stop()
    assert preds.count_documents({"model_version": 1}) == len(first)
    assert preds.count_documents({"model_version": 2}) == len(second)
    assert run.counts.model_versions == [1, 2]


def test_foreign_keys_never_stop_the_scorer_and_unkeyed_readings_are_scored_per_mote(
    spark, analytics_settings, mongo_db, kafka_topic
):
    """Keys a foreign producer may send: none at all (the reading is grouped by its own
    ``moteid`` and keeps its device's state), a non-integer or an out-of-range one (the
    record is skipped: ingestion dead-letters a key that does not match its ``moteid``).
    A plain cast of such a key failed every micro-batch under ANSI mode."""
    df = make_readings(motes=3, per_mote=40)
    g = make_bundle(df, seed=3)
    store_global(mongo_db, g)
    rows = df.to_dict("records")
    keyed = [(encode_key(r["moteid"]), encode_reading(r)) for r in rows if r["moteid"] != 3]
    unkeyed = [(None, encode_reading(r)) for r in rows if r["moteid"] == 3]
    extra = {**rows[0], "moteid": 9, "epoch": 5000, "ts": rows[0]["ts"] + pd.Timedelta(days=9)}
    # two moteids in one value: the standard JSON parsers take the last (9)
    twice = b'{"moteid":1,' + encode_reading(extra)[1:]
    bad_keys = [
        (b"x", encode_reading({**rows[0], "epoch": 1000})),
        (b"99999999999", encode_reading({**rows[1], "epoch": 1000})),
        (b"", encode_reading({**rows[2], "epoch": 1000})),
    ]
    produce_raw(analytics_settings, kafka_topic, keyed[:30] + bad_keys + unkeyed)
    produce_raw(analytics_settings, kafka_topic, [(None, twice)] + keyed[30:])

    counts = streaming_evaluation(
        spark, analytics_settings, topic=kafka_topic, checkpoint_name="keys", timeout_s=300
    )
    assert (counts.records, counts.n, counts.skipped) == (len(df) + 4, len(df) + 1, 3)
    preds = pd.DataFrame(list(mongo_db["predictions"].find({}, {"_id": 0})))
    assert preds.groupby("moteid").size().to_dict() == {1: 40, 2: 40, 3: 40, 9: 1}
    preds = preds[preds["moteid"] != 9].sort_values(["moteid", "epoch"]).reset_index(drop=True)
    want = df.sort_values(["moteid", "epoch"]).reset_index(drop=True)
    assert (preds["epoch"].to_numpy() == want["epoch"].to_numpy()).all()
    scores, _ = expected_scores(g, want)  # mote 3 unkeyed: the same series, the same state
    assert abs(preds["score"] - scores).max() < 1e-5 * max(1.0, abs(scores).max())


def test_readings_sent_again_keep_their_verdicts_and_a_late_one_gets_its_own(
    spark, analytics_settings, mongo_db, kafka_topic
):
    """A producer restarted from the start of its data sends readings already scored:
    scored again without context (``fallback:out_of_order``), their verdicts must not
    replace the stored ones. A reading that arrives late, never scored, is stored."""
    df = make_readings(motes=2, per_mote=40)
    store_global(mongo_db, make_bundle(df, seed=3))
    late = df.index[(df["moteid"] == 1) & (df["epoch"] == 20)]
    produce_readings(analytics_settings, kafka_topic, df.drop(late))
    first = streaming_evaluation(
        spark, analytics_settings, topic=kafka_topic, checkpoint_name="again", timeout_s=300
    )
    assert first.inserted == len(df) - 1
    fields = {"_id": 1, "score": 1, "is_anomaly": 1, "reason": 1, "scored_at": 1}
    before = {d["_id"]: d for d in mongo_db["predictions"].find({}, fields)}
    flagged = mongo_db["anomalies"].count_documents({})
    incidents = {d.pop("_id"): d for d in mongo_db["incidents"].find({}, {"updated_at": 0})}
    assert incidents

    produce_readings(analytics_settings, kafka_topic, df)  # all again, the late one too
    again = streaming_evaluation(
        spark, analytics_settings, topic=kafka_topic, checkpoint_name="again", timeout_s=300
    )
    after = {d["_id"]: d for d in mongo_db["predictions"].find({}, fields)}
    assert (again.n, again.inserted, again.kept, again.updated) == (len(df), 1, len(df) - 1, 0)
    assert {i: after[i] for i in before} == before
    (new_id,) = set(after) - set(before)
    assert new_id.startswith("1:") and after[new_id]["reason"] == "fallback:out_of_order"
    assert mongo_db["anomalies"].count_documents({}) == flagged + int(after[new_id]["is_anomaly"])
    # neither the readings sent again nor the late one open, extend or close an incident
    assert {d.pop("_id"): d for d in mongo_db["incidents"].find({}, {"updated_at": 0})} == (
        incidents
    )
