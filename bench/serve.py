"""make bench: one-row-per-request serving figures for shipml and its peers, measured in one run.

Every server gets the same model (the example's RandomForest, 100 trees, depth 10, behind a
ColumnTransformer) and the same requests. Each is checked to return the reference predictions
before it is timed. The load comes from wrk (another process) on loopback.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import requests

import request_cpu

BIN = Path(sys.executable).parent
CORES = os.cpu_count() or 1
REPO = Path(__file__).resolve().parents[1]


Checker = Callable[[str, list[dict[str, Any]]], None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cold_start_s: float
    rss_mb: float
    cpu_us: float = float("nan")  # the server's CPU time per request, all its processes (request_cpu.measure)
    client_us: float = float("nan")  # wrk's CPU time per request
    load: float = float("nan")  # the machine's load average (1 min) after the run: what others took of it


class Load(NamedTuple):
    """What one wrk run measured."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    client_us: float  # wrk's CPU time per request


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str
    cold_start_s: float

    def rss_mb(self) -> float:
        """Max resident set of the server's processes (the workers), in MB."""
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        sizes = []
        for pid in pids:
            status = Path(f"/proc/{pid}/status")
            if status.exists():
                m = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
                if m:
                    sizes.append(int(m.group(1)) / 1024)
        return max(sizes, default=0.0)

    def stop(self) -> None:
        """Stop the server and every process it started (its own session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers that outlived their parent


def start(
    argv: list[str],
    cwd: Path,
    port: int,
    ready_path: str,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> Running:
    """Start a server and wait until ``ready_path`` answers 200."""
    started = time.monotonic()
    log_file = (log_dir or cwd) / f"server-{port}.log"
    log = log_file.open("wb")
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**os.environ, "PATH": path, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[:3]} exited: {log_file.read_text()[-2000:]}")
        try:
            if requests.get(url + ready_path, timeout=2).status_code == 200:
                return Running(proc, url, time.monotonic() - started)
        except requests.RequestException:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{argv[:3]} not ready in 180 s")


def wrk(url: str, bodies: list[str], headers: dict[str, str], seconds: int, connections: int) -> Load:
    lua = ["local bodies = {"] + [f"[==[{b}]==]," for b in bodies] + ["}", "local headers = {"]
    lua += [f'["{k}"] = "{v}",' for k, v in headers.items()] + ["}", "local i = 0", "request = function()"]
    lua += ["  i = i % #bodies + 1", '  return wrk.format("POST", nil, headers, bodies[i])', "end"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write("\n".join(lua))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", fh.name, url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(fh.name)  # the request script: one per run, hundreds per `make bench`
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    dist = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)\s*$", out, re.M))
    if set(dist) != {"50", "99"}:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"Socket errors: connect (\d+)", out))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Load(rps, _ms(dist["50"]), _ms(dist["99"]), errors, requests, client_s / max(requests, 1) * 1e6)


def measured(server: Running, run: Callable[[], Load]) -> tuple[Load, request_cpu.CpuPerRequest]:
    """``run()``'s load and the server's CPU per request during it (all its processes)."""
    got: list[Load] = []

    def load() -> int:
        got.append(run())
        return got[0].requests

    cpu = request_cpu.measure(server.proc.pid, load)
    return got[0], cpu


def done(name: str, got: Load, server: Running, cpu: request_cpu.CpuPerRequest) -> Result:
    """A server's figures from its timed run."""
    rss = server.rss_mb()
    return Result(name, *got[:4], server.cold_start_s, rss, cpu.total_us, got.client_us, os.getloadavg()[0])


