"""`shipml` processes started from a warm interpreter: forked by a fork server (multiprocessing's) that imported
shipml, MLflow, scikit-learn and the web stack once per test process, so a command or a server pays a fork instead
of seconds of imports.

Each one is a real process as a user's shell makes it: its own working directory, environment (replaced whole),
argv, stdout and stderr files, signals, exit code and process id; it runs the console script's entry point,
``shipml.cli.main``. What it does not repeat is the interpreter's start: imports, and what a module reads from the
environment when it is imported. So a process whose environment changes the interpreter itself (``PYTHON*``:
``PYTHONPATH`` with a ``sitecustomize``, for one) is started fresh, with ``subprocess``, as are those a test asks
fresh (``fresh=True``: the README tour and the usage errors run the installed script as it is).
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SHIPML = str(Path(sys.executable).parent / "shipml")

# What the commands and the service import (tests/support/warm_imports.py): loaded once in the fork server.
PRELOAD = ["tests.support.warm_imports"]
# Read by libraries when they are imported (rich's consoles: the width, colours), so never fixed in the server:
# a forked process reads them from its own environment.
_UNFIXED = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM", "TTY_COMPATIBLE", "TTY_INTERACTIVE")

_context = multiprocessing.get_context("forkserver")
_lock = threading.Lock()
_started: set[Any] = set()


def _needs_fresh(env: Mapping[str, str]) -> bool:
    return any(k.startswith("PYTHON") and os.environ.get(k) != v for k, v in env.items())


def _ensure_server() -> None:
    """The fork server, started once per test process with the modules above imported and without the variables
    that would be fixed at import."""
    saved = {k: os.environ.pop(k) for k in _UNFIXED if k in os.environ}
    try:
        _context.set_forkserver_preload(PRELOAD)
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.update(saved)


def _main(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str | None) -> None:
    """In the forked process: become `shipml ARGV` run in ``cwd`` with ``env``, writing to ``out`` and ``err``."""
    # multiprocessing closed stdin: a process has one (uvicorn hands it to its workers), here /dev/null
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, out, os.O_WRONLY | os.O_CREAT | os.O_APPEND),
                            (2, err or out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)):  # fmt: skip
        target = os.open(path, flags)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's stdin, open until it exits
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [SHIPML, *argv]
    from shipml.cli import main

    try:
        main()
    finally:
        atexit._run_exitfuncs()  # what the interpreter runs at a process's exit (multiprocessing's child does not)


class Forked:
    """A forked `shipml` process, with what tests use of ``subprocess.Popen``."""

    def __init__(self, process: Any) -> None:
        self._process = process
        self.pid: int = process.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._process.exitcode is not None:
            self.returncode = int(self._process.exitcode)
            _started.discard(self._process)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(SHIPML, timeout or 0)
        return int(self.returncode)  # type: ignore[arg-type]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], out: Path, err: Path | None = None, *, fresh: bool = False
) -> Forked | subprocess.Popen[bytes]:
    """`shipml ARGV` in ``cwd`` with exactly ``env``, stdout to ``out`` and stderr to ``err`` (or ``out``)."""
    if fresh or _needs_fresh(env):
        stdout = out.open("ab")
        stderr = err.open("ab") if err else None
        try:  # the child has its own copies of the descriptors
            return subprocess.Popen(
                [SHIPML, *argv], cwd=cwd, env=dict(env), stdout=stdout, stderr=stderr or subprocess.STDOUT
            )
        finally:
            stdout.close()
            if stderr:
                stderr.close()
    for path in (out, err):  # there to read even when the process dies before it writes
        if path is not None:
            path.touch()
    with _lock:
        _ensure_server()
        process = _context.Process(
            target=_main, args=(list(argv), str(cwd), dict(env), str(out), str(err) if err else None), daemon=False
        )
        process.start()
        _started.add(process)
    return Forked(process)


def warm_context() -> Any:
    """multiprocessing's context of the warm fork server above, started: for a test's own processes (a target
    function and its arguments) that need what the commands import, without a fresh interpreter's imports."""
    with _lock:
        _ensure_server()
    return _context


@atexit.register
def _kill_leftovers() -> None:
    """A process a failed test left running is killed when the test process ends (multiprocessing would wait
    for it)."""
    for process in list(_started):
        if process.exitcode is None:
            process.kill()
            process.join(10)
