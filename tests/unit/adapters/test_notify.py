"""The webhook notifier against a real HTTP server on 127.0.0.1: the message, only on change, cooldown,
retries and back-off (with an injected sleep: no real waiting), state across restarts, no exception ever,
and the secret URL never in a log line."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from shipml.adapters import notify as notify_module
from shipml.adapters.notify import MAX_DELAY_S, VerdictChange, WebhookNotifier
from shipml.adapters.store import PredictionStore
from shipml.core.notification import SentVerdict
from shipml.errors import StoreError
from shipml.pipelines.alerts import message

SECRET_PATH = "/services/T0SHIPML/B0SECRET/xoxTOKENsecret42"
DAY = 86_400.0
NOW = 1_767_323_045.0  # 2026-01-02 03:04:05 UTC


@dataclass
class Hook:
    """A webhook receiver: records every request; answers from ``script`` (then 200 "ok")."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]] | str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.received.append(json.loads(body))
            state.headers.append(dict(self.headers))
            answer = state.script.pop(0) if state.script else (200, {})
            if answer == "hang":
                state.release.wait(10)
                return
            assert not isinstance(answer, str)
            status, extra = answer
            payload = b"ok" if status == 200 else b"invalid_payload"
            if status == 404:  # as many servers do: the path echoed back, and here the path is the secret
                payload = f"no route for POST {self.path}".encode()
            self.send_response(status)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """structlog events while the test runs (a fresh logger, in case another test cached the module's)."""
    with capture_logs() as events:
        original = notify_module.log
        notify_module.log = structlog.get_logger("shipml.monitor")
        try:
            yield events
        finally:
            notify_module.log = original


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def change(verdict: str = "drift", **kw: Any) -> VerdictChange:
    values: dict[str, Any] = {
        "model": "churn",
        "previous": "no_drift",
        "verdict": verdict,
        "features": ("tenure", "contract", "monthly_charges") if verdict == "drift" else (),
        "since": NOW - DAY,
        "until": NOW,
        "report_id": 42,
        "hint": "shipml monitor report --window 24h -o report.html",
    }
    values.update(kw)
    return VerdictChange(**values)


def notifier(url: str, *, clock: Clock | None = None, sleeps: list[float] | None = None, **kw: Any) -> WebhookNotifier:
    sink = sleeps if sleeps is not None else []
    cooldown = kw.pop("cooldown_s", 3600.0)
    return WebhookNotifier(url, cooldown, compose=message, sleep=sink.append, clock=clock or Clock(), **kw)


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{SECRET_PATH}"


# only on change, and the cooldown


def test_only_a_change_is_sent(hook: Hook) -> None:
    n = notifier(hook.url)

    assert n.notify(change("drift")).sent
    repeat = n.notify(change("drift"))
    assert not repeat.sent and repeat.suppressed == "unchanged" and repeat.attempts == 0
    assert n.notify(change("no_drift")).sent
    assert n.notify(change("no_drift")).suppressed == "unchanged"
    assert [b["shipml"]["verdict"] for b in hook.received] == ["drift", "no_drift"]


def test_a_performance_drop_under_the_same_verdict_is_a_change(hook: Hook) -> None:
    clock = Clock()
    n = notifier(hook.url, clock=clock)
    n.notify(change("warn"))

    assert n.notify(change("warn", drops=("rmse 4.1 vs holdout 3.2",))).sent
    assert n.notify(change("warn")).suppressed == "cooldown"  # "warn" without a drop was sent a moment ago
    clock.t += 3600
    assert n.notify(change("warn")).sent
    assert [b["shipml"]["drops"] for b in hook.received] == [[], ["rmse 4.1 vs holdout 3.2"], []]


def test_quiet_verdicts_are_not_news_until_something_alarming_was_sent(hook: Hook) -> None:
    n = notifier(hook.url)

    assert n.notify(change("no_drift", previous=None)).suppressed == "quiet"
    assert n.notify(change("not_enough_data")).suppressed == "quiet"
    assert hook.received == []
    assert n.notify(change("drift")).sent
    assert n.notify(change("not_enough_data", previous="drift")).sent  # leaving an alarm is news
    assert n.notify(change("no_drift")).suppressed == "quiet"
    assert len(hook.received) == 2


