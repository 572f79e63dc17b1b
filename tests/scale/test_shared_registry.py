"""Issue 18 item 1: shipml against a shared registry as a team runs one: `mlflow server` on Postgres with its
artifacts in S3 (moto's S3 server), the storage's credentials only in the MLflow server's environment
(tests/support/shared_registry.py), started with the README's lines ("A shared registry"). shipml's commands, the
README's among them, run unchanged, given only ``SHIPML_REGISTRY_URI``; then the
registry's faults: the MLflow server restarted and S3 down while shipml serves, two promotions at once, and three
replicas following one alias flip, each downloading the new version once.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.reliability.load import metric
from tests.support.cli import shipml
from tests.support.launcher import start
from tests.support.project import CONFIG
from tests.support.server import Server, free_port, records, spawn_server, start_server
from tests.support.shared_registry import ReadmeRegistry, SharedRegistry

pytestmark = [pytest.mark.integration]

SMALL = CONFIG.replace("n_estimators: 100", "n_estimators: 10").replace("cv_folds: 5", "cv_folds: 2")
SERVE = """
auth:
  enabled: false
serve:
  reload_interval_s: 1
  reload_backoff_max_s: 2
  grace_period_s: 5
"""
ROWS = records(200, seed=3)
README = ReadmeRegistry.read()  # README.md "A shared registry": the lines a team types


@pytest.fixture(scope="module")
def project(shared_registry: SharedRegistry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose registry is the shared one (``SHIPML_REGISTRY_URI``, nothing else): churn/1, 2 and 3
    trained, churn/1 in production."""
    root = tmp_path_factory.mktemp("team")
    (root / "shipml.yaml").write_text(SMALL + SERVE)
    made = shipml(root, "example", "churn", ".shipml/data/churn.csv", "--rows", "1500")
    assert made.returncode == 0, made.stderr
    train, _, _ = README.commands
    assert train == ["shipml", "train"], train
    for version in ("1", "2"):
        trained = shipml(root, *train[1:], env=shared_registry.env)
        assert trained.returncode in (0, 1), trained.stdout + trained.stderr  # 1: a gate missed, still registered
        assert f"churn/{version} registered" in trained.stdout, trained.stdout
    # churn/3: churn/2's run registered again (what is under test is the registry, not a third training)
    registry = shared_registry.client()
    two = registry.get_version("churn", "2")
    registry.client.create_model_version("churn", two.source, run_id=two.run_id, tags=two.tags)
    promoted = shipml(root, "models", "promote", "churn", "1", "--to", "production", env=shared_registry.env)
    assert promoted.returncode == 0, promoted.stderr
    assert not (root / ".shipml" / "mlflow.db").exists()  # nothing went to an embedded registry
    return root


def replica_dir(project: Path, name: str) -> Path:
    """A directory of its own for one service (its own cache and prediction store), with the project's config."""
    path = project / name
    path.mkdir()
    shutil.copy(project / "shipml.yaml", path / "shipml.yaml")
    return path


def run(root: Path, registry: SharedRegistry, *args: str) -> Any:
    return shipml(root, *args, env=registry.env)


def served(server: Server) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{server.url}/model", timeout=10).json()
    return body


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


