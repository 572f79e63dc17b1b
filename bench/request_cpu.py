"""Where a request's CPU goes: the server's CPU time per request, measured, and split stage by stage by a profile.

The figure is measured, not sampled: utime + stime of every thread of the server's processes (the master, each
worker, anything they started) from ``/proc``, before and after a wrk run, over the requests wrk completed. It
is split three ways, also measured: the workers' event-loop threads (where a request is parsed, checked,
predicted and answered), the workers' other threads (the prediction log's writer, its histograms) and the
other processes (uvicorn's master, a writer process if there is one).

The stages come from a second run of the same traffic with py-spy attached to every process of the server
(``--subprocesses``, sampling without pausing them, idle threads left out). Each sample's stack is read from
its innermost frame outwards; the first frame that ``STAGES`` names gives the stage. A stage's share of a part's
samples times that part's measured CPU is its time per request: the profile only divides what ``/proc``
measured. Stacks with no Python frame under the event loop (uvloop's own C code: sockets, callbacks) are the
"event loop and sockets" stage.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")

# The one table from functions to stages: (stage, file fragment, function regex or None). A frame takes the
# first row it matches; a sample takes the stage of its innermost frame that matches a row.
STAGES: list[tuple[str, str, str | None]] = [
    # HTTP parsing: uvicorn's protocol (httptools' parser is C called from data_received), shipml's read
    # deadline around it, the outer ASGI layers that read headers (Host check, admission) and the lane's header pass
    ("the answer", "uvicorn/protocols/http/", r"RequestResponseCycle\.send"),  # uvicorn writing it to the socket
    ("HTTP parsing", "uvicorn/protocols/http/", None),
    ("HTTP parsing", "httptools/", None),
    ("HTTP parsing", "h11/", None),
    ("HTTP parsing", "shipml/server/slow_clients.py", None),
    ("HTTP parsing", "shipml/server/hosts.py", None),
    ("HTTP parsing", "shipml/server/admission.py", None),
    ("HTTP parsing", "shipml/server/fast_lane.py", r"_headers"),
    ("auth", "shipml/server/http.py", r"authorize"),
    ("auth", "shipml/server/auth.py", None),
    ("auth", "shipml/server/ratelimit.py", None),
    ("auth", "hmac.py", None),
    ("body and JSON", "shipml/server/http.py", None),
    ("body and JSON", "shipml/server/protocols/shipml.py", r"one_record|routing_key|batch_records"),
    ("routing", "shipml/core/routing.py", None),
    ("routing", "shipml/server/model_manager.py", r"route|primary|deployment"),
    ("routing", "shipml/server/state.py", None),
    ("routing", "shipml/server/predictions.py", r"\.route|_split|_how"),
    ("validation", "shipml/core/records.py", None),
    ("validation", "shipml/core/validation", None),
    ("validation", "shipml/server/predictions.py", r"\.validate"),
    ("prediction", "shipml/core/fast/", None),
    ("prediction", "shipml/adapters/native", None),
    ("prediction", "shipml/core/predictor.py", None),
    ("prediction", "shipml/server/predictions.py", r"\.predict$"),
    ("histograms", "shipml/adapters/store/histogram", None),
    ("histograms", "shipml/core/histogram", None),
    ("histograms", "shipml/core/drift", None),
    ("log write and commit wait", "shipml/adapters/store/", None),
    ("log write and commit wait", "sqlalchemy/", None),
    ("log write and commit wait", "sqlite3/", None),
    ("log write and commit wait", "psycopg/", None),
    ("log write and commit wait", "shipml/server/predictions.py", r"Room\.|\.log$|_committed|_reserve|\.room$"),
    ("metrics", "prometheus_client/", None),
    ("metrics", "shipml/server/metrics.py", None),
    ("metrics", "shipml/server/predictions.py", r"\.count$"),
    ("the request's log line", "shipml/server/access.py", None),
    ("the request's log line", "shipml/server/logs.py", None),
    ("the request's log line", "structlog/", None),
    ("predictions (ids, objects)", "shipml/core/ids.py", None),
    ("predictions (ids, objects)", "shipml/core/prediction.py", r"__init__|Prediction$"),
    ("predictions (ids, objects)", "shipml/server/predictions.py", r"\.predictions$|_output_invalid|\.failed$"),
    ("the answer", "shipml/core/prediction.py", r"\.answer$"),  # its other methods: whoever called them
    ("the answer", "shipml/server/protocols/shipml.py", r"raise_for_invalid|model_of"),
    ("the answer", "shipml/server/errors.py", None),
    ("the answer", "shipml/server/fast_lane.py", r"__call__"),  # the lane's own lines: headers, orjson.dumps, send
    ("shadows", "shipml/server/shadows.py", None),
    ("the service's own code", "shipml/server/predictions.py", None),
    ("the service's own code", "shipml/server/protocols/shipml.py", None),
    ("event loop and sockets", "asyncio/", None),
    ("event loop and sockets", "uvloop/", None),
    ("event loop and sockets", "uvicorn/server.py", None),
    ("event loop and sockets", "uvicorn/_compat.py", None),
]
ORDER = [
    "HTTP parsing", "body and JSON", "auth", "routing", "validation", "prediction", "log write and commit wait",
    "histograms", "metrics", "the request's log line", "predictions (ids, objects)", "the answer", "shadows",
    "the service's own code", "event loop and sockets", "other",
]  # fmt: skip
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
EVENT_LOOP = "event loop thread"
OTHER_THREADS = "workers' other threads"
OTHER_PROCESSES = "other processes"
PARTS = (EVENT_LOOP, OTHER_THREADS, OTHER_PROCESSES)


def stage_of(frames: list[str]) -> str:
    """The stage of a sample, from its frames (outermost first, as py-spy writes them)."""
    for frame in reversed(frames):
        m = _FRAME.match(frame)
        if m is None:
            continue
        function, file = m["function"], m["file"]
        for stage, fragment, pattern in STAGES:
            if fragment in file and (pattern is None or re.search(pattern, function)):
                return stage
    return "other"


def processes(root: int) -> list[int]:
    """``root`` and every process under it."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                todo += [int(p) for p in task.read_text().split()]
            except OSError:
                continue
    return found


