"""``bench/bench_shard_run.py --quick``: one tiny shard run timed stage by stage (counts and
presence of every figure, never their values). The benchmark starts the MongoDB server it
needs through the project's service manager (``manager.session``)."""

from __future__ import annotations

import pytest

from iot_fed_tests.bench.helpers import run_quick


@pytest.mark.services
@pytest.mark.slow
def test_a_tiny_shard_run_is_timed_stage_by_stage() -> None:
    section = run_quick("bench_shard_run.py", "shard_run", timeout_s=300)["shard_run"]
    assert section["readings"] == 60 * section["per_device"]
    row = section["rows"]["this"]
    assert row["devices"] == 60, "every seeded device of the shard was trained"
    calls = row["calls"]  # counts, not times: the stages ran as the round runs them
    assert calls["read"] == calls["features"] == calls["train"] == calls["save"] == 1
    assert calls["calibrate"] == 60  # one per device
    assert calls["newest_epoch_landed"] == 1 and calls["newest_epoch"] == 0  # no aggregation
    for stage in ("read", "features", "train", "calibrate", "save"):
        assert 0 <= row[stage] <= row["total_s"], stage
