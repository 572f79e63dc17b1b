"""Issue 20, item 3: the committed log of `shipml serve --workers 2` on SQLite goes through one host writer process.

- The writer SIGKILLed under load: every answer is a 200 (the workers commit their own rows until it is back), every
  id answered is stored once, the file is intact, and a new writer takes over.
- ``store.sqlite_synchronous`` FULL and NORMAL, what each survives (one service under strace per level):
  - a process kill (SIGKILL of every process of the service under load): every id answered 200 is stored, both;
  - an OS crash cannot be caused here, so the test shows the order of the system calls instead: with FULL the WAL
    frames holding a row are synced (fdatasync/fsync) before the HTTP answer naming that row is sent; with NORMAL
    the answer is sent with those frames not synced, so an OS crash or power loss may lose them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.reliability.load import (
    Load,
    auth,
    batch_body,
    children,
    figure,
    host_writer_pid,
    integrity_check,
    metric,
    predict_body,
    predict_load,
    store_rows,
    wait_for_workers,
)
from tests.support.components import missing
from tests.support.server import Keys, Server, free_port, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def test_the_host_writer_killed_under_load_loses_nothing_and_comes_back(store_project: tuple[Path, Keys]) -> None:
    root, keys = store_project
    db = root / "host-writer-killed.db"
    uri = f"sqlite:///{db}"
    server = start_server(root, "--workers", "2", env={"SHIPML_STORE__URI": uri})
    try:
        wait_for_workers(server, 2)
        writer = host_writer_pid(server)
        assert writer is not None, "no host writer process"
        singles = predict_load(server, keys.predict, threads=3, rate=150, duration_s=8).start()
        batches = Load(server.url, lambda i: ("POST", "/predict/batch", batch_body(i)), auth(keys.predict),
                       threads=1, rate=5, duration_s=8).start()  # fmt: skip
        time.sleep(3)
        os.kill(writer, signal.SIGKILL)
        _until(lambda: host_writer_pid(server) not in (None, writer), 30, "a new host writer")
        result_s, result_b = singles.wait(), batches.wait()
        after = predict_load(server, keys.predict, threads=2, max_requests=100, duration_s=30).run()
        fallbacks = metric(server, "shipml_store_host_writer_fallbacks_total")
    finally:
        assert server.stop() == 0
    answers = result_s.answers + result_b.answers + after.answers
    acknowledged = result_s.acknowledged_ids() + result_b.acknowledged_ids() + after.acknowledged_ids()
    stored = store_rows(root, acknowledged, uri)
    integrity = integrity_check(db)
    log = server.log.read_text()
    figure(
        "host writer SIGKILL", answers=len(answers), statuses=sorted({a.status for a in answers}),  # type: ignore[arg-type]
        acknowledged=len(acknowledged), acknowledged_present=len(stored), integrity=integrity,
        commits_by_the_workers_themselves=fallbacks,
    )  # fmt: skip
    assert fallbacks > 0  # counted: the workers committed their own rows while the writer was down
    assert {a.status for a in answers} == {200}  # no request failed: the workers committed their own rows
    assert len(set(acknowledged)) == len(acknowledged)
    assert len(stored) == len(acknowledged)
    assert integrity == "ok"
    assert "host_writer_exited" in log and "signal 9" in log


@dataclass(frozen=True)
class Call:
    """One system call in strace's output: where it entered and where it returned (line numbers)."""

    name: str
    args: str
    entered: int
    returned: int


def calls(trace: str) -> list[Call]:
    """The calls of ``strace -f`` output, an interrupted call (``<unfinished ...>``, then ``<... resumed>``) as one."""
    out: list[Call] = []
    open_calls: dict[tuple[str, str], tuple[str, int]] = {}
    for n, line in enumerate(trace.splitlines()):
        resumed = re.match(r"(\d+)\s+<\.\.\. (\w+) resumed>", line)
        if resumed:
            pid, name = resumed.groups()
            args, entered = open_calls.pop((pid, name), ("", n))
            out.append(Call(name, args, entered, n))
            continue
        call = re.match(r"(\d+)\s+(\w+)\((.*)", line)
        if call is None:
            continue
        pid, name, args = call.groups()
        if args.endswith("<unfinished ...>"):
            open_calls[(pid, name)] = (args, n)
        else:
            out.append(Call(name, args, n, n))
    return out


def serve_traced(root: Path, synchronous: str) -> tuple[subprocess.Popen[bytes], Server, Path, Path]:
    """`shipml serve --workers 2` under strace (following every process: the workers and the host writer), ready:
    strace's process, the server, its store file and the trace."""
    if shutil.which("strace") is None:
        missing("strace (Debian's package) is not installed")
    db = root / f"levels-{synchronous}.db"
    trace = root / f"levels-{synchronous}.strace"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPML_")}
    env |= {"SHIPML_STORE__URI": f"sqlite:///{db}", "SHIPML_STORE__SQLITE_SYNCHRONOUS": synchronous}
    argv = ["strace", "-f", "--seccomp-bpf", "-yy", "-s", "65536", "-o", str(trace),
            "-e", "trace=fsync,fdatasync,write,pwrite64,writev,pwritev,sendto,sendmsg",
            str(Path(sys.executable).parent / "shipml"), "serve", "--port", str(port), "--workers", "2"]  # fmt: skip
    log = root / f"levels-{synchronous}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        server.wait_ready(timeout=180)
    except BaseException:
        proc.kill()
        raise
    return proc, server, db, trace


