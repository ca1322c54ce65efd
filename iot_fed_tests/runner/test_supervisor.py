"""The supervisor restarts a dying child with backoff, logs it, and stops all children."""

from __future__ import annotations

import sys
import threading
import time

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
