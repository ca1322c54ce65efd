"""A Spark standalone cluster on loopback for tests: one master and N workers started from
the pyspark package's own ``bin/spark-class``, small memory, one core each; a worker (with
its executor JVM and Python workers: one process group) can be killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).parent
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
DAEMON_MEMORY = "256m"  # the master's and the workers' own JVMs
WORKER_MEMORY = "768m"  # what a worker offers its executor (spark.executor.memory fits)
EXECUTOR_MEMORY = "512m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"port {port} did not open in {timeout}s: {log.read_text()[-2000:]}")


def cluster_env() -> dict[str, str]:
    """The environment of the cluster's JVMs and of a driver that uses it."""
    return {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
        "SPARK_EXECUTOR_MEMORY": EXECUTOR_MEMORY,
        "SPARK_NO_DAEMONIZE": "1",
    }


@dataclass
class SparkCluster:
    """A running master and its workers (``workers[i]``: a process-group leader)."""

    work: Path
    master_port: int = 0
    master: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        log = self.work / f"{name}.log"
        return subprocess.Popen(
            [str(SPARK_HOME / "bin" / "spark-class"), *args],
            env=cluster_env(),
            cwd=self.work,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the worker, executor, Python
        )

    def start(self, n_workers: int, timeout: float = 120.0) -> SparkCluster:
        self.work.mkdir(parents=True, exist_ok=True)
        self.master_port = free_port()
        self.master = self._start(
            "master",
            MASTER_CLASS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.master_port),
            "--webui-port",
            str(free_port()),
        )
        _wait_port(self.master_port, timeout, self.master, self.work / "master.log")
        for i in range(n_workers):
            port = free_port()
            worker = self._start(
                f"worker{i}",
                WORKER_CLASS,
                self.url,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(free_port()),
                "--cores",
                "1",
                "--memory",
                WORKER_MEMORY,
                "--work-dir",
                str(self.work / f"worker{i}"),
            )
            self.workers.append(worker)
            _wait_port(port, timeout, worker, self.work / f"worker{i}.log")
        return self

    def executor_pids(self, i: int) -> list[int]:
        """The executor JVMs worker ``i`` launched (its process group, but itself)."""
        pgid = self.workers[i].pid
        out = subprocess.run(["ps", "-ww", "-eo", "pid,pgid,args"], capture_output=True, text=True)
        return [
            int(cols[0])
            for cols in (line.split(None, 2) for line in out.stdout.splitlines()[1:])
            if len(cols) == 3
            and int(cols[1]) == pgid
            and int(cols[0]) != pgid
            and "CoarseGrainedExecutorBackend" in cols[2]
        ]

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i``, its executor JVM and its Python workers at once."""
        os.killpg(self.workers[i].pid, signal.SIGKILL)
        self.workers[i].wait(30)

    def stop(self) -> None:
        for proc in [*self.workers, self.master]:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, self.master]:
            if proc is None:
                continue
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
