"""A real Prometheus and Alertmanager (Debian's packages) started for the tests, or a skip that says why.

`prometheus_stack(scrape={"shipml": ["127.0.0.1:8000"]})` starts, each on a free port of 127.0.0.1 with
its files in a temporary directory:

- a webhook receiver (a thread) that records every JSON body Alertmanager posts;
- Alertmanager with the shipped `deploy/prometheus/alertmanager.yml`, its webhook URLs pointed at that
  receiver and its group waits cut to 1 s (the routing, grouping and inhibition stay those we ship);
- Prometheus scraping the given targets and evaluating the given rule files every second, sending to
  that Alertmanager.

Durations: the shipped rules wait minutes (`for`, `keep_firing_for`), a test cannot. With
`fast="3s"` (the default) the stack evaluates a copy of each rule file in which every alert's `for`
and `keep_firing_for` is that duration; expressions, labels and annotations are untouched.
`fast=None` keeps the files as they are.

On leaving the `with` block every process is stopped (SIGTERM, then SIGKILL after 10 s) and the
directory removed: nothing stays listening.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support.server import free_port

DEPLOY = Path(__file__).parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "rules.yml"
RULES_TEST = DEPLOY / "rules_test.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus.yml"

_INSTALL = "Debian: apt-get install prometheus prometheus-alertmanager; `make system-deps` does it as root"


def binary(*names: str) -> str:
    """The path of the first of `names` on PATH (or in /usr/bin), or skip the test saying what is missing."""
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
        if found:
            return found
    pytest.skip(f"{' / '.join(names)} is not installed ({_INSTALL})")


class _Recorder(BaseHTTPRequestHandler):
    """Answers 200 to every POST and hands the JSON body to the server's webhook."""

    server: _WebhookServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.webhook.record(self.path, body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows the recorded bodies when a test fails."""


class _WebhookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, webhook: Webhook) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.webhook = webhook


@dataclass
class Webhook:
    """A local HTTP receiver of Alertmanager's webhook: every JSON body posted, in order."""

    received: list[dict[str, Any]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _server: _WebhookServer | None = None

    def start(self) -> Webhook:
        self._server = _WebhookServer(self)
        threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "the webhook receiver is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def record(self, path: str, body: bytes) -> None:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {"unparsed": body.decode(errors="replace")}
        with self._changed:
            self.received.append({"path": path, **payload} if isinstance(payload, dict) else {"body": payload})
            self._changed.notify_all()

    def wait_for(self, matches: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
        """The first body posted (already or within `timeout` s) for which `matches` is true."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for body in self.received:
                    if matches(body):
                        return body
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching webhook call within {timeout} s; received: {self.received}")
                self._changed.wait(left)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass
class Process:
    """One server process we started: its URL, its log file, and a clean stop."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready within {timeout} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _spawn(name: str, argv: list[str], workdir: Path, port: int) -> Process:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
    started = Process(name, f"http://127.0.0.1:{port}", proc, log)
    try:
        started.wait_ready()
    except BaseException:
        started.stop()
        raise
    return started


class Prometheus(Process):
    """A running Prometheus and the parts of its HTTP API the tests read."""

    def api(self, path: str, **params: str) -> Any:
        """`data` of a GET on /api/v1/<path>; a failed call raises with Prometheus's own error."""
        answer = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = answer.json()
        if answer.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"GET /api/v1/{path}: {answer.status_code} {body}")
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing): labels, annotations, state, activeAt, value."""
        return list(self.api("alerts")["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        """Rule groups as loaded, each rule with its state, health and lastError."""
        return list(self.api("rules")["groups"])

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector result."""
        return list(self.api("query", query=expr)["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def wait_for(self, what: str, found: Callable[[], Any], timeout: float) -> Any:
        """Poll `found()` every 0.2 s until it returns something truthy; fail with the log otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}: {self.log_tail()}")
            value = found()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not seen within {timeout} s; alerts: {self.alerts()}")
            time.sleep(0.2)

    def wait_for_alert(
        self, name: str, state: str, labels: Mapping[str, str] | None = None, timeout: float = 20
    ) -> dict[str, Any]:
        """The alert `name` in `state` ("pending" or "firing"), with these labels among its own."""

        def found() -> dict[str, Any] | None:
            for alert in self.alerts():
                own = alert["labels"]
                wanted = all(own.get(k) == v for k, v in (labels or {}).items())
                if own.get("alertname") == name and alert["state"] == state and wanted:
                    return alert
            return None

        return dict(self.wait_for(f"alert {name} {state} {dict(labels or {})}", found, timeout))

    def wait_for_no_alert(self, name: str, timeout: float = 20) -> None:
        self.wait_for(
            f"alert {name} gone", lambda: all(a["labels"].get("alertname") != name for a in self.alerts()), timeout
        )

    def wait_for_targets_up(self, timeout: float = 20) -> None:
        def up() -> bool:
            targets = self.targets()
            return bool(targets) and all(t["health"] == "up" for t in targets)

        self.wait_for("every scrape target up", up, timeout)


def fast_rules(source: Path, target: Path, duration: str) -> Path:
    """A copy of the rule file `source` where every alert's `for` and `keep_firing_for` is `duration`."""
    doc = yaml.safe_load(source.read_text())
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" in rule:
                rule["for"] = duration
                rule["keep_firing_for"] = duration
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


def alertmanager_config(source: Path, webhook_url: str) -> dict[str, Any]:
    """The shipped Alertmanager config with every webhook aimed at `webhook_url` and 1 s group waits."""
    doc: dict[str, Any] = yaml.safe_load(source.read_text())
    for receiver in doc.get("receivers", []):
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = "1s"
        for child in route.get("routes", []):
            shorten(child)

    shorten(doc["route"])
    return doc


def start_alertmanager(workdir: Path, webhook_url: str, config: Path = ALERTMANAGER_CONFIG) -> Process:
    exe = binary("prometheus-alertmanager", "alertmanager")
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(config, webhook_url)))
    port = free_port()
    argv = [
        exe,
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip port (9094): one instance, nothing else listening
    ]
    return _spawn("alertmanager", argv, workdir, port)


def start_prometheus(
    workdir: Path, scrape: Mapping[str, Sequence[str]], rule_files: Sequence[Path], alertmanager: str | None
) -> Prometheus:
    """Prometheus scraping `scrape` (job name -> host:port targets) every second, rules evaluated every second."""
    exe = binary("prometheus")
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]} for job, targets in scrape.items()
        ],
    }
    if alertmanager is not None:
        host = alertmanager.removeprefix("http://")
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    argv = [
        exe,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    started = _spawn("prometheus", argv, workdir, port)
    return Prometheus(started.name, started.url, started.proc, started.log)


@dataclass
class Stack:
    prometheus: Prometheus
    alertmanager: Process | None
    webhook: Webhook | None
    workdir: Path


@contextlib.contextmanager
def prometheus_stack(
    scrape: Mapping[str, Sequence[str]],
    rule_files: Sequence[Path] = (RULES,),
    *,
    fast: str | None = "3s",
    with_alertmanager: bool = True,
) -> Iterator[Stack]:
    """Webhook receiver, Alertmanager and Prometheus, started in that order and all stopped on exit."""
    binary("prometheus")  # skip before starting anything when a binary is missing
    if with_alertmanager:
        binary("prometheus-alertmanager", "alertmanager")
    workdir = Path(tempfile.mkdtemp(prefix="shipml-prom-"))
    rules = [fast_rules(p, workdir / f"fast-{i}-{p.name}", fast) if fast else p for i, p in enumerate(rule_files)]
    webhook: Webhook | None = None
    alertmanager: Process | None = None
    prometheus: Prometheus | None = None
    try:
        if with_alertmanager:
            webhook = Webhook().start()
            alertmanager = start_alertmanager(workdir, webhook.url)
        prometheus = start_prometheus(workdir, scrape, rules, alertmanager.url if alertmanager else None)
        yield Stack(prometheus, alertmanager, webhook, workdir)
    finally:
        for process in (prometheus, alertmanager):
            if process is not None:
                process.stop()
        if webhook is not None:
            webhook.close()
        shutil.rmtree(workdir, ignore_errors=True)