def test_cooldown_sends_the_first_of_a_flapping_verdict_and_suppresses_its_repeats(hook: Hook) -> None:
    clock = Clock()
    n = notifier(hook.url, clock=clock, cooldown_s=3600.0)

    assert n.notify(change("drift")).sent
    clock.t += 600
    assert n.notify(change("no_drift")).sent
    clock.t += 600
    flap = n.notify(change("drift"))
    assert not flap.sent and flap.suppressed == "cooldown"
    clock.t += 600
    assert n.notify(change("no_drift")).suppressed == "unchanged"  # the channel was last told no_drift
    clock.t = NOW + 3600.0
    assert n.notify(change("drift")).sent  # the cooldown is over, still drifting: told again
    assert [b["shipml"]["verdict"] for b in hook.received] == ["drift", "no_drift", "drift"]


def test_a_failed_send_is_not_remembered_so_the_next_run_tries_again(hook: Hook) -> None:
    n = notifier(hook.url)
    hook.script = [(400, {})]

    assert not n.notify(change("drift")).sent
    assert n.notify(change("drift")).sent
    assert len(hook.received) == 2


def test_state_survives_a_restart_through_the_store(hook: Hook, tmp_path: Path) -> None:
    store = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    clock = Clock()
    assert notifier(hook.url, clock=clock, state=store.notifications).notify(change("drift")).sent

    restarted = notifier(hook.url, clock=clock, state=store.notifications)
    assert restarted.notify(change("drift")).suppressed == "unchanged"
    clock.t += 60
    assert restarted.notify(change("no_drift")).sent
    clock.t += 60
    assert notifier(hook.url, clock=clock, state=store.notifications).notify(change("drift")).suppressed == "cooldown"

    assert len(hook.received) == 2
    kept = store.notifications.last("churn")
    assert kept is not None and kept.verdict == "no_drift" and set(kept.sent_at) == {"drift", "no_drift"}
    with store.database.engine.connect() as conn:  # the webhook's URL, a secret, is not kept
        saved = " ".join(str(r) for r in conn.exec_driver_sql("SELECT * FROM webhook_notifications"))
    assert SECRET_PATH not in saved and "xoxTOKEN" not in saved
    store.close()


class _Failing:
    """A state the store cannot read or write (the database is down)."""

    def last(self, model: str) -> SentVerdict | None:
        raise StoreError("store: cannot read the notifications of 'churn': connection refused")

    def record(self, sent: SentVerdict) -> None:
        raise StoreError("store: cannot record the notification of 'churn': connection refused")


def test_a_failing_state_is_a_warning_not_a_failure(hook: Hook, logs: list[Any]) -> None:
    n = notifier(hook.url, state=_Failing())

    assert n.notify(change("drift")).sent
    assert n.notify(change("drift")).suppressed == "unchanged"  # remembered in memory meanwhile
    assert {"webhook_state_unreadable", "webhook_state_unwritable"} <= {e["event"] for e in logs}


# retries and back-off


def test_5xx_is_retried_with_exponential_backoff(hook: Hook) -> None:
    sleeps: list[float] = []
    hook.script = [(500, {}), (503, {})]

    result = notifier(hook.url, sleeps=sleeps, backoff_s=1.0).notify(change())

    assert result.sent and result.attempts == 3 and result.error is None
    assert len(hook.received) == 3 and hook.received[0] == hook.received[2]
    assert len(sleeps) == 2
    assert 1.0 <= sleeps[0] <= 1.1 and 2.0 <= sleeps[1] <= 2.1  # backoff_s * 2**i plus at most 10 % jitter


def test_giving_up_after_the_attempts_returns_the_last_error(hook: Hook, logs: list[Any]) -> None:
    sleeps: list[float] = []
    hook.script = [(502, {})] * 4

    result = notifier(hook.url, sleeps=sleeps, attempts=4, backoff_s=10.0).notify(change())

    assert not result.sent and result.attempts == 4 and len(hook.received) == 4
    assert result.error == "HTTP 502: invalid_payload"
    assert sleeps[0] >= 10.0 and sleeps[1] >= 20.0 and sleeps[2] == MAX_DELAY_S  # 40 s capped at 30 s
    [warning] = [e for e in logs if e["event"] == "webhook_failed"]
    assert warning["log_level"] == "warning" and warning["attempts"] == 4 and warning["model"] == "churn"


@pytest.mark.parametrize(("retry_after", "expected"), [("7", 7.0), ("3600", MAX_DELAY_S), ("0", 0.0)])
def test_429_honours_retry_after_capped(hook: Hook, retry_after: str, expected: float) -> None:
    sleeps: list[float] = []
    hook.script = [(429, {"Retry-After": retry_after})]

    result = notifier(hook.url, sleeps=sleeps).notify(change())

    assert result.sent and result.attempts == 2
    assert sleeps == [expected]


