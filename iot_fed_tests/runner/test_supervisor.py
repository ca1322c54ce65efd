"""The supervisor restarts a dying child with backoff, logs it, and stops all children."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from iot_fed.runner.supervisor import Child, Supervisor


def test_restart_with_backoff_and_stop(tmp_path):
    flaky = Child("flaky", [sys.executable, "-c", "print('up', flush=True); raise SystemExit(3)"])
    steady = Child("steady", [sys.executable, "-c", "import time; time.sleep(600)"])
    sup = Supervisor([flaky, steady], tmp_path, backoff_s=0.2, max_backoff_s=0.4)
    t = threading.Thread(target=sup.run, kwargs={"interval_s": 0.05})
    t.start()
    try:
        deadline = time.monotonic() + 30
        while sup.running[0].restarts < 3:
            assert time.monotonic() < deadline, "flaky was not restarted"
            time.sleep(0.05)
        pid = sup.pids()["steady"]
        assert pid is not None
    finally:
        sup.stop()
        t.join(30)
    assert not t.is_alive() and sup.pids() == {"flaky": None, "steady": None}
    assert (tmp_path / "flaky.log").read_text().count("up") >= 3
    import os

    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_batch_child_runs_nicer_than_the_supervisor(tmp_path):
    import os

    ours = os.getpriority(os.PRIO_PROCESS, 0)
    batch = Child("batch", [sys.executable, "-c", "import time; time.sleep(600)"], niceness=7)
    live = Child("live", [sys.executable, "-c", "import time; time.sleep(600)"])
    sup = Supervisor([batch, live], tmp_path)
    sup.poll()
    try:
        pids = sup.pids()
        assert os.getpriority(os.PRIO_PROCESS, pids["batch"]) == min(ours + 7, 19)
        assert os.getpriority(os.PRIO_PROCESS, pids["live"]) == ours
    finally:
        sup.shutdown()
    assert sup.pids() == {"batch": None, "live": None}


@pytest.mark.slow  # waits out the supervisor's grace period before it kills the grandchild
def test_processes_left_in_a_child_group_are_stopped(tmp_path):
    import os

    # the child starts a grandchild (like a run worker starting a Spark JVM) and exits
    # without it; on shutdown a grandchild that ignores SIGTERM is killed too
    spawn = (
        "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']);"
        "print(p.pid, flush=True)"
    )
    once = Child("once", [sys.executable, "-c", spawn], restart=False)
    sup = Supervisor([once], tmp_path)
    sup.poll()
    deadline = time.monotonic() + 30
    while not (tmp_path / "once.log").read_text().strip():
        assert time.monotonic() < deadline, "child did not start its grandchild"
        time.sleep(0.05)
    grandchild = int((tmp_path / "once.log").read_text().split()[0])
    while sup.pids()["once"] is not None:  # the leader exits; poll reaps its group
        assert time.monotonic() < deadline, "child did not exit"
        sup.poll()
        time.sleep(0.05)
    while True:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        try:
            with open(f"/proc/{grandchild}/stat") as f:  # killed, not yet reaped by init
                if f.read().split()[2] == "Z":
                    break
        except FileNotFoundError:
            break
        assert time.monotonic() < deadline, "grandchild survived its group's reaping"
        time.sleep(0.05)
