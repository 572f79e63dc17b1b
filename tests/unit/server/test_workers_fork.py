"""`serve --workers N` forks its workers from the master (server/workers.py): a worker forgets the master's copy of
the host writer's pipe, the writer of the latest ``fork_workers``, however many times it was called in the process.
Run in a fresh interpreter: the at-fork hook cannot be removed, and the test processes must not carry it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import os, sys
from shipml.server import workers

class Writer:
    def __init__(self, name):
        self.name = name
    def forget_in_child(self):
        os.write(1, f"forgot {self.name}\\n".encode())

workers.MlflowRegistry.preload = lambda uri: None  # MLflow's imports: not what this is about
workers.fork_workers("unused", Writer("first"))
workers.fork_workers("unused", Writer("second"))
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_worker_forgets_the_writer_of_the_latest_fork_workers() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["forgot second"]