def test_429_retry_after_as_an_http_date(hook: Hook) -> None:
    sleeps: list[float] = []
    hook.script = [(429, {"Retry-After": "Fri, 02 Jan 2026 03:04:17 GMT"})]  # NOW + 12 s

    assert notifier(hook.url, sleeps=sleeps).notify(change()).sent
    assert sleeps == [pytest.approx(12.0)]


@pytest.mark.parametrize("status", [400, 403, 404, 410, 302])
def test_a_client_error_or_a_redirect_is_not_retried(hook: Hook, status: int) -> None:
    sleeps: list[float] = []
    hook.script = [(status, {"Location": "http://127.0.0.1:9/elsewhere"})]

    result = notifier(hook.url, sleeps=sleeps).notify(change())

    assert not result.sent and result.attempts == 1 and sleeps == []
    assert result.error is not None and result.error.startswith(f"HTTP {status}")
    assert len(hook.received) == 1


def test_a_hanging_receiver_times_out_and_is_retried(hook: Hook) -> None:
    sleeps: list[float] = []
    hook.script = ["hang", "hang"]

    result = notifier(hook.url, sleeps=sleeps, timeout_s=0.2, attempts=2).notify(change())

    assert not result.sent and result.attempts == 2 and len(sleeps) == 1
    assert result.error is not None and "timed out" in result.error


# never an exception, never the secret


@pytest.mark.parametrize(
    "url",
    [
        "refused",
        f"http://shipml-no-such-host.invalid{SECRET_PATH}",
        f"hooks.slack.com{SECRET_PATH}",
        f"ftp://hooks.example.com{SECRET_PATH}",
        f"http://hooks.example.com:99999{SECRET_PATH}",
        f"http://[::1{SECRET_PATH}",
        "",
    ],
)
def test_an_unreachable_or_malformed_url_never_raises_nor_leaks(url: str, logs: list[Any]) -> None:
    url = refused_url() if url == "refused" else url
    sleeps: list[float] = []

    result = notifier(url, sleeps=sleeps, attempts=2).notify(change())

    assert not result.sent and result.error
    assert len(sleeps) <= 1
    assert any(e["event"] == "webhook_failed" for e in logs)
    assert "TOKEN" not in result.error and "services" not in result.error
    assert "TOKEN" not in repr(logs) and "services" not in repr(logs)


def test_a_bad_url_names_the_setting(logs: list[Any]) -> None:
    result = notifier(f"hooks.slack.com{SECRET_PATH}").notify(change())

    assert result.error is not None and result.error.startswith("monitor.webhook_url: expected an http")
    assert result.attempts == 0


def test_any_failure_inside_is_a_result_not_an_exception(hook: Hook, logs: list[Any]) -> None:
    def broken_clock() -> float:
        raise RuntimeError("clock broke")

    result = WebhookNotifier(hook.url, 60.0, compose=message, clock=broken_clock).notify(change())

    assert not result.sent and result.error == "RuntimeError: clock broke"
    assert any(e["event"] == "webhook_failed" for e in logs)


def test_logs_name_only_scheme_and_host_never_the_path_or_token(hook: Hook, logs: list[Any]) -> None:
    sleeps: list[float] = []
    secret_url = hook.url.replace("http://", "http://user:pa55word@")
    hook.script = [(500, {}), (400, {})]
    n = notifier(secret_url, sleeps=sleeps)

    n.notify(change("drift"))
    n.notify(change("warn"))
    hook.script = [(404, {})]
    echoed = n.notify(change("drift", drops=("accuracy 0.5",)))

    events = [e["event"] for e in logs]
    assert events == ["webhook_failed", "webhook_sent", "webhook_failed"]
    assert echoed.error == "HTTP 404: no route for POST <webhook>"
    assert hook.headers[-1]["Authorization"] == "Basic " + base64.b64encode(b"user:pa55word").decode()
    port = hook.url.split(":")[2].split("/")[0]
    assert {e["target"] for e in logs} == {f"http://127.0.0.1:{port}"}
    text = repr(logs) + repr(echoed)
    for secret in (SECRET_PATH, "xoxTOKENsecret42", "B0SECRET", "pa55word", "user:"):
        assert secret not in text
