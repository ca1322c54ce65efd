"""The scorer's checkpoint: one made with another state-partition count is refused with
the reason and the reset command; the reset starts from the committed offsets."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from iot_fed.analytics.checkpoint import (
    META_FILE,
    CheckpointMismatchError,
    check_checkpoint,
    checkpoint_location,
    reset_checkpoint,
)
from iot_fed.analytics.streaming import start_streaming_evaluation, streaming_evaluation
from iot_fed_tests.analytics.helpers import make_bundle, make_readings, store_global
from iot_fed_tests.stream.helpers import produce_readings


def test_other_partition_count_refused_and_reset_resumes_at_committed_offsets(
    spark, analytics_settings, mongo_db, kafka_topic
):
    df = make_readings(motes=3, per_mote=30)
    store_global(mongo_db, make_bundle(df, seed=3))
    first, later = df.iloc[:60], df.iloc[60:]
    two = analytics_settings.model_copy(update={"scorer_state_partitions": 2})
    produce_readings(two, kafka_topic, first)
    counts = streaming_evaluation(
        spark, two, topic=kafka_topic, checkpoint_name="cp", timeout_s=300
    )
    assert counts.records == len(first)

    one = analytics_settings.model_copy(update={"scorer_state_partitions": 1})
    with pytest.raises(CheckpointMismatchError) as err:
        start_streaming_evaluation(spark, one, topic=kafka_topic, checkpoint_name="cp")
    message = str(err.value)
    assert "made with 2 state partitions" in message
    assert "IOT_FED_SCORER_STATE_PARTITIONS=1" in message
    assert "iot-fed spark-stream --checkpoint cp --reset-checkpoint" in message

    got = reset_checkpoint(spark, one, "cp")
    assert got["reset"] and sum(got["starting_offsets"][kafka_topic].values()) == len(first)
    meta = json.loads((Path(checkpoint_location(one, "cp")) / META_FILE).read_text())
    assert meta["state_partitions"] == 1

    produce_readings(one, kafka_topic, later)
    counts = streaming_evaluation(
        spark, one, topic=kafka_topic, checkpoint_name="cp", timeout_s=300
    )
    assert counts.records == len(later)  # from the committed offsets, not the earliest
    assert mongo_db["predictions"].count_documents({}) == len(df)


def test_a_per_mote_checkpoint_and_other_buckets_are_refused(spark, analytics_settings):
    """A checkpoint from before the buckets (no iot_fed.json: Spark's offsets say its
    partitions), one made with another bucket count and one of the previous bucket layout
    all name the difference."""
    old = Path(checkpoint_location(analytics_settings, "old"))
    (old / "offsets").mkdir(parents=True)
    conf = {"conf": {"spark.sql.shuffle.partitions": "1"}}
    (old / "offsets" / "0").write_text(f'v1\n{json.dumps(conf)}\n{{"t":{{"0":5}}}}\n')
    with pytest.raises(CheckpointMismatchError, match="state layout is per-mote"):
        check_checkpoint(spark, analytics_settings, "old")

    meta = check_checkpoint(spark, analytics_settings, "new")  # fresh: takes the settings
    assert meta.buckets == analytics_settings.scorer_buckets
    new = Path(checkpoint_location(analytics_settings, "new"))
    (new / "offsets").mkdir()
    (new / "offsets" / "0").write_text(f'v1\n{json.dumps(conf)}\n{{"t":{{"0":5}}}}\n')
    other = analytics_settings.model_copy(update={"scorer_buckets": 8})
    with pytest.raises(CheckpointMismatchError, match="IOT_FED_SCORER_BUCKETS=8"):
        check_checkpoint(spark, other, "new")
    # a checkpoint of the previous bucket layout (a pickled tuple per mote): refused, reset
    v1 = Path(checkpoint_location(analytics_settings, "v1"))
    (v1 / "offsets").mkdir(parents=True)
    (v1 / "offsets" / "0").write_text(f'v1\n{json.dumps(conf)}\n{{"t":{{"0":5}}}}\n')
    (v1 / META_FILE).write_text(json.dumps({**asdict(meta), "layout": "buckets-v1"}))
    with pytest.raises(CheckpointMismatchError, match="layout is buckets-v1.*reset-checkpoint"):
        check_checkpoint(spark, analytics_settings, "v1")