def cpu_by_part(root: int, workers: set[int]) -> dict[tuple[int, int], tuple[str, float, float]]:
    """CPU seconds (utime, stime) of every thread under ``root``, by (pid, tid), with the part it belongs to:
    a worker's (``workers``) first thread runs its event loop."""
    out: dict[tuple[int, int], tuple[str, float, float]] = {}
    for pid in processes(root):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tid = int(task.name)
            part = OTHER_PROCESSES if pid not in workers else EVENT_LOOP if tid == pid else OTHER_THREADS
            out[(pid, tid)] = (part, int(fields[11]) * TICK_S, int(fields[12]) * TICK_S)
    return out


def worker_pids(root: int) -> set[int]:
    """The uvicorn workers under ``root``: its forks (a child with its command line: ``shipml serve --workers N``)
    or multiprocessing's spawned processes (shipml before it forked its workers, for ``--cpu-against``); ``root``
    itself with one worker."""
    found = set()
    root_cmd = _cmdline(root)
    for pid in processes(root):
        cmd = _cmdline(pid)
        if pid != root and cmd and (cmd == root_cmd or b"spawn_main" in cmd):
            found.add(pid)
    return found or {root}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@dataclass
class CpuPerRequest:
    """Measured CPU µs per request, in all and by part, and how much of it the kernel's (stime)."""

    total_us: float
    parts_us: dict[str, float]
    kernel_us: float
    requests: int


def measure(root: int, load: Callable[[], int]) -> CpuPerRequest:
    """The server's CPU per request during ``load()`` (which returns the requests it completed)."""
    workers = worker_pids(root)
    before = cpu_by_part(root, workers)
    n = load()
    after = cpu_by_part(root, workers)
    parts: dict[str, float] = dict.fromkeys(PARTS, 0.0)
    kernel = 0.0
    for key, (part, user, system) in after.items():
        _, user0, system0 = before.get(key, (part, 0.0, 0.0))
        parts[part] += user - user0 + system - system0
        kernel += system - system0
    n = max(n, 1)
    per = {part: s / n * 1e6 for part, s in parts.items()}
    return CpuPerRequest(sum(per.values()), per, kernel / n * 1e6, n)