def cpu_table(server: Running, cpu: request_cpu.CpuPerRequest, run: Callable[[], Load], work: Path) -> None:
    """Where ``cpu`` (measured during a timed run) goes, stage by stage: a second run of the same traffic
    ``run()`` with py-spy attached to every process of ``server``; the lines are printed with the goals."""
    py_spy = BIN / "py-spy"
    if not py_spy.exists():
        CPU_TABLE.append("  not profiled: py-spy is missing (the dev extra installs it)")
        return
    prof = request_cpu.profile(server.proc.pid, run, str(py_spy), work / "profile.txt")
    CPU_TABLE.extend(request_cpu.table(cpu, prof))


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def shipml(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "shipml"), *args], cwd=root, capture_output=True, text=True, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per server")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="shipml only (no peers)")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="only the CPU table: shipml 2 workers with the commit log (profiled) and the bare ASGI peer",
    )
    parser.add_argument(
        "--experiments", action="store_true", help="only the experiment runs (routing, variants, shadow); no peers"
    )
    parser.add_argument("--peers-python", help="python of the bench environment with litserve and bentoml")
    parser.add_argument(
        "--batch",
        type=int,
        metavar="ROUNDS",
        help="only /predict/batch (1 worker, commit log) against sklearn's predict_proba, ROUNDS rounds",
    )
    parser.add_argument(
        "--batch-against",
        metavar="SRC",
        help="with --batch: a second server running another checkout's src/ (e.g. main's), in alternating rounds",
    )
    parser.add_argument(
        "--cpu-against",
        metavar="SRC",
        help="only /predict's CPU per request (2 workers, commit log) of this checkout and of another checkout's"
        " src/ (e.g. main's), both up at once, in alternating rounds (--cpu-rounds, --seconds each)",
    )
    parser.add_argument("--cpu-rounds", type=int, default=6, help="with --cpu-against: rounds per server")
    args = parser.parse_args()
    if args.peers_python:  # the peers start in the work directory: an absolute path (symlinks kept: a venv)
        args.peers_python = os.path.abspath(args.peers_python)
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk (make bench does this)")
    root = Path(tempfile.mkdtemp(prefix="shipml-bench-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # its projects, stores and logs: up to 500 MB seen
    print(f"# working in {root.name}; training the reference model (RandomForest 100 trees, depth 10)")
    shipml(root, "quickstart")
    key = shipml(root, "keys", "new", "--name", "bench", "--role", "predict", "--role", "admin")
    digest = next(line for line in key.stderr.splitlines() if "sha256" in line)
    api_key = key.stdout.strip()
    config = (
        (REPO / "examples/churn/shipml.yaml").read_text()
        + "auth:\n  keys:\n  "
        + digest
        + "\nserve:\n  reload_interval_s: 0\n"
    )
    (root / "shipml.yaml").write_text(config)

    sys.path.insert(0, str(REPO / "src"))
    from shipml.adapters.registry import MlflowRegistry, ModelRef
    from shipml.config import RegistrySettings
    from shipml.examples.churn import FEATURES, generate_churn
    from shipml.pipelines.data import feature_frame
    from shipml.pipelines.predict import load_schema

    loaded = MlflowRegistry(RegistrySettings(uri=f"sqlite:///{root}/.shipml/mlflow.db")).load(
        ModelRef.parse("churn/1"), root / ".shipml" / "bench-cache"
    )
    schema = load_schema(loaded)
    sample = generate_churn(200, seed=99)[list(FEATURES)]
    rows = [
        {k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
        for r in sample.to_dict(orient="records")
    ]
    rows_full = [r for r in rows if r["total_charges"] is not None]  # the empty FastAPI peer takes no nulls
    reference = loaded.pipeline.predict_proba(feature_frame(pd.DataFrame(rows), schema))
    bodies = [json.dumps({"features": r}) for r in rows]
    # the same rows, each with its routing key: an experiment routes them by key, not at random
    keyed_bodies = [json.dumps({"features": r, "id": f"user-{i}"}) for i, r in enumerate(rows)]
    auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    results: list[Result] = []

    def run_shipml(
        name: str,
        workers: int,
        env: dict[str, str],
        keyed: bool = False,
        check: Callable[[str, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        """Start ``shipml serve``, check its first 50 answers (the reference probabilities, then ``check(url,
        answers)``), then load it with wrk; ``keyed``: every request carries a routing key (its ``id``)."""
        load = keyed_bodies if keyed else bodies
        server = serve_checked(workers, env, load, check)
        try:

            def run() -> Load:
                return wrk(server.url + "/predict", load, auth, args.seconds, args.connections)

            got, cpu = measured(server, run)
            results.append(done(name, got, server, cpu))
            if name == PROFILED:
                cpu_table(server, cpu, run, root)
            if workers == 1 and env.get("SHIPML_STORE__DURABILITY") != "async":
                batch_figures(server.url, rows, auth, loaded.pipeline, schema)
        finally:
            server.stop()

    def serve_checked(workers: int, env: dict[str, str], load: list[str], check: Checker | None) -> Running:
        """``shipml serve`` started, its answers to the first 50 of ``load`` checked (see ``run_shipml``)."""
        port = free_port()
        argv = [str(BIN / "shipml"), "serve", "--port", str(port), "--workers", str(workers)]
        server = start(argv, root, port, "/health/ready", env)
        try:
            answers = [
                requests.post(server.url + "/predict", data=b, headers=auth, timeout=10).json() for b in load[:50]
            ]
            got = [a["probabilities"] for a in answers]
            np.testing.assert_array_equal(np.array([[g["0"], g["1"]] for g in got]), reference[:50])
            if check is not None:
                check(server.url, answers)
        except BaseException:
            server.stop()
            raise
        return server

    def run_alternating(runs: list[tuple[str, dict[str, str], Checker]], rounds: int, seconds: int) -> None:
        """The servers of ``runs`` (2 workers, keyed requests) up at once, each checked, then loaded in turn for
        ``rounds`` rounds of ``seconds`` each (the order reversed every other round): the machine's load drifts
        over minutes, and every server meets the same drift. A server's figures are its rounds' means; the
        p99s of each round are kept (ALTERNATING) for paired comparisons."""
        servers: list[Running] = []
        try:
            for _, env, check in runs:
                servers.append(serve_checked(2, env, keyed_bodies, check))
            for server in servers:  # warm: the first seconds of a fresh worker are slower
                wrk(server.url + "/predict", keyed_bodies, auth, 2, args.connections)
            loads: list[list[tuple[Load, float]]] = [[] for _ in runs]
            for k in range(rounds):
                order = list(range(len(runs)))
                for i in order if k % 2 == 0 else order[::-1]:
                    url = servers[i].url + "/predict"
                    loads[i].append(
                        measured(servers[i], lambda u=url: wrk(u, keyed_bodies, auth, seconds, args.connections))
                    )
            for (name, _, _), server, pairs in zip(runs, servers, loads, strict=True):
                got = [g for g, _ in pairs]
                rps, p50, p99 = (float(np.mean([g[j] for g in got])) for j in range(3))
                errors = sum(g.errors for g in got)
                cpu_us = float(np.mean([c.total_us for _, c in pairs]))
                client_us = float(np.mean([g.client_us for g in got]))
                results.append(Result(name, rps, p50, p99, errors, server.cold_start_s, server.rss_mb(), cpu_us,
                                      client_us, os.getloadavg()[0]))  # fmt: skip
                ALTERNATING[name] = [g[2] for g in got]
        finally:
            for server in servers:
                server.stop()

    def run_peer(
        name: str,
        argv: list[str],
        ready: str,
        path: str,
        body: Any,
        read: Any,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        """``body(row)`` is the peer's request for one row; ``read(json)`` its probabilities, or labels, or None."""
        port = free_port()
        server = start([a.replace("{port}", str(port)) for a in argv], cwd or root, port, ready, env, log_dir=root)
        try:
            deadline = time.monotonic() + 60  # some peers say healthy before their workers have the model
            while True:
                try:
                    read(requests.post(server.url + path, json=body(rows[0]), timeout=30).json())
                    break
                except (KeyError, IndexError, TypeError, ValueError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            answers = [read(requests.post(server.url + path, json=body(r), timeout=30).json()) for r in rows[:50]]
            if answers[0] is not None:
                got = np.asarray(answers)
                want = reference[:50] if got.ndim == 2 else np.argmax(reference[:50], axis=1)
                np.testing.assert_array_equal(got, want, err_msg=f"{name} disagrees with the reference")
            peer_rows = rows if answers[0] is not None else rows_full
            peer_bodies = [json.dumps(body(r)) for r in peer_rows]
            got, cpu = measured(
                server,
                lambda: wrk(
                    server.url + path, peer_bodies, {"Content-Type": "application/json"}, args.seconds, args.connections
                ),
            )
            results.append(done(name, got, server, cpu))
        except Exception as exc:  # a peer that fails is reported, the run goes on
            print(f"{name}: skipped: {str(exc).splitlines()[0][:200]}")
        finally:
            server.stop()

    print(f"# one row per request, wrk -t1 -c{args.connections} -d{args.seconds}s")
    uvicorn = [str(BIN / "uvicorn"), "--app-dir", str(REPO / "bench"), "--host", "127.0.0.1", "--port", "{port}"]
    uvicorn += ["--log-level", "warning"]
    features = lambda r: {"features": r}  # noqa: E731

    def run_bare_asgi() -> None:
        # the ceiling of this HTTP stack, under shipml's uvicorn settings (httptools, uvloop, no access log)
        argv = [*uvicorn, "--workers", "2", "--no-access-log", "--no-server-header", "peers.bare_asgi:app"]
        run_peer(BARE_ASGI, argv, "/health/ready", "/predict", features, lambda j: None)

    if args.batch:
        servers = [("this checkout", serve_checked(1, {}, bodies, None))]
        if args.batch_against:
            other = {"PYTHONPATH": os.path.abspath(args.batch_against)}
            servers.append((args.batch_against, serve_checked(1, other, bodies, None)))
        try:
            for k in range(args.batch):
                for label, server in servers if k % 2 == 0 else servers[::-1]:
                    print(f"round {k + 1}, {label}:")
                    batch_figures(server.url, rows, auth, loaded.pipeline, schema, server)
        finally:
            for _, server in servers:
                server.stop()
        return
    if args.cpu_against:
        cpu_against(serve_checked, bodies, auth, args, os.path.abspath(args.cpu_against))
        return
    if args.cpu:
        run_shipml(PROFILED, 2, {})
        run_bare_asgi()
        report(results)
        goals(results)
        return
    if not args.experiments:
        run_shipml("shipml 1 worker, commit log", 1, {})
        run_shipml(PROFILED, 2, {})
        run_shipml("shipml 2 workers, async log", 2, {"SHIPML_STORE__DURABILITY": "async"})
        # What the per-minute drift histograms (store.histograms, on by default) cost the service
        # The machine's speed drifts over minutes (a shared host): on and off alternate, twice, back to back
        for label in (NO_HISTOGRAMS, WITH_HISTOGRAMS, NO_HISTOGRAMS + " (2)", WITH_HISTOGRAMS + " (2)"):
            run_shipml(label, 2, {"SHIPML_STORE__HISTOGRAMS": "false" if label.startswith(NO_HISTOGRAMS) else "true"})
        # Does the native kernel pay over the numpy backend of the same fast predictor?
        run_shipml(NUMPY_BACKEND, 2, {"SHIPML_NATIVE": "0"})
        # Does the micro-batcher pay? On the fast path, and for a model served by its pipeline.
        run_shipml(BATCHED_FAST, 2, {"SHIPML_SERVE__BATCHING__FAST_PATH": "true"})
        pipeline_only = {"SHIPML_SERVE__FAST_PATH": "false"}
        run_shipml(PIPELINE_POOL, 2, pipeline_only | {"SHIPML_SERVE__BATCHING__ENABLED": "false"})
        run_shipml(PIPELINE_BATCHED, 2, pipeline_only)
    # Experiments: what a 50/50 split by key and a shadow scoring every request cost the service
    routing_cost()
    split = [("champion", "churn@production", 0.5), ("challenger", "churn/1", 0.5)]
    experiment = {
        "SHIPML_SERVE__MODEL": "",  # the config refuses serve.model beside serve.variants
        "SHIPML_SERVE__SALT": SALT,
        "SHIPML_SERVE__VARIANTS": json.dumps([{"name": n, "model": m, "weight": w} for n, m, w in split]),
    }
    run_shipml(TWO_VARIANTS, 2, experiment, keyed=True,
               check=lambda _url, answers: check_variants(answers, [(n, w) for n, _, w in split]))  # fmt: skip
    # the split's baseline
    run_shipml(ONE_VARIANT, 2, {}, keyed=True, check=lambda _url, answers: check_variants(answers, None))
    # A shadow's cost is a fraction of a millisecond of p99, and runs minutes apart differ by more on their own:
    # the service with and without the shadow, up at once, loaded in turn for short rounds
    shadow = {"SHIPML_SERVE__SHADOW": json.dumps([{"name": SHADOW, "model": "churn/1", "fraction": 1.0}])}
    one = [(UNSHADOWED, {}, lambda _url, answers: check_variants(answers, None))]
    run_alternating([*one, (SHADOWED, shadow, check_shadow)], rounds=max(4, args.seconds), seconds=3)
    if not (args.quick or args.experiments):
        from_shipml_shape = lambda j: [j["probabilities"]["0"], j["probabilities"]["1"]]  # noqa: E731
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root}/.shipml/mlflow.db"}
        model_dir = str(loaded.local_dir / "model")
        for w in (1, 2):
            argv = [str(BIN / "mlflow"), "models", "serve", "-m", model_dir, "--env-manager", "local"]
            argv += ["-h", "127.0.0.1", "-p", "{port}", "-w", str(w)]
            run_peer(f"mlflow models serve, {w} worker(s)", argv, "/ping", "/invocations",
                     lambda r: {"dataframe_records": [r]}, lambda j: j["predictions"][0], env)  # fmt: skip
        run_peer("seed article's FastAPI pattern", [*uvicorn, "peers.seed_article:app"], "/health/ready", "/predict",
                 features, from_shipml_shape, {"SEED_MODEL_PATH": model_dir})  # fmt: skip
        run_peer("empty FastAPI + pydantic, 2 workers (no model)", [*uvicorn, "--workers", "2", "peers.empty_fastapi:app"],
                 "/health/ready", "/predict", features, lambda j: None)  # fmt: skip
        run_bare_asgi()
        if args.peers_python:
            import joblib

            pickle = root / "pipeline.joblib"
            joblib.dump(loaded.pipeline, pickle)
            peer_env = {"PEER_MODEL_PICKLE": str(pickle)}
            peers = REPO / "bench" / "peers"
            for workers, batch in ((1, 16), (2, 16), (2, 1)):
                argv = [args.peers_python, str(peers / "litserve_peer.py"), "{port}", str(workers), str(batch)]
                label = f"LitServe, {workers} worker(s), " + (f"batching {batch}" if batch > 1 else "no batching")
                run_peer(label, argv, "/health", "/predict", features, from_shipml_shape, peer_env)
            bento = str(Path(args.peers_python).parent / "bentoml")
            for workers in (1, 2):
                argv = [bento, "serve", "bento_peer:Churn", "--host", "127.0.0.1", "--port", "{port}"]
                run_peer(f"BentoML, {workers} worker(s), adaptive batching", argv, "/readyz", "/predict",
                         lambda r: {"features": [r]}, lambda j: from_shipml_shape(j[0]),
                         peer_env | {"PEER_WORKERS": str(workers)}, cwd=peers)  # fmt: skip
    report(results)
    goals(results)


def cpu_against(
    serve_checked: Callable[[int, dict[str, str], list[str], Checker | None], Running],
    bodies: list[str],
    auth: dict[str, str],
    args: argparse.Namespace,
    src: str,
) -> None:
    """/predict's server CPU per request (2 workers, commit log) of this checkout and of ``src``, both up at once
    and loaded in turn (the order reversed every other round): on a shared machine a single figure means little,
    the difference of neighbouring rounds more."""
    servers = [("this checkout", serve_checked(2, {}, bodies, None))]
    servers.append((src, serve_checked(2, {"PYTHONPATH": src}, bodies, None)))
    figures: dict[str, list[float]] = {label: [] for label, _ in servers}
    try:
        for _, server in servers:  # warm: the first seconds of a fresh worker are slower
            wrk(server.url + "/predict", bodies, auth, 2, args.connections)
        for k in range(args.cpu_rounds):
            for label, server in servers if k % 2 == 0 else servers[::-1]:
                url = server.url + "/predict"
                got, cpu = measured(server, lambda u=url: wrk(u, bodies, auth, args.seconds, args.connections))
                figures[label].append(cpu.total_us)
                parts = ", ".join(f"{part} {us:.1f}" for part, us in cpu.parts_us.items())
                print(f"round {k + 1}, {label}: {cpu.total_us:.1f} us CPU/request ({parts}); {got.rps:,.0f} req/s,"
                      f" p99 {got.p99_ms:.2f} ms, {got.errors} errors, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    finally:
        for _, server in servers:
            server.stop()
    for label, values in figures.items():
        print(f"FIGURE cpu_us_per_request {label}: mean {np.mean(values):.1f}, median {np.median(values):.1f},"
              f" rounds {' '.join(f'{v:.1f}' for v in values)}")  # fmt: skip


def batch_figures(
    url: str,
    rows: list[dict[str, object]],
    auth: dict[str, str],
    pipeline: object,
    schema: object,
    server: Running | None = None,
) -> None:
    """/predict/batch at 1,000 and 10,000 rows against sklearn's in-process ``predict_proba`` of the same rows,
    each answer checked; with ``server``, also its CPU time (all its processes) per batch."""
    from shipml.pipelines.data import feature_frame

    for n in (1_000, 10_000):
        batch = (rows * (n // len(rows) + 1))[:n]
        body = json.dumps({"records": batch})
        frame = feature_frame(pd.DataFrame(batch), schema)  # type: ignore[arg-type]
        want = pipeline.predict_proba(frame)  # type: ignore[attr-defined]
        reps = 3
        answers = []
        cpu_before = _cpu_s(server) if server is not None else 0.0
        started = time.perf_counter()
        for _ in range(reps):  # timed: request sent to whole answer received (parsing it is the client's work)
            answers.append(requests.post(url + "/predict/batch", data=body, headers=auth, timeout=120))
        server_rps = n * reps / (time.perf_counter() - started)
        cpu_ms = (_cpu_s(server) - cpu_before) / reps * 1000 if server is not None else 0.0
        for r in answers:
            assert r.status_code == 200, r.text[:200]
            got = r.json()["predictions"]
            np.testing.assert_array_equal(
                np.array([[p["probabilities"]["0"], p["probabilities"]["1"]] for p in got]), want
            )
        started = time.perf_counter()
        for _ in range(reps):
            pipeline.predict_proba(frame)  # type: ignore[attr-defined]
        local_rps = n * reps / (time.perf_counter() - started)
        print(
            f"batch {n:>6} rows: /predict/batch {server_rps:>10,.0f} rows/s | sklearn in-process predict_proba {local_rps:>10,.0f} rows/s | ratio {server_rps / local_rps:.2f}"
            + (f" | server CPU {cpu_ms:.1f} ms a batch" if server is not None else "")
        )
        BATCH_RATIO[n] = server_rps / local_rps


def _cpu_s(server: Running) -> float:
    """CPU seconds (user and system) of every thread of ``server``'s processes so far."""
    parts = request_cpu.cpu_by_part(server.proc.pid, set()).values()
    return sum(user + system for _, user, system in parts)


def routing_cost() -> None:
    """What routing adds to a keyed request, in this process: ``Split.assign`` over 100,000 keys (and a shadow's
    sampling decision, ``shadow_sampled``), best of 3, after checking the split of those keys is 50/50; printed
    with the goals."""
    from shipml.core.routing import Shadow, Split, shadow_sampled

    split = Split([("champion", 0.5), ("challenger", 0.5)], SALT)
    shadow = Shadow(SHADOW, 1.0)
    keys = [f"user-{i}" for i in range(100_000)]
    rng = random.Random(0)  # noqa: S311 - the draw for keyless requests, unused by keyed ones
    champion = sum(split.assign(k, rng).variant == "champion" for k in keys) / len(keys)
    assert 0.49 < champion < 0.51, f"Split.assign sends {champion:.2%} of 100,000 keys to the 50 % variant"
    assert all(shadow_sampled(k, shadow, SALT, rng) for k in keys[:1000]), "a fraction 1.0 shadow skipped a key"

    def per_call_us(fn: Callable[[str], object]) -> float:
        best = min(timeit.repeat(lambda: [fn(k) for k in keys], number=1, repeat=3))
        return best / len(keys) * 1e6

    ROUTING_US["assign"] = per_call_us(lambda k: split.assign(k, rng))
    ROUTING_US["shadow_sampled"] = per_call_us(lambda k: shadow_sampled(k, shadow, SALT, rng))


def check_variants(answers: list[dict[str, Any]], split: list[tuple[str, float]] | None) -> None:
    """Keyed answers of a single model come from ``main``; of an experiment, from the variant this process's
    ``Split`` gives each key (the same hash in every process), routed by key, with both variants present."""
    from shipml.core.routing import Split

    got = [a["model"]["variant"] for a in answers]
    if split is None:
        assert set(got) == {"main"}, f"a single model answered as {sorted(set(got))}"
        return
    want = [Split(split, SALT).variant(f"user-{i}") for i in range(len(answers))]
    assert got == want, f"keys routed to {got}, this process's Split says {want}"
    assert set(got) == {name for name, _ in split}, f"50 keys reached only {sorted(set(got))}"
    routed = {a.get("routed_by") for a in answers}
    assert routed == {"key"}, f"keyed requests answered with routed_by {routed}"


def check_shadow(url: str, answers: list[dict[str, Any]]) -> None:
    """The shadow never answers, and (fraction 1.0) scores every answered request, without a failure."""
    check_variants(answers, None)
    deadline = time.monotonic() + 15
    while True:
        text = requests.get(url + "/metrics", timeout=10).text
        scored = _counter(text, "shipml_predictions_total", SHADOW, status="ok")
        failed = _counter(text, "shipml_shadow_failures_total", SHADOW)
        assert failed == 0, f"{failed:.0f} shadow calls failed"
        if scored >= len(answers) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert scored == len(answers), f"the shadow scored {scored:.0f} of {len(answers)} requests"


def _counter(text: str, name: str, variant: str, **labels: str) -> float:
    """The sum of a counter's samples in a Prometheus exposition, over those with ``variant`` and ``labels``."""
    wanted = {"variant": variant, **labels}
    total = 0.0
    for found, value in re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', found))
        if all(have.get(k) == v for k, v in wanted.items()):
            total += float(value)
    return total


BATCH_RATIO: dict[int, float] = {}
CPU_TABLE: list[str] = []  # where a request's CPU goes (cpu_table), printed with the goals
PROFILED = "shipml 2 workers, commit log"
BARE_ASGI = "bare ASGI + orjson, 2 workers (no model; the HTTP stack's ceiling)"
ALTERNATING: dict[str, list[float]] = {}  # p99 (ms) of each round of run_alternating, by server
ROUTING_US: dict[str, float] = {}
SALT = "bench"
SHADOW = "candidate"
ONE_VARIANT = "shipml 2 workers, commit log, one variant, keyed requests"
TWO_VARIANTS = "shipml 2 workers, commit log, two variants 50/50 (keyed requests)"
SHADOWED = "shipml 2 workers, commit log, one variant + shadow at fraction 1.0"
UNSHADOWED = "shipml 2 workers, commit log, one variant, alternating with shadow"
NUMPY_BACKEND = "shipml 2 workers, commit log, numpy backend (no native kernel)"
NO_HISTOGRAMS = "shipml 2 workers, commit log, no drift histograms"
WITH_HISTOGRAMS = "shipml 2 workers, commit log, drift histograms (paired)"
BATCHED_FAST = "shipml 2 workers, commit log, fast path + micro-batcher"
PIPELINE_POOL = "shipml 2 workers, commit log, pipeline in a thread pool"
PIPELINE_BATCHED = "shipml 2 workers, commit log, pipeline + micro-batcher"


def goals(results: list[Result]) -> None:
    """The issue's goals, each computed from figures of this run, met or missed with its reason: the CPU each side
    spent per request (server and wrk, measured) and what the machine's 2 cores allow at that cost."""
    by = {r.name: r for r in results}
    commit, async_ = by.get(PROFILED), by.get("shipml 2 workers, async log")
    one = by.get("shipml 1 worker, commit log")
    mlflow2 = by.get("mlflow models serve, 2 worker(s)")
    litserve = max((r for r in results if r.name.startswith("LitServe")), key=lambda r: r.rps, default=None)
    empty = by.get("empty FastAPI + pydantic, 2 workers (no model)")
    bare = by.get(BARE_ASGI)
    lines = []

    def goal(
        text: str,
        value: float | None,
        target: float,
        higher: bool,
        unit: str = "x",
        inclusive: bool = False,
        why: str = "",
    ) -> None:
        if value is None:
            lines.append(f"  {text}: not measured")
            return
        if higher:
            met, op = value >= target, ">="
        else:
            met, op = (value <= target, "<=") if inclusive else (value < target, "<")
        verdict = "MET" if met else "MISSED"
        lines.append(
            f"  {text}: {value:,.2f}{unit} (goal {op} {target:g}{unit}) {verdict}" + (f"; {why}" if why else "")
        )

    def ratio(a: Result | None, b: Result | None) -> float | None:
        return a.rps / b.rps if a and b and b.rps else None

    def cost(*runs: Result | None) -> str:
        """Why a throughput is what it is: each run's CPU per request, server and wrk, and the req/s that the
        machine's cores allow at that cost (the load average says how much of them others took)."""
        return "; ".join(
            f"{r.name.split(',')[0] if r.name.startswith(('mlflow', 'empty', 'bare')) else r.name}:"
            f" server {r.cpu_us:,.0f} + wrk {r.client_us:,.0f} us CPU/request, {CORES} cores allow"
            f" {CORES * 1e6 / (r.cpu_us + r.client_us):,.0f} req/s, load average {r.load:.1f}"
            for r in runs
            if r is not None
        )

    goal("2 workers + commit log vs empty FastAPI + pydantic 2 workers", ratio(commit, empty), 2, True,
         why=cost(commit, empty))  # fmt: skip
    goal("2 workers + commit log vs mlflow models serve 2 workers", ratio(commit, mlflow2), 100, True,
         why=cost(commit, mlflow2))  # fmt: skip
    goal("2 workers + async log vs empty FastAPI + pydantic 2 workers", ratio(async_, empty), 3, True,
         why=cost(async_, empty))  # fmt: skip
    goal("2 workers vs 1 worker (commit log)", ratio(commit, one), 1.6, True, why=cost(commit, one))
    goal("2 workers + commit log, p99 at 16 connections", commit.p99_ms if commit else None, 5, False, " ms",
         why=f"p50 {commit.p50_ms:.2f} ms; {cost(commit)}" if commit else "")  # fmt: skip
    goal("cold start (process start to ready), 1 worker", one.cold_start_s if one else None, 3, False, " s")
    goal("RSS per worker", one.rss_mb if one else None, 300, False, " MB")
    goal("server CPU per committed /predict (2 workers, all processes)", commit.cpu_us if commit else None, 120,
         False, " us", inclusive=True, why="where it goes: the CPU table below")  # fmt: skip
    if commit and bare:
        lines.append(
            f"  shipml's share of the HTTP stack's ceiling (bare ASGI + orjson, same uvicorn settings):"
            f" {commit.rps / bare.rps:.1%} of its req/s, {commit.cpu_us:,.0f} us CPU/request against its"
            f" {bare.cpu_us:,.0f} ({cost(bare)})"
        )
    best = litserve.name if litserve else "-"
    goal(f"2 workers + commit log vs LitServe's best ({best})", ratio(commit, litserve), 5, True)
    goal("/predict/batch 10,000 rows vs sklearn in-process predict_proba", BATCH_RATIO.get(10_000), 1, True)
    off = [by[n].rps for n in (NO_HISTOGRAMS, NO_HISTOGRAMS + " (2)") if n in by]
    on = [by[n].rps for n in (WITH_HISTOGRAMS, WITH_HISTOGRAMS + " (2)") if n in by]
    goal(
        "drift histograms' cost to /predict req/s (2 workers, commit log, off vs on, alternating runs)",
        (1 - sum(on) / sum(off)) * 100 if len(on) == len(off) == 2 else None,
        5,
        False,
        " %",
    )
    goal("routing cost per request (Split.assign, in-process)", ROUTING_US.get("assign"), 5, False, " us")
    added = shadow_added()
    shadowed, unshadowed = by.get(SHADOWED), by.get(UNSHADOWED)
    goal(
        f"shadow at fraction 1.0: p99 added (2 workers, commit log, keyed; mean over {len(added)} alternating rounds)",
        float(np.mean(added)) if added else None,
        1,
        False,
        " ms",
        inclusive=True,
        why=f"median {np.median(added):+.2f} ms; server CPU/request {shadowed.cpu_us:,.0f} us with the shadow,"
        f" {unshadowed.cpu_us:,.0f} without"
        if added and shadowed and unshadowed
        else "",
    )
    if CPU_TABLE:
        lines.append(f"\nwhere the CPU of a request goes ({PROFILED}; table in bench/request_cpu.py):")
        lines.extend(CPU_TABLE)
    print("\ngoals, from this run's figures:")
    print("\n".join(lines))
    experiment_figures(by)
    native, numpy_only = commit, by.get(NUMPY_BACKEND)
    if native and numpy_only:
        print(
            f"\nthe native kernel: {native.rps:,.0f} req/s, numpy backend {numpy_only.rps:,.0f}"
            f" ({native.rps / numpy_only.rps:.2f}x, p99 {native.p99_ms:.2f} vs {numpy_only.p99_ms:.2f} ms)"
        )
    print("\nthe micro-batcher (serve.batching), from this run's figures:")
    for label, with_, without in (
        ("on the fast path", by.get(BATCHED_FAST), commit),
        ("on a model served by its pipeline", by.get(PIPELINE_BATCHED), by.get(PIPELINE_POOL)),
    ):
        if with_ and without:
            verdict = "pays" if with_.rps > without.rps * 1.05 else "does not pay"
            print(
                f"  {label}: {with_.rps:,.0f} req/s with it, {without.rps:,.0f} without"
                f" ({with_.rps / without.rps:.2f}x, p99 {with_.p99_ms:.2f} vs {without.p99_ms:.2f} ms): {verdict}"
            )


def experiment_figures(by: dict[str, Result]) -> None:
    """Routing cost, two variants against one, and a shadow's overhead, all from this run."""
    single, two = by.get(ONE_VARIANT), by.get(TWO_VARIANTS)
    print("\nexperiments (serve.variants, serve.shadow), from this run's figures:")
    if ROUTING_US:
        print(
            f"  routing cost per request, in-process (100,000 keys, best of 3): Split.assign"
            f" {ROUTING_US['assign']:.2f} us; a shadow's sampling decision {ROUTING_US['shadow_sampled']:.2f} us"
        )
    if single and two:
        print(
            f"  two variants 50/50 vs one variant (keyed requests): {two.rps:,.0f} vs {single.rps:,.0f} req/s"
            f" ({two.rps / single.rps:.2f}x), p99 {two.p99_ms:.2f} vs {single.p99_ms:.2f} ms"
        )
    unshadowed, shadowed, added = by.get(UNSHADOWED), by.get(SHADOWED), shadow_added()
    if unshadowed and shadowed and added:
        print(
            f"  shadow at fraction 1.0 vs none (keyed requests, {len(added)} alternating rounds):"
            f" {shadowed.rps:,.0f} vs {unshadowed.rps:,.0f} req/s ({shadowed.rps / unshadowed.rps:.2f}x),"
            f" p99 {shadowed.p99_ms:.2f} vs {unshadowed.p99_ms:.2f} ms; p99 added per round: mean"
            f" {np.mean(added):+.2f} ms, median {np.median(added):+.2f} ms, rounds {' '.join(f'{a:+.2f}' for a in added)}"
        )


def shadow_added() -> list[float]:
    """The shadow's p99 minus the service's without it, per alternating round of this run."""
    with_, without = ALTERNATING.get(SHADOWED, []), ALTERNATING.get(UNSHADOWED, [])
    return [a - b for a, b in zip(with_, without, strict=True)]


def report(results: list[Result]) -> None:
    base = {r.name: r for r in results}
    best = base.get("shipml 2 workers, commit log")
    print(
        f"\n{'server':<72} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'start s':>8} {'RSS MB':>7}"
        f" {'CPU us/req':>10} {'shipml 2w commit / this':>24}"
    )
    for r in results:
        ratio = f"{best.rps / r.rps:.2f}x" if best and r.rps else "-"
        print(
            f"{r.name:<72} {r.rps:>9,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.errors:>7} {r.cold_start_s:>8.2f}"
            f" {r.rss_mb:>7.0f} {r.cpu_us:>10.0f} {ratio:>24}"
        )


if __name__ == "__main__":
    main()
