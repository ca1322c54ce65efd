"""The scorer's checkpoint: one made with another state-partition count is refused with
the reason and the reset command; the reset starts from the committed offsets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iot_fed.analytics.checkpoint import (
    META_FILE,
    CheckpointMismatchError,
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