def the_service(strace: subprocess.Popen[bytes]) -> list[int]:
    """Every process of the traced service: `shipml serve` (strace's child), its workers and its host writer."""
    serve = children(strace.pid)
    assert len(serve) == 1, serve
    return [serve[0], *children(serve[0])]


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_what_each_synchronous_level_survives(store_project: tuple[Path, Keys], synchronous: str) -> None:
    """One traced service per level: three predictions one after the other, whose system calls show when the WAL
    frames of each row were synced against when its answer was sent (see ``check_order``); then load, and a SIGKILL
    of every process of the service at once: every id answered 200 is stored at both levels (a commit's writes are
    in the OS's page cache, which a process kill does not touch; an OS crash does, hence the order)."""
    root, keys = store_project
    strace, server, db, trace = serve_traced(root, synchronous)
    try:
        # strace's child is `shipml serve`, whose children are the workers and the host writer
        assert any(b"host_writer" in Path(f"/proc/{p}/cmdline").read_bytes() for p in the_service(strace))
        ids = []
        for i in range(3):
            r = requests.post(f"{server.url}/predict", data=predict_body(i), timeout=30,
                              headers=auth(keys.predict) | {"Content-Type": "application/json"})  # fmt: skip
            assert r.status_code == 200, r.text
            ids.append(r.json()["prediction_id"])
        singles = predict_load(server, keys.predict, threads=3, rate=150, duration_s=6).start()
        batches = Load(server.url, lambda i: ("POST", "/predict/batch", batch_body(i)), auth(keys.predict),
                       threads=1, rate=5, duration_s=6).start()  # fmt: skip
        time.sleep(3)
        victims = the_service(strace)
        for pid in victims:  # every process of the service at once: none gets to flush or commit anything more
            os.kill(pid, signal.SIGKILL)
        result_s, result_b = singles.wait(), batches.wait()
        strace.wait(timeout=60)
    finally:
        if strace.poll() is None:
            strace.kill()
    acknowledged = ids + result_s.acknowledged_ids() + result_b.acknowledged_ids()
    stored = store_rows(root, acknowledged, f"sqlite:///{db}")
    integrity = integrity_check(db)
    figure(
        f"sqlite_synchronous={synchronous} SIGKILL of every process", processes=len(victims),  # type: ignore[arg-type]
        acknowledged=len(acknowledged), acknowledged_present=len(stored), integrity=integrity,
    )  # fmt: skip
    assert len(stored) == len(acknowledged)
    assert integrity == "ok"
    traced = calls(trace.read_text(errors="replace"))
    for prediction_id in ids:
        check_order(traced, prediction_id, synchronous)


def order(traced: list[Call], prediction_id: str) -> tuple[Call, Call, list[Call]]:
    """The first write of the row's WAL frames (its commit's), the send of its HTTP answer, and the WAL's syncs."""
    wal = [c for c in traced if "-wal>" in c.args.split(",")[0]]
    frames = [c for c in wal if c.name.startswith(("pwrite", "write")) and prediction_id in c.args]
    answers = [c for c in traced if c.name in ("sendto", "sendmsg", "write", "writev") and "TCP" in c.args.split(",")[0]
               and prediction_id in c.args]  # fmt: skip
    assert frames, f"no WAL write holds {prediction_id}"
    assert answers, f"no HTTP answer names {prediction_id}"
    syncs = [c for c in wal if c.name in ("fsync", "fdatasync")]
    # the first: later commits write the same pages again (a page holds many rows)
    return frames[0], answers[0], syncs


def check_order(traced: list[Call], prediction_id: str, synchronous: str) -> None:
    """FULL: the row's WAL frames are synced before its answer is sent, so a row answered 200 survives an OS crash or
    a power loss. NORMAL: the answer is sent while they are only in the OS's page cache; the WAL is synced at a
    checkpoint only (when it passes SQLite's wal_autocheckpoint, 1,000 pages), so such a crash may lose every commit
    since the last one.

    Why strace shows it: strace stops each traced call at its entry and at its return, and prints a call that another
    process's calls interrupted as ``<unfinished ...>`` then ``<... resumed>``: its output is in the order the calls
    entered and returned. The fdatasync of the WAL returns, then the host writer answers the worker, which then sends
    the HTTP answer: so the sync's return precedes the answer's entry in the output, and the row's frames (written by
    pwrite64, their bytes printed whole with ``-s``) precede the sync. ``--seccomp-bpf`` stops only the traced calls.
    """
    frames, answer, syncs = order(traced, prediction_id)
    between = [s for s in syncs if frames.returned < s.entered and s.returned < answer.entered]
    figure(f"sqlite_synchronous={synchronous}", id=prediction_id, wal_syncs_between_frames_and_answer=len(between))  # type: ignore[arg-type]
    if synchronous == "FULL":
        assert between, f"{prediction_id}: answered before its WAL frames were synced"
    else:
        assert [s for s in syncs if frames.returned < s.returned and s.entered < answer.entered] == []
