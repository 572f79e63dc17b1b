"""The committed log of 2 workers on SQLite: one host writer (store.host_writer: true) against each worker committing
its own rows (false), measured in one run.

Both servers are up at once (2 workers each, commit durability, store.sqlite_synchronous as given) and loaded in turn
with wrk for alternating rounds (the machine's load drifts over minutes; both meet the same drift): req/s and p99
are the rounds' means. Then each runs once more under ``strace -f --seccomp-bpf -e trace=fsync,fdatasync`` (only
those calls are stopped) for the WAL syncs per request: the syncs of the store's files over the requests wrk
completed. Every timed server is first checked to answer the reference probabilities, and each store to hold every
request answered in the strace'd run.

    python bench/commit_log.py [--rounds 6] [--seconds 5] [--synchronous FULL]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import request_cpu
from serve import BIN, REPO, Load, Running, free_port, shipml, start, wrk  # the bench's own helpers

RUNS = {"host writer": "true", "per-worker commits": "false"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("strace") is None:
        sys.exit("wrk and strace are needed: apt-get install wrk strace")
    root = Path(tempfile.mkdtemp(prefix="shipml-bench-commit-"))
    print(f"# working in {root.name}; training the reference model")
    shipml(root, "quickstart")
    key = shipml(root, "keys", "new", "--name", "bench", "--role", "predict")
    digest = next(line for line in key.stderr.splitlines() if "sha256" in line)
    config = (REPO / "examples/churn/shipml.yaml").read_text() + "auth:\n  keys:\n  " + digest
    (root / "shipml.yaml").write_text(config + "\nserve:\n  reload_interval_s: 0\n")
    auth = {"Authorization": f"Bearer {key.stdout.strip()}", "Content-Type": "application/json"}

    sys.path.insert(0, str(REPO / "src"))
    from shipml.examples.churn import FEATURES, generate_churn

    sample = generate_churn(200, seed=99)[list(FEATURES)]
    rows = [{k: (None if v != v else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
            for r in sample.to_dict(orient="records")]  # fmt: skip
    bodies = [json.dumps({"features": r}) for r in rows]

    def serve(name: str, strace_to: Path | None = None) -> tuple[Running, Path]:
        db = root / f"{name.replace(' ', '-')}{'-strace' if strace_to else ''}.db"
        env = {
            "SHIPML_STORE__URI": f"sqlite:///{db}",
            "SHIPML_STORE__HOST_WRITER": RUNS[name],
            "SHIPML_STORE__SQLITE_SYNCHRONOUS": args.synchronous,
        }
        port = free_port()
        argv = [str(BIN / "shipml"), "serve", "--port", str(port), "--workers", "2"]
        if strace_to is not None:
            argv = ["strace", "-f", "--seccomp-bpf", "-ttt", "-y", "-e", "trace=fsync,fdatasync", "-o", str(strace_to),
                    *argv]  # fmt: skip
        server = start(argv, root, port, "/health/ready", env)
        first = [requests.post(server.url + "/predict", data=b, headers=auth, timeout=10) for b in bodies[:20]]
        assert all(r.status_code == 200 and "probabilities" in r.json() for r in first), first[0].text
        return server, db

    servers = {name: serve(name) for name in RUNS}
    measured: dict[str, list[tuple[Load, float]]] = {name: [] for name in RUNS}
    try:
        for server, _ in servers.values():
            wrk(server.url + "/predict", bodies, auth, 2, args.connections)  # warm
        names = list(RUNS)
        for k in range(args.rounds):
            for name in names if k % 2 == 0 else names[::-1]:
                measured[name].append(timed(servers[name][0], bodies, auth, args.seconds, args.connections))
    finally:
        for server, _ in servers.values():
            server.stop()
    print(f"# 2 workers, commit log, SQLite synchronous={args.synchronous}, wrk -t1 -c{args.connections}, "
          f"{args.rounds} alternating rounds of {args.seconds} s (means), load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    for name, rounds in measured.items():
        rps, p50, p99, cpu_us = (
            float(np.mean(v)) for v in zip(*[(g.rps, g.p50_ms, g.p99_ms, c) for g, c in rounds], strict=True)
        )
        errors = sum(g.errors for g, _ in rounds)
        each = " ".join(f"{g.rps:.0f}/{g.p99_ms:.1f}" for g, _ in rounds)
        print(f"{name:<20} {rps:>8,.0f} req/s  p50 {p50:5.2f} ms  p99 {p99:5.2f} ms  server CPU {cpu_us:4.0f} us/request  "
              f"errors {errors}  (rounds, req/s/p99 ms: {each})")  # fmt: skip
    for name in RUNS:
        trace = root / f"{name.replace(' ', '-')}.strace"
        server, db = serve(name, trace)
        try:
            began = time.time()
            requests_done = wrk(server.url + "/predict", bodies, auth, args.seconds, args.connections).requests
            ended = time.time()
        finally:
            server.stop()
        syncs = 0  # the store's syncs while wrk ran (not the startup's: migrations, the catalog)
        for line in trace.read_text().splitlines():
            at = re.match(r"\d+\s+([\d.]+) ", line)
            if at and began <= float(at.group(1)) <= ended and re.search(r"sync\(\d+<[^>]*\.db(-wal)?>", line):
                syncs += 1
        stored = sqlite3.connect(db).execute("select count(*) from predictions").fetchone()[0]
        assert stored >= requests_done - args.connections, (stored, requests_done)
        print(f"{name:<20} WAL/db syncs {syncs} for {requests_done} requests: {syncs / requests_done:.3f} per request "
              f"({requests_done / max(syncs, 1):.1f} requests per sync; rows stored {stored})")  # fmt: skip


def timed(
    server: Running, bodies: list[str], auth: dict[str, str], seconds: int, connections: int
) -> tuple[Load, float]:
    """One wrk run on ``server``, and the CPU µs per request of all its processes (the host writer's too)."""
    got: list[Load] = []

    def run() -> int:
        got.append(wrk(server.url + "/predict", bodies, auth, seconds, connections))
        return got[0].requests

    cpu = request_cpu.measure(server.proc.pid, run)
    return got[0], cpu.total_us


if __name__ == "__main__":
    main()