@contextmanager
def traffic(server: Server, rate: float = 40.0) -> Iterator[collections.Counter[tuple[int, str]]]:
    """Single-record requests at about ``rate`` a second while the block runs: (status, version) counts."""
    seen: collections.Counter[tuple[int, str]] = collections.Counter()
    stop = threading.Event()

    def send() -> None:
        with requests.Session() as session:
            i = 0
            while not stop.is_set():
                started = time.monotonic()
                try:
                    answer = session.post(f"{server.url}/predict", json={"features": ROWS[i % 200]}, timeout=10)
                    version = answer.json().get("model", {}).get("version", "-") if answer.ok else "-"
                    seen[(answer.status_code, version)] += 1
                except requests.RequestException:
                    seen[(0, "-")] += 1
                i += 1
                time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=15)


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_the_commands_run_unchanged_against_the_shared_registry(shared_registry: SharedRegistry, project: Path) -> None:
    here = replica_dir(project, "workflow")
    _, promote, serve = README.commands
    assert promote[:3] == ["shipml", "models", "promote"] and serve[:2] == ["shipml", "serve"], README.commands
    # what the server's machine installs is what it needs
    assert [p for p in README.packages if importlib.util.find_spec(p.split("[")[0]) is None] == []
    # the README's `shipml serve` line, the installed script as a user starts it, given the README's one variable
    # (the registry's URL) and no AWS_* variable at all
    assert list(README.client_env) == ["SHIPML_REGISTRY_URI"], README.client_env
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPML_", "AWS_"))} | shared_registry.env
    log = here / "serve.log"
    process = start([*serve[1:], "--port", str(port)], here, env, log, fresh=True)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    server.wait_ready()
    try:
        # the storage's credentials are the MLflow server's alone
        shipml_env = environment_of(server.proc.pid)
        assert not [k for k in shipml_env if k.startswith("AWS_") or k == "MLFLOW_S3_ENDPOINT_URL"], sorted(shipml_env)
        assert shipml_env["SHIPML_REGISTRY_URI"] == shared_registry.url
        assert shared_registry.proc is not None
        assert "AWS_SECRET_ACCESS_KEY" in environment_of(shared_registry.proc.pid)
        # the MLflow server answers its own names only (--allowed-hosts): a rebinding page's Host is refused
        foreign = requests.get(f"{shared_registry.url}/api/2.0/mlflow/registered-models/search",
                               headers={"Host": "attacker.example"}, timeout=10)  # fmt: skip
        assert foreign.status_code == 403, foreign.text
        assert served(server)["version"] == "1"
        # hot reload follows the alias: promote, then roll back
        promoted = run(here, shared_registry, *promote[1:])  # the README's: churn/2 to production
        assert promoted.returncode == 0 and "churn@production: 1 -> 2" in promoted.stdout, promoted.stderr
        wait_for("the promotion followed", lambda: served(server)["version"] == "2")
        back = run(here, shared_registry, "models", "rollback", "churn", "--reason", "shared registry")
        assert back.returncode == 0 and "churn@production: 2 -> 1" in back.stdout, back.stderr
        wait_for("the rollback followed", lambda: served(server)["version"] == "1")
        history = run(here, shared_registry, "models", "history", "churn")
        assert history.returncode == 0 and "rollback" in history.stdout, history.stdout
        # offline scoring, and the service's predictions for the monitor
        scored = run(here, shared_registry, "predict", str(project / ".shipml/data/churn.csv"), "-m",
                     "churn@production", "-o", "scores.parquet")  # fmt: skip
        assert scored.returncode == 0 and "with churn/1" in scored.stdout, scored.stdout + scored.stderr
        batch = requests.post(f"{server.url}/predict/batch", json={"records": ROWS}, timeout=30)
        assert batch.status_code == 200, batch.text
        drift = run(here, shared_registry, "monitor", "drift", "--window", "1h")
        assert drift.returncode in (0, 1), drift.stdout + drift.stderr  # 1: drift found; either is a verdict
        # a canary of churn/2 through the running service, promoted through the shared registry
        with traffic(server) as seen:
            canary = run(here, shared_registry, "deploy", "canary", "churn", "2", "--steps", "50,100",
                         "--interval", "2s", "--min-requests", "20", "--check-every", "0.5s")  # fmt: skip
            assert canary.returncode == 0, canary.stdout + canary.stderr
            wait_for("the promoted canary served as main", lambda: served(server)["version"] == "2")
        assert set(seen) <= {(200, "1"), (200, "2")}, seen
        shown = run(here, shared_registry, "models", "show", "churn@previous")
        assert shown.returncode == 0 and "churn/1" in shown.stdout, shown.stdout
        # an experiment whose champion is what served above (`main`), judged on what the store holds
        (here / "ab.yaml").write_text(SMALL + SERVE + "  variants:\n    - {name: main, model: churn@production, "
                                      "weight: 0.5}\n    - {name: challenger, model: churn/3, weight: 0.5}\n")  # fmt: skip
        report = run(here, shared_registry, "ab", "report", "--window", "1h", "--config", "ab.yaml")
        assert report.returncode in (0, 1, 3, 4, 5), report.stdout + report.stderr  # a verdict, not a usage error
        assert "Traceback" not in report.stderr
        print(f"FIGURE shared registry: requests during the canary {dict(seen)}; canary exit {canary.returncode}; "
              f"ab report exit {report.returncode}")  # fmt: skip
    finally:
        assert server.stop() == 0
        moved = run(project, shared_registry, "models", "promote", "churn", "1", "--to", "production")
        assert moved.returncode == 0, moved.stderr


