"""PID bookkeeping on real processes: a recycled PID is never mistaken for ours."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from iot_fed.services.process import (
    ProcessRecord,
    current_process,
    is_alive,
    log_tail,
    start_detached,
    stop,
)


def test_start_stop_detached_process(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import time; print('hello', flush=True); time.sleep(60)"]
    rec = start_detached("sleeper", cmd, tmp_path / "s.log", cwd=tmp_path)
    try:
        assert is_alive(rec)
        assert os.getpgid(rec.pid) == rec.pid  # own session, outlives the caller
        rec.save(tmp_path / "rec.json")
        assert ProcessRecord.load(tmp_path / "rec.json") == rec
        for _ in range(100):
            if log_tail(tmp_path / "s.log") == "hello":
                break
            time.sleep(0.1)
    finally:
        assert stop(rec, timeout=10)
    assert not is_alive(rec)
    assert stop(rec) is False
    assert log_tail(tmp_path / "s.log") == "hello"  # only output since the start marker


def test_recycled_pid_is_not_ours() -> None:
    me = current_process("me")
    assert is_alive(me)
    # Same PID, different start time or command line: some other process now.
    assert not is_alive(dataclasses.replace(me, start_ticks=me.start_ticks + 1))
    assert not is_alive(dataclasses.replace(me, cmdline=["something", "else"]))
    assert stop(dataclasses.replace(me, start_ticks=me.start_ticks + 1)) is False  # not signalled


def test_missing_record_file_loads_as_none(tmp_path: Path) -> None:
    assert ProcessRecord.load(tmp_path / "nope.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert ProcessRecord.load(tmp_path / "bad.json") is None
