"""The replay producer: exact counts, clean SIGTERM, pacing, loop semantics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iot_fed.config import Settings
from iot_fed.stream.messages import decode_value
from iot_fed.stream.producer import LOOP_GAP_NS, ReplayData, replay
from iot_fed_tests.stream.helpers import end_offsets, produce_raw, read_topic, readings_frame

IOT_FED = [sys.executable, "-m", "iot_fed.cli"]


def test_loop_shifts_epoch_and_ts() -> None:
    df = readings_frame(10, motes=2)
    data = ReplayData.from_frame(df)
    recs = [r for _, r in zip(range(25), data.records(loop=True), strict=False)]
    first, second, third = recs[0][2], recs[10][2], recs[20][2]
    assert (second["moteid"], second["epoch"]) == (first["moteid"], first["epoch"] + 5)
    assert third["epoch"] == first["epoch"] + 10
    shift = data.span_ns + LOOP_GAP_NS
    assert recs[10][0] - recs[0][0] == shift and recs[20][0] - recs[0][0] == 2 * shift
    keys = {(r["moteid"], r["epoch"]) for _, _, r in recs}
    assert len(keys) == 25


def test_replay_order_is_by_time_and_drops_non_finite() -> None:
    df = readings_frame(6, motes=3).iloc[::-1]
    df.loc[df.index[0], "light"] = float("nan")
    data = ReplayData.from_frame(df)
    assert len(data) == 5 and data.ts_ns == sorted(data.ts_ns)


def _env(settings: Settings, topic: str) -> dict[str, str]:
    return {
        **os.environ,
        "IOT_FED_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "IOT_FED_KAFKA_TOPIC": topic,
    }


def _parquet(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "clean.parquet"
    readings_frame(n, motes=6).to_parquet(path, index=False)
    return path


@pytest.mark.services
def test_cli_limit_sends_exactly_n(settings: Settings, kafka_topic: str, tmp_path: Path) -> None:
    path = _parquet(tmp_path, 100)
    out = subprocess.run(
        [*IOT_FED, "stream", "--path", str(path), "--limit", "37", "--rate", "0"],
        env=_env(settings, kafka_topic),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["sent"] == stats["delivered"] == 37
    msgs = read_topic(settings, kafka_topic)
    assert len(msgs) == 37
    for m in msgs:
        reading, reason = decode_value(m.value(), settings.kafka_max_message_bytes, m.key())
        assert reason is None and m.key() == str(reading["moteid"]).encode()


@pytest.mark.services
def test_cli_sigterm_flushes_and_exits_zero(
    settings: Settings, kafka_topic: str, tmp_path: Path
) -> None:
    path = _parquet(tmp_path, 50)
    proc = subprocess.Popen(
        [*IOT_FED, "stream", "--path", str(path), "--loop", "--rate", "300"],
        env=_env(settings, kafka_topic),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180  # a loaded machine can take a minute to start it
        while sum(end_offsets(settings, kafka_topic).values()) < 80:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the producer never delivered 80 readings"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    stats = json.loads(stdout.strip().splitlines()[-1])
    assert stats["stopped_by_signal"] and stats["failed"] == 0
    assert stats["sent"] == stats["delivered"] >= 80
    msgs = read_topic(settings, kafka_topic)
    assert len(msgs) == stats["sent"]  # every record reported sent is in the topic
    keys = {(r["moteid"], r["epoch"]) for r in (json.loads(m.value()) for m in msgs)}
    assert len(keys) == len(msgs)  # looping keeps (moteid, epoch) unique


@pytest.mark.services
def test_rate_is_paced(settings: Settings, kafka_topic: str) -> None:
    data = ReplayData.from_frame(readings_frame(200))
    t0 = time.monotonic()
    stats = replay(settings, data, topic=kafka_topic, rate=100, limit=50)
    elapsed = time.monotonic() - t0
    assert stats.sent == stats.delivered == 50
    assert elapsed >= 0.45  # paced: 50 records at 100/s have due times spanning 0.49 s


@pytest.mark.services
def test_speedup_follows_data_timing(settings: Settings, kafka_topic: str) -> None:
    df = readings_frame(20, motes=1)  # one reading per 31 s: 19 gaps = 589 s of data
    data = ReplayData.from_frame(df)
    t0 = time.monotonic()
    replay(settings, data, topic=kafka_topic, speedup=1000.0)
    assert time.monotonic() - t0 >= 0.55  # 589 s of data at 1000x


def test_stream_parser_defaults() -> None:
    from iot_fed.cli import build_parser

    args = build_parser().parse_args(["stream"])
    assert args.rate is None and not args.loop and args.limit is None


@pytest.mark.services
def test_consume_prints_the_wire_format(
    settings: Settings, kafka_topic_factory, tmp_path: Path
) -> None:
    """A message copied from ``iot-fed consume`` is accepted when produced again."""
    src, dst = kafka_topic_factory(1), kafka_topic_factory(1)
    data = ReplayData.from_frame(readings_frame(3, motes=3))
    assert replay(settings, data, topic=src, rate=0).ok
    out = subprocess.run(
        [*IOT_FED, "consume", "--topic", src, "--max", "3", "--timeout", "20"],
        env=_env(settings, src),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("0@")]
    assert len(lines) == 3
    where, key, value = lines[0].split(" ", 2)
    assert key.startswith("key=") and json.loads(value)["schema_version"] == 1
    original = read_topic(settings, src)[0]
    assert value.encode() == original.value()  # byte for byte as on the wire
    produce_raw(settings, dst, [(key[4:].encode(), value.encode())])
    (copied,) = read_topic(settings, dst)
    reading, reason = decode_value(copied.value(), settings.kafka_max_message_bytes, copied.key())
    assert reason is None and reading["moteid"] == json.loads(value)["moteid"]
