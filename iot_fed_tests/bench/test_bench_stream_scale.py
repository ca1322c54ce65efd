"""``bench/bench_stream_scale.py --quick``: 200 devices for 15 s through real ingesters and
the streaming scorer, per configuration (1x1, 2x2), against the session's Kafka and MongoDB
server. Every reading produced is landed once and scored once; every stage's cost and the
extrapolation are reported (their values are never asserted)."""

from __future__ import annotations

import pytest

from iot_fed.analytics.jars import install_spark_jars
from iot_fed.config import Settings
from iot_fed_tests.bench.helpers import run_quick
from iot_fed_tests.conftest import Services


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_tiny_stream_scale_run_lands_and_scores_every_reading(
    services: Services, settings: Settings
) -> None:
    install_spark_jars(settings)  # the scorer's connectors (cached)
    result = run_quick("bench_stream_scale.py", "stream_scale", timeout_s=1100)
    rows = result["configs"]["rows"]
    assert [r["config"] for r in rows] == ["1x1", "2x2"]
    for r in rows:
        assert r["produced"] == 200 * 15, r
        assert r["landed"] == r["produced"] and r["scored"] == r["produced"], r
        assert r["p50_ms"] is not None and r["p99_ms"] >= r["p50_ms"], r
        assert set(r["cpu_s_per_1000"]) >= {"ingesters", "scorer", "mongodb", "producer"}, r
    assert [e["config"] for e in result["extrapolation"]["rows"]] == ["1x1", "2x2"]