def test_the_mlflow_server_restarted_while_serving(shared_registry: SharedRegistry, project: Path) -> None:
    here = replica_dir(project, "restart")
    server = start_server(here, env=shared_registry.env)
    try:
        good = served(server)["registry"]
        with traffic(server) as seen:
            shared_registry.stop()
            outage = time.time()
            wait_for("a poll fails while the MLflow server is down",
                     lambda: (served(server)["registry"]["last_failure"] or 0) > outage, 30)  # fmt: skip
            during = served(server)
            shared_registry.start()
            restarted = time.time()
            promoted = run(here, shared_registry, "models", "promote", "churn", "2", "--to", "production")
            assert promoted.returncode == 0, promoted.stderr
            wait_for("the flip after the restart followed", lambda: served(server)["version"] == "2", 30)
        after = served(server)["registry"]
        print(f"FIGURE shared registry restart: requests {dict(seen)}; server down {restarted - outage:.1f} s; "
              f"reload failures {metric(server, 'shipml_model_load_failures_total', reason='registry'):.0f}")  # fmt: skip
        assert set(seen) <= {(200, "1"), (200, "2")} and seen[(200, "1")] > 0, seen  # every request answered
        # while down: the old version serves, /model shows the last good check and what failed since
        assert during["version"] == "1" and during["registry"]["desired_version"] == "1"
        assert good["last_check"] <= during["registry"]["last_check"] < outage + 2  # the last good check, before
        assert during["registry"]["last_error"], during
        assert metric(server, "shipml_model_load_failures_total", reason="registry") >= 1
        assert after["last_check"] > restarted and after["last_error"] is None and after["desired_version"] == "2"
    finally:
        if shared_registry.proc is None or shared_registry.proc.poll() is not None:
            shared_registry.start()
        assert server.stop() == 0
        run(project, shared_registry, "models", "promote", "churn", "1", "--to", "production")


def test_s3_down_at_an_alias_flip(shared_registry: SharedRegistry, project: Path) -> None:
    here = replica_dir(project, "s3-down")  # its own cache: churn/2 is downloaded anew here
    server = start_server(here, env=shared_registry.env)
    try:
        assert served(server)["version"] == "1"
        with traffic(server) as seen:
            shared_registry.s3.set_mode("reset")
            try:
                promoted = run(here, shared_registry, "models", "promote", "churn", "2", "--to", "production")
                assert promoted.returncode == 0, promoted.stderr  # the registry's database is up
                wait_for("the load of churn/2 failed for the registry",
                         lambda: metric(server, "shipml_model_load_failures_total", reason="registry") >= 1, 60)  # fmt: skip
                down = served(server)
                time.sleep(2)  # more polls, backing off, while S3 stays down
                still = served(server)
            finally:
                shared_registry.s3.set_mode("pass")
            wait_for("churn/2 loaded once S3 is back", lambda: served(server)["version"] == "2", 60)
        print(f"FIGURE shared registry S3 down: requests {dict(seen)}; load failures "
              f"{metric(server, 'shipml_model_load_failures_total', reason='registry'):.0f} (reason registry); "
              f"error: {down['registry']['last_error']}")  # fmt: skip
        assert set(seen) <= {(200, "1"), (200, "2")} and seen[(200, "1")] > 0, seen
        assert down["version"] == still["version"] == "1", (down, still)
        assert down["registry"]["desired_version"] == "2" and "churn/2" in down["registry"]["last_error"]
        assert metric(server, "shipml_model_load_failures_total", reason="load") == 0
    finally:
        shared_registry.s3.set_mode("pass")
        assert server.stop() == 0
        run(project, shared_registry, "models", "promote", "churn", "1", "--to", "production")


