"""Every MongoDB command of every Python process started with this folder on PYTHONPATH
(``bench_fed_scale.py`` gives it to ``dagster-daemon``: its code server, its forkserver
and every run worker forked from it), one line each in ``$IOT_FED_BENCH_COMMAND_LOG/<pid>.tsv``:
``time, command, database``. A global ``pymongo`` listener, so the product's code runs
unchanged; without the variable nothing is registered."""

from __future__ import annotations

import os
import time

_DIR = os.environ.get("IOT_FED_BENCH_COMMAND_LOG")


def _register(folder: str) -> None:
    from pymongo import monitoring

    class CommandLog(monitoring.CommandListener):
        """Appends one line per command started, to the file of the calling process (a
        forked child writes its own: the pid is read per command)."""

        def __init__(self) -> None:
            self.pid, self.fd = -1, -1

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if os.getpid() != self.pid:
                self.pid = os.getpid()
                path = os.path.join(folder, f"{self.pid}.tsv")
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            line = f"{time.time():.6f}\t{event.command_name}\t{event.database_name}\n"
            os.write(self.fd, line.encode())  # one O_APPEND write: whole lines across threads

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    monitoring.register(CommandLog())


if _DIR:
    _register(_DIR)
