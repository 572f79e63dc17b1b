"""The webhook notifier: a JSON message when a model's monitoring verdict changes.

For teams without Prometheus and Alertmanager (``monitor.webhook_url``). What the message says is the caller's
(``compose``: pipelines/alerts.py writes Slack's shape); this module delivers it. A message goes out only on a change
(the last verdict sent per model is kept by ``state``: the prediction store's ``notifications``, shared by every
worker, replica and cron run of the CLI that may run the monitoring job; in memory when none is given), at most once per model and verdict per cooldown, and is retried with exponential back-off on
network errors, timeouts, 429 and 5xx. A notification never breaks the monitoring job: ``notify`` returns what
happened and never raises. The URL is a secret (a Slack webhook URL is its own credential): logs and errors name
only its scheme and host, and the state holds none of it.

HTTP goes through the standard library (``urllib``): ``requests`` is not a runtime dependency of shipml.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import math
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import structlog

from shipml.core.notification import SentVerdict
from shipml.errors import StoreError

log = structlog.get_logger("shipml.monitor")

MAX_DELAY_S = 30.0  # no single wait between attempts (back-off or Retry-After) is longer than this
QUIET = frozenset({"no_drift", "not_enough_data", "no_data"})  # verdicts that are not an alarm


@dataclass(frozen=True, kw_only=True)
class VerdictChange:
    """One monitoring run's outcome for a model, as much of it as a message needs.

    ``previous`` is the caller's idea of the verdict before (shown when the notifier has sent nothing for the
    model yet); ``drops`` holds one human line per performance drop; ``hint`` tells the reader where to look
    (e.g. the command that writes the report page)."""

    model: str
    previous: str | None
    verdict: str
    features: tuple[str, ...] = ()
    drops: tuple[str, ...] = ()
    since: float
    until: float
    report_id: int | None = None
    hint: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "drops", tuple(self.drops))

    @property
    def alarming(self) -> bool:
        """Drift (or a warning, or an unknown verdict) or a performance drop: what someone must hear about."""
        return self.verdict not in QUIET or bool(self.drops)


@dataclass(frozen=True)
class NotifyResult:
    """What ``notify`` did. ``suppressed`` says why nothing was sent: "unchanged" (the last message sent for
    the model said the same), "quiet" (neither this verdict nor the last one sent is an alarm), "cooldown" (this
    verdict was sent for the model less than the cooldown ago). ``error`` is set when sending failed."""

    sent: bool
    attempts: int = 0
    error: str | None = None
    suppressed: str | None = None


class NotifierState(Protocol):
    """Where the notifier keeps what it sent (``store.notifications``)."""

    def last(self, model: str) -> SentVerdict | None: ...
    def record(self, sent: SentVerdict) -> None: ...


@dataclass(frozen=True)
class _Attempt:
    error: str | None  # None: delivered
    retry: bool = False
    retry_after: float | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a delivery: urllib would turn a redirected POST into a bodiless GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# The message of a change: (the change, the verdict sent before for its model or the caller's ``previous``, now) to
# the JSON body posted.
Compose = Callable[["VerdictChange", str | None, float], Mapping[str, Any]]


class WebhookNotifier:
    """POSTs the message ``compose`` writes to ``url`` when a model's verdict changes; never raises."""

    def __init__(
        self,
        url: str,
        cooldown_s: float,
        *,
        compose: Compose,
        timeout_s: float = 5.0,
        attempts: int = 4,
        backoff_s: float = 1.0,
        state: NotifierState | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cooldown_s = cooldown_s
        self._compose = compose
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.state = state
        self._sleep = sleep
        self._clock = clock
        self._memory: dict[str, SentVerdict] = {}  # what this notifier sent, when the state cannot be read
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._rng = random.Random()  # noqa: S311 - jitter spreads retries, it guards nothing
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed "[" of an IPv6 host: reported by notify, never raised here
            parts = urlsplit("")
        # credentials in the URL (https://user:secret@host/...) go as Basic auth: urllib would not send them
        self._url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self._headers = {"Content-Type": "application/json", "User-Agent": "shipml-monitor"}
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        if parts.username is not None:
            self._headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.target = f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if _port(url) else "")
        pieces = [url, self._url, parts.path, parts.query, parts.username, parts.password, user, password]
        if "@" in parts.netloc:
            pieces.append(parts.netloc)
        self._secrets = sorted({p for p in pieces if p and len(p) > 1}, key=len, reverse=True)

    def notify(self, change: VerdictChange) -> NotifyResult:
        """Send ``change`` if it is news; what happened, never an exception (a message never breaks the job)."""
        try:
            return self._notify(change)
        except Exception as exc:  # noqa: BLE001 - the monitoring job must finish whatever the webhook does
            error = self._redact(f"{type(exc).__name__}: {exc}")
            log.warning("webhook_failed", model=change.model, verdict=change.verdict, target=self.target, error=error)
            return NotifyResult(sent=False, error=error)

    def _notify(self, change: VerdictChange) -> NotifyResult:
        problem = self._url_problem()
        if problem:
            log.warning("webhook_failed", model=change.model, verdict=change.verdict, target=self.target, error=problem)
            return NotifyResult(sent=False, error=problem)
        now = self._clock()
        last = self._last(change.model)
        reason = self._suppressed(change, last, now)
        if reason:
            return NotifyResult(sent=False, suppressed=reason)
        previous = last.verdict if last is not None else change.previous
        body = json.dumps(self._compose(change, previous, now), allow_nan=False).encode()
        attempts, error = self._deliver(body)
        if error is not None:
            log.warning(
                "webhook_failed",
                model=change.model,
                verdict=change.verdict,
                target=self.target,
                attempts=attempts,
                error=error,
            )
            return NotifyResult(sent=False, attempts=attempts, error=error)
        sent_at = dict(last.sent_at) if last is not None else {}
        sent_at[_condition(change)] = now
        self._record(SentVerdict(change.model, change.verdict, bool(change.drops), sent_at))
        log.info("webhook_sent", model=change.model, verdict=change.verdict, target=self.target, attempts=attempts)
        return NotifyResult(sent=True, attempts=attempts)

    def _url_problem(self) -> str | None:
        parts = urlsplit(self._url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"monitor.webhook_url: expected an http:// or https:// URL with a host, got scheme {parts.scheme!r}"
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError:
            return "monitor.webhook_url: the port is not a number from 0 to 65535"
        return None

    def _suppressed(self, change: VerdictChange, last: SentVerdict | None, now: float) -> str | None:
        if last is not None and (last.verdict, last.dropped) == (change.verdict, bool(change.drops)):
            return "unchanged"
        if not change.alarming and (last is None or not _alarming(last)):
            return "quiet"  # nobody was told of an alarm, and this is none: nothing to say
        sent = last.sent_at.get(_condition(change)) if last is not None else None
        if sent is not None and 0.0 <= now - sent < self.cooldown_s:
            return "cooldown"
        return None

    # delivery

    def _deliver(self, body: bytes) -> tuple[int, str | None]:
        """POST ``body`` up to ``attempts`` times; (attempts made, the last error or None when delivered)."""
        attempt = _Attempt("not attempted")
        for i in range(self.attempts):
            attempt = self._post_once(body)
            if attempt.error is None or not attempt.retry:
                return i + 1, attempt.error
            if i + 1 < self.attempts:
                self._sleep(self._delay(i, attempt.retry_after))
        return self.attempts, attempt.error

    def _delay(self, i: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_DELAY_S)
        jitter = self._rng.uniform(0.0, 0.1 * self.backoff_s)
        return min(self.backoff_s * 2.0**i + jitter, MAX_DELAY_S)

    def _post_once(self, body: bytes) -> _Attempt:
        # the scheme is checked to be http(s) before any request
        request = urllib.request.Request(self._url, data=body, method="POST", headers=self._headers)  # noqa: S310
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read(4096)
            return _Attempt(None)
        except urllib.error.HTTPError as exc:
            try:
                return self._http_error(exc)
            finally:
                exc.close()
        except urllib.error.URLError as exc:
            reason = exc.reason
            what = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
            return _Attempt(self._redact(what), retry=True)
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, a garbled answer
            return _Attempt(self._redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), True)

    def _http_error(self, exc: urllib.error.HTTPError) -> _Attempt:
        code = exc.code
        retry = code == 429 or code >= 500
        retry_after = _retry_after(exc.headers.get("Retry-After"), self._clock()) if retry else None
        try:
            detail = exc.read(200).decode("utf-8", "replace").strip().splitlines()
        except (OSError, http.client.HTTPException):
            detail = []
        text = f"HTTP {code}" + (f": {detail[0]}" if detail else "")
        return _Attempt(self._redact(text), retry=retry, retry_after=retry_after)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<webhook>")
        return text

    # state

    def _last(self, model: str) -> SentVerdict | None:
        """What was last sent for ``model``: the state's (another process may have sent since), else memory's."""
        if self.state is not None:
            try:
                return self.state.last(model)
            except StoreError as exc:
                log.warning("webhook_state_unreadable", model=model, error=exc.message)
        return self._memory.get(model)

    def _record(self, sent: SentVerdict) -> None:
        self._memory[sent.model] = sent
        if self.state is None:
            return
        try:
            self.state.record(sent)
        except StoreError as exc:
            log.warning("webhook_state_unwritable", model=sent.model, error=exc.message)


def _port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _alarming(last: SentVerdict) -> bool:
    return last.verdict not in QUIET or last.dropped


def _condition(change: VerdictChange) -> str:
    """What the cooldown is kept per (with the model): the verdict, and whether performance dropped."""
    return change.verdict + ("+performance_drop" if change.drops else "")


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


__all__ = ["MAX_DELAY_S", "QUIET", "Compose", "NotifierState", "NotifyResult", "VerdictChange", "WebhookNotifier"]
