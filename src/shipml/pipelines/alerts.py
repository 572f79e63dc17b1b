"""The built-in notifier for teams without Prometheus: a monitoring report's verdict, to ``monitor.webhook_url``.

What the message says lives here (``message``: Slack's incoming-webhook shape, with a one-line ``summary``, the
details and a machine-readable ``shipml`` object); the adapter (adapters/notify.py) decides whether it is news and
delivers it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shipml.adapters.notify import QUIET, NotifyResult, VerdictChange, WebhookNotifier
from shipml.adapters.store import PredictionStore
from shipml.config import MonitorSettings
from shipml.core.monitor_report import DriftReport

_QUIET_TEXT = {
    "no_drift": "back to no_drift",
    "not_enough_data": "not enough data to judge",
    "no_data": "no predictions served",
}
_FEATURES_IN_TEXT = 5  # the one-line summary names this many drifted features, then "+N more"
_HEADER_MAX, _SECTION_MAX = 150, 3000  # Slack Block Kit limits: header plain_text, section text


def change_of(report: DriftReport, report_id: int | None) -> VerdictChange:
    """What a message says of ``report``: its verdict, the drifted features and one line per performance drop."""
    features = tuple(dict.fromkeys(f for s in report.segments for f in s.drifted))
    drops = tuple(
        f"version {s.version} ({s.variant}): {p.reason}" for s in report.segments for p in s.performance if p.dropped
    )
    return VerdictChange(
        model=report.model,
        previous=None,
        verdict=report.verdict,
        features=features,
        drops=drops,
        since=report.since,
        until=report.until,
        report_id=report_id,
        hint=f"shipml monitor report -m {report.model} -o report.html",
    )


def notify_change(
    settings: MonitorSettings, store: PredictionStore, report: DriftReport, report_id: int | None
) -> NotifyResult | None:
    """Send the report's verdict to ``monitor.webhook_url`` if it changed; what was sent is kept in the store
    (``store.notifications``), so whichever worker or replica runs the job next knows it. Never raises."""
    url = settings.webhook_url
    if not url:
        return None
    notifier = WebhookNotifier(url, settings.webhook_cooldown_s, compose=message, state=store.notifications)
    return notifier.notify(change_of(report, report_id))


def message(change: VerdictChange, previous: str | None, now: float) -> dict[str, Any]:
    """Slack's incoming-webhook shape: ``text`` (the notification line, and what non-Block-Kit receivers show),
    ``blocks`` (header, details as a mrkdwn section, the hint as context) and a machine-readable ``shipml``."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(_header(change), _HEADER_MAX)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(_details(change, previous), _SECTION_MAX)}},
    ]
    if change.hint:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(_esc(change.hint), 2000)}]})
    return {
        "text": _esc(summary(change, now)),
        "blocks": blocks,
        "shipml": {
            "model": change.model,
            "verdict": change.verdict,
            "previous": previous,
            "features": list(change.features),
            "drops": list(change.drops),
            "since": change.since,
            "until": change.until,
            "report_id": change.report_id,
        },
    }


def summary(change: VerdictChange, now: float) -> str:
    """The one-line summary, e.g. "shipml: churn drift detected in 3 features (tenure, contract,
    monthly_charges) over the last 24h" or "shipml: churn back to no_drift over the last 24h"."""
    parts = []
    if change.verdict in ("drift", "warn"):
        what = "drift detected" if change.verdict == "drift" else "drift warning"
        parts.append(what + _features_phrase(change.features))
    elif change.verdict in QUIET:
        if not change.drops or change.verdict != "no_drift":
            parts.append(_QUIET_TEXT[change.verdict])
    else:
        parts.append(f"verdict {change.verdict}")
    if change.drops:
        more = f" (+{len(change.drops) - 1} more)" if len(change.drops) > 1 else ""
        parts.append(f"performance dropped: {change.drops[0]}{more}")
    return f"shipml: {change.model} {' and '.join(parts)} {_window_phrase(change.since, change.until, now)}"


def _features_phrase(features: tuple[str, ...]) -> str:
    if not features:
        return ""
    shown = list(features[:_FEATURES_IN_TEXT])
    if len(features) > _FEATURES_IN_TEXT:
        shown.append(f"+{len(features) - _FEATURES_IN_TEXT} more")
    noun = "feature" if len(features) == 1 else "features"
    return f" in {len(features)} {noun} ({', '.join(shown)})"


def _window_phrase(since: float, until: float, now: float) -> str:
    length = _duration(until - since)
    if abs(now - until) <= max(300.0, 0.05 * (until - since)):
        return f"over the last {length}"
    return f"over {length} ending {_stamp(until)}"


def _duration(seconds: float) -> str:
    s = round(max(seconds, 0.0))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0 and (unit != "d" or s >= 2 * size):  # 24h reads as the config spells it
            return f"{s // size}{unit}"
    if s >= 3600:
        return f"{s / 3600:.1f}h"
    return f"{s}s"


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _header(change: VerdictChange) -> str:
    if change.verdict == "drift":
        what = "drift detected"
    elif change.verdict == "warn":
        what = "drift warning"
    else:
        what = change.verdict
    return f"shipml: {change.model}: {what}" + (", performance dropped" if change.drops else "")


def _details(change: VerdictChange, previous: str | None) -> str:
    lines = [
        f"*Model:* {_esc(change.model)}",
        f"*Verdict:* {_esc(change.verdict)}" + (f" (was {_esc(previous)})" if previous else ""),
        f"*Window:* {_stamp(change.since)} to {_stamp(change.until)} ({_duration(change.until - change.since)})",
    ]
    if change.features:
        names = ", ".join(_esc(f) for f in change.features)
        lines.append(f"*Drifted features ({len(change.features)}):* {names}")
    if change.drops:
        lines.append("*Performance dropped:*")
        lines.extend(f"• {_esc(d)}" for d in change.drops)
    if change.report_id is not None:
        lines.append(f"*Report:* #{change.report_id}")
    return "\n".join(lines)


def _esc(text: str) -> str:
    """Slack reads ``&``, ``<`` and ``>`` as markup (``<!channel>`` would ping everyone): escape them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