@dataclass
class Profile:
    """Samples by part and stage, from py-spy's raw output."""

    samples: dict[str, dict[str, int]] = field(default_factory=lambda: {p: defaultdict(int) for p in PARTS})
    unparsed: int = 0

    def add(self, frames: list[str], count: int, spawned: bool) -> None:
        self.samples[part_of(frames, spawned)][stage_of(frames)] += count

    def stages_us(self, cpu: CpuPerRequest) -> dict[str, float]:
        """Each stage's CPU µs per request: its share of each part's samples times the part's measured CPU."""
        out: dict[str, float] = defaultdict(float)
        for part, stages in self.samples.items():
            total = sum(stages.values())
            if not total:
                out["other"] += cpu.parts_us[part]
                continue
            for stage, n in stages.items():
                out[stage] += cpu.parts_us[part] * n / total
        return out


_PROCESS = re.compile(r'^(process \d+:"[^"]*";)+')


def part_of(frames: list[str], spawned: bool) -> str:
    """The part a sample belongs to; ``frames[0]`` holds py-spy's process frames. ``spawned``: the workers are
    processes of their own (``--workers 2``), else the server's one process is the worker."""
    if spawned and not _in_worker(frames[0]):
        return OTHER_PROCESSES
    return EVENT_LOOP if any("uvicorn/server.py" in f or "uvicorn/_compat.py" in f for f in frames) else OTHER_THREADS


_COMMAND = re.compile(r'process \d+:"([^"]*)";')


def _in_worker(processes: str) -> bool:
    """Whether py-spy's process frames (outermost first) end in a worker: a fork of the server's process (the same
    command line) or a multiprocessing spawn."""
    commands = _COMMAND.findall(processes)
    return "spawn_main" in processes or (len(commands) >= 2 and commands[-1] == commands[0])


def read_profile(text: str) -> Profile:
    """py-spy's ``--format raw`` output (``frame;frame;... count`` a line, outermost first)."""
    profile = Profile()
    spawned = False
    for line in text.splitlines():
        process = _PROCESS.match(line)
        if process and _in_worker(process.group(0)):
            spawned = True
            break
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            profile.unparsed += 1
            continue
        process = _PROCESS.match(stack)  # py-spy's frames of the process (its command line may hold a ';')
        commands = process.group(0) if process else ""
        profile.add([commands, *stack[len(commands) :].split(";")], int(count), spawned)
    return profile


def profile(root: int, load: Callable[[], object], py_spy: str, out: Path, rate: int = 400) -> Profile:
    """py-spy on every process under ``root`` (not paused: ``--nonblocking``) while ``load()`` runs.

    For this run only, every thread of the server, wrk (started by ``load``, inheriting this process's policy)
    and py-spy are ``SCHED_BATCH``: a thread they wake (wrk by an answer's write, the log's writer by a queued
    row) then does not preempt the thread that woke it, which would otherwise be sampled, GIL held, where it
    was preempted. It changes who runs when, not what each does."""
    argv = [py_spy, "record", "--pid", str(root), "--subprocesses", "--nonblocking", "--gil", "--rate", str(rate)]
    argv += ["--format", "raw", "--output", str(out)]
    threads = [(pid, int(t.name)) for pid in processes(root) for t in Path(f"/proc/{pid}/task").glob("*")]
    _policy(os.SCHED_BATCH, [0] + [tid for _, tid in threads])
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # attached to every process before the load starts
        load()
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        _, err = spy.communicate(timeout=60)
        _policy(os.SCHED_OTHER, [0] + [tid for _, tid in threads])
    if not out.exists():
        raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
    return read_profile(out.read_text())


def _policy(policy: int, tids: list[int]) -> None:
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setscheduler(tid, policy, os.sched_param(0))


def table(cpu: CpuPerRequest, prof: Profile) -> list[str]:
    """The CPU table's lines: per part, then per stage, µs per request and share."""
    lines = [
        f"  server CPU per request (all processes, {cpu.requests:,} requests): {cpu.total_us:,.1f} us"
        f" ({cpu.kernel_us:,.1f} us of it in the kernel)"
    ]
    for part in PARTS:
        n = sum(prof.samples[part].values())
        lines.append(f"    {part:<32} {cpu.parts_us[part]:>8.1f} us  ({n:,} samples)")
    stages = prof.stages_us(cpu)
    lines.append(f"  {'stage':<34} {'us/request':>10} {'share':>7}")
    for stage in ORDER:
        us = stages.get(stage, 0.0)
        lines.append(f"  {stage:<34} {us:>10.1f} {us / cpu.total_us:>7.1%}")
    return lines
