"""make bench: one-row-per-request serving figures for shipml and its peers, measured in one run.

Every server gets the same model (the example's RandomForest, 100 trees, depth 10, behind a
ColumnTransformer) and the same requests. Each is checked to return the reference predictions
before it is timed. The load comes from wrk (another process) on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
FEATURES = [
    "tenure",
    "monthly_charges",
    "total_charges",
    "age",
    "support_calls",
    "data_gb",
    "contract",
    "payment",
    "internet",
    "gender",
]


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
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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


def wrk(
    url: str, bodies: list[str], headers: dict[str, str], seconds: int, connections: int
) -> tuple[float, float, float, int]:
    lua = ["local bodies = {"] + [f"[==[{b}]==]," for b in bodies] + ["}", "local headers = {"]
    lua += [f'["{k}"] = "{v}",' for k, v in headers.items()] + ["}", "local i = 0", "request = function()"]
    lua += ["  i = i % #bodies + 1", '  return wrk.format("POST", nil, headers, bodies[i])', "end"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write("\n".join(lua))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", fh.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    dist = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)\s*$", out, re.M))
    if set(dist) != {"50", "99"}:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"Socket errors: connect (\d+)", out))
    return rps, _ms(dist["50"]), _ms(dist["99"]), errors


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
    parser.add_argument("--peers-python", help="python of the bench environment with litserve and bentoml")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk (make bench does this)")
    root = Path(tempfile.mkdtemp(prefix="shipml-bench-"))
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
    from shipml.adapters.mlflow_registry import MlflowRegistry, ModelRef
    from shipml.config import RegistrySettings
    from shipml.examples.churn import generate_churn
    from shipml.pipelines.data import feature_frame
    from shipml.pipelines.predict import load_schema

    loaded = MlflowRegistry(RegistrySettings(uri=f"sqlite:///{root}/.shipml/mlflow.db")).load(
        ModelRef.parse("churn/1"), root / ".shipml" / "bench-cache"
    )
    schema = load_schema(loaded)
    sample = generate_churn(200, seed=99)[FEATURES]
    rows = [
        {k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
        for r in sample.to_dict(orient="records")
    ]
    rows_full = [r for r in rows if r["total_charges"] is not None]  # the empty FastAPI peer takes no nulls
    reference = loaded.pipeline.predict_proba(feature_frame(pd.DataFrame(rows), schema))
    bodies = [json.dumps({"features": r}) for r in rows]
    auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    results: list[Result] = []

    def run_shipml(name: str, workers: int, env: dict[str, str]) -> None:
        port = free_port()
        server = start(
            [str(BIN / "shipml"), "serve", "--port", str(port), "--workers", str(workers)],
            root,
            port,
            "/health/ready",
            env,
        )
        try:
            got = [
                requests.post(server.url + "/predict", data=b, headers=auth, timeout=10).json()["probabilities"]
                for b in bodies[:50]
            ]
            np.testing.assert_array_equal(np.array([[g["0"], g["1"]] for g in got]), reference[:50])
            rps, p50, p99, errors = wrk(server.url + "/predict", bodies, auth, args.seconds, args.connections)
            results.append(Result(name, rps, p50, p99, errors, server.cold_start_s, server.rss_mb()))
            if workers == 1 and env.get("SHIPML_STORE__DURABILITY") != "async":
                batch_figures(server.url, rows, auth, loaded.pipeline, schema)
        finally:
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
            answers = [read(requests.post(server.url + path, json=body(r), timeout=30).json()) for r in rows[:50]]
            if answers[0] is not None:
                got = np.asarray(answers)
                want = reference[:50] if got.ndim == 2 else np.argmax(reference[:50], axis=1)
                np.testing.assert_array_equal(got, want, err_msg=f"{name} disagrees with the reference")
            peer_rows = rows if answers[0] is not None else rows_full
            peer_bodies = [json.dumps(body(r)) for r in peer_rows]
            rps, p50, p99, errors = wrk(
                server.url + path, peer_bodies, {"Content-Type": "application/json"}, args.seconds, args.connections
            )
            results.append(Result(name, rps, p50, p99, errors, server.cold_start_s, server.rss_mb()))
        except (AssertionError, RuntimeError, requests.RequestException) as exc:
            print(f"{name}: skipped: {str(exc).splitlines()[0][:200]}")
        finally:
            server.stop()

    print(f"# one row per request, wrk -t1 -c{args.connections} -d{args.seconds}s")
    run_shipml("shipml 1 worker, commit log", 1, {})
    run_shipml("shipml 2 workers, commit log", 2, {})
    run_shipml("shipml 2 workers, async log", 2, {"SHIPML_STORE__DURABILITY": "async"})
    if not args.quick:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root}/.shipml/mlflow.db"}
        for w in (1, 2):
            mlflow_argv = [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                str(loaded.local_dir / "model"),
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                "{port}",
                "-w",
                str(w),
            ]
            run_peer(f"mlflow models serve, {w} worker(s)", mlflow_argv, "/ping", "/invocations", "labels", env)
        uvicorn = [
            str(BIN / "uvicorn"),
            "--app-dir",
            str(REPO / "bench"),
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--log-level",
            "warning",
        ]
        run_peer("seed article's FastAPI pattern", [*uvicorn, "peers.seed_article:app"], "/health/ready", "/predict", "proba",
                 {"SEED_MODEL_PATH": str(loaded.local_dir / "model")})  # fmt: skip
        run_peer(
            "empty FastAPI + pydantic, 2 workers (no model)",
            [*uvicorn, "--workers", "2", "peers.empty_fastapi:app"],
            "/health/ready",
            "/predict",
            "none",
        )
    report(results)


def batch_figures(
    url: str, rows: list[dict[str, object]], auth: dict[str, str], pipeline: object, schema: object
) -> None:
    from shipml.pipelines.data import feature_frame

    for n in (1_000, 10_000):
        batch = (rows * (n // len(rows) + 1))[:n]
        body = json.dumps({"records": batch})
        started = time.perf_counter()
        reps = 3
        for _ in range(reps):
            r = requests.post(url + "/predict/batch", data=body, headers=auth, timeout=120)
            assert r.status_code == 200 and r.json()["failed"] == 0
        server_rps = n * reps / (time.perf_counter() - started)
        frame = feature_frame(pd.DataFrame(batch), schema)  # type: ignore[arg-type]
        started = time.perf_counter()
        for _ in range(reps):
            pipeline.predict_proba(frame)  # type: ignore[attr-defined]
        local_rps = n * reps / (time.perf_counter() - started)
        print(
            f"batch {n:>6} rows: /predict/batch {server_rps:>10,.0f} rows/s | sklearn in-process predict_proba {local_rps:>10,.0f} rows/s | ratio {server_rps / local_rps:.2f}"
        )


def report(results: list[Result]) -> None:
    base = {r.name: r for r in results}
    best = base.get("shipml 2 workers, commit log")
    print(
        f"\n{'server':<48} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'start s':>8} {'RSS MB':>7} {'shipml 2w commit / this':>24}"
    )
    for r in results:
        ratio = f"{best.rps / r.rps:.2f}x" if best and r.rps else "-"
        print(
            f"{r.name:<48} {r.rps:>9,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.errors:>7} {r.cold_start_s:>8.2f} {r.rss_mb:>7.0f} {ratio:>24}"
        )


if __name__ == "__main__":
    main()