def test_two_promotions_at_once(shared_registry: SharedRegistry, project: Path) -> None:
    """Two `models promote` processes of one model at once: both moves are in the history, `previous` is the
    production before the last move, and a promotion whose move was overwritten says so (exit 1, one line)."""
    registry = shared_registry.client()
    gate = shared_registry.taps[0].proxy  # both processes' way to the server: held, then released together
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPML_")} | {"SHIPML_REGISTRY_URI": gate.url}
    outcomes = []
    for round_, (base, a, b) in enumerate((("1", "2", "3"), ("2", "3", "1"), ("3", "1", "2"))):
        assert run(project, shared_registry, "models", "promote", "churn", base, "--to", "production").returncode == 0
        before = len(registry.history("churn"))
        procs = []
        gate.hold()
        try:
            for version in (a, b):  # two people promoting at once: their first requests go on together
                out, err = project / f"race{round_}-{version}.out", project / f"race{round_}-{version}.err"
                argv = ["models", "promote", "churn", version, "--to", "production", "--reason", f"race {round_}"]
                procs.append((version, start(argv, project, env, out, err), err))
            wait_for("both promotions wait at the registry", lambda: gate.held >= 2, 60)
        finally:
            gate.release()
        codes = {version: proc.wait(120) for version, proc, _ in procs}
        errors = {version: err.read_text() for version, _, err in procs}
        moves = [m for m in registry.history("churn")[before:] if m.alias == "production"]
        aliases = registry.aliases("churn")
        outcomes.append((codes, [m.to_version for m in moves], aliases))
        # both moves are in the history, one of them holds production, `previous` is the latest other holder
        # (the history is in the order the moves were recorded, each just after its write: two processes' can
        # come in either order)
        assert sorted(m.to_version or "-" for m in moves) == sorted((a, b)), moves
        assert aliases["production"] in (a, b)
        held = [base, *(m.to_version for m in moves)]
        want_previous = next(v for v in reversed(held) if v != aliases["production"])
        assert aliases.get("previous") == want_previous, (aliases, moves, base)
        for version, code in codes.items():
            assert code in (0, 1), (code, errors[version])
            if code == 1:  # overwritten by the other: refused in one line naming both moves' record
                lines = [line for line in errors[version].splitlines() if line.strip()]
                assert len(lines) == 1 and "concurrent change" in lines[0] and "Traceback" not in errors[version]
        assert 0 in codes.values(), codes
    print(f"FIGURE shared registry concurrent promotions: {outcomes}")
    run(project, shared_registry, "models", "promote", "churn", "1", "--to", "production")


def test_three_replicas_download_a_flipped_version_once_each(shared_registry: SharedRegistry, project: Path) -> None:
    counters = shared_registry.taps  # one per replica, in front of the MLflow server
    servers = []
    try:
        for i, counter in enumerate(counters):
            here = replica_dir(project, f"replica{i}")
            servers.append(spawn_server(here, "--workers", "2", env={"SHIPML_REGISTRY_URI": counter.url}))
        for server in servers:
            server.wait_ready()
        started = [collections.Counter(c.paths()) for c in counters]
        promoted = run(project, shared_registry, "models", "promote", "churn", "2", "--to", "production")
        assert promoted.returncode == 0, promoted.stderr
        for server in servers:  # every worker of every replica: 20 answers each
            wait_for("every worker serves churn/2", lambda s=server: {  # type: ignore[misc]
                requests.post(f"{s.url}/predict", json={"features": ROWS[0]}, timeout=10).json()["model"]["version"]
                for _ in range(20)} == {"2"})  # fmt: skip
        time.sleep(3)  # a few more polls: none downloads again
        flipped = [collections.Counter(c.paths()) - s for c, s in zip(counters, started, strict=True)]
        files = [collections.Counter(p.split("/", 1)[1] for p in f) for f in flipped]
        print("FIGURE shared registry replicas: artifact GETs per replica at start "
              f"{[sum(s.values()) for s in started]}, after the flip {[sum(f.values()) for f in files]}")  # fmt: skip
        for i, got in enumerate(files):
            assert got, f"replica {i} downloaded nothing for churn/2"
            assert max(got.values()) == 1, (i, got.most_common(3))  # each file of the version once per replica
            assert any(p.endswith("model.skops") for p in got), got
        for i, s in enumerate(started):  # each replica's two workers loaded churn/1 with one download between them
            assert max(collections.Counter(p.split("/", 1)[1] for p in s).values()) == 1, (i, s)
        # nothing through presigned storage URLs: a replica talks to the MLflow server alone
        assert not [p for c in counters for p in c.paths() if not p.startswith("artifacts/")]
    finally:
        for server in servers:
            server.stop()
        run(project, shared_registry, "models", "promote", "churn", "1", "--to", "production")
