"""The monitoring report as one self-contained HTML page (`shipml monitor report -o report.html`).

It draws a stored ``DriftReport``, the value ``/metrics`` exports, so the page and the gauges cannot disagree.
One file that opens offline: inline CSS and SVG drawn here, no script that runs, and a Content-Security-Policy
that forbids every request. The report's JSON is embedded (``<script type="application/json"
id="shipml-report">``), and every number a person reads is an element with ``data-figure`` (what it is) and
``data-value`` (full precision); one that ``/metrics`` exports also has ``data-gauge`` (the metric's name),
and the gauge's labels are the ``data-*`` of the element and its ancestors (``data-model``, ``data-version``
and ``data-variant`` on a segment's section, ``data-feature`` on a feature's card or row, ...).
When the config runs an experiment, its section (``report.experiment_section``) comes first, and its history is
embedded as well (``<script type="application/json" id="shipml-experiment">``); then a section per segment
(``report.drift_section``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from shipml.core.monitor_report import DriftReport
from shipml.errors import ConfigError
from shipml.report.drift_section import segment_section
from shipml.report.experiment_section import VERDICT_STATES, experiment_section
from shipml.report.markup import COLOURS, badge, esc, figure, json_for_script, utc

if TYPE_CHECKING:
    from shipml.core.experiment_history import ExperimentHistory

CSP = "default-src 'none'; style-src 'unsafe-inline'"  # nothing may be fetched, no script may run
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232a;background:#f6f7f9;margin:0}
main{max-width:1240px;margin:0 auto;padding:20px 24px 60px}
h1{font-size:22px;margin:0 0 10px}h2{font-size:18px;margin:28px 0 8px}h3{font-size:15px;margin:18px 0 6px}
header,section,.card{background:#fff;border:1px solid #dde1e6;border-radius:8px}
header{padding:16px 20px}section{padding:4px 20px 20px;margin-top:20px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}dt{color:#5b6570}dd{margin:0}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 10px;border-bottom:1px solid #e6e9ed;text-align:left}
th{font-weight:600;color:#5b6570;font-size:12px}.n{text-align:right;font-variant-numeric:tabular-nums}
.b{display:inline-block;white-space:nowrap;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px}
.card{padding:10px 14px}.card table{font-size:13px;white-space:nowrap}
.card h3{margin:2px 0 6px;display:flex;justify-content:space-between;gap:8px}
.muted{color:#6b7580}.ctx{color:#8a939c}.notes li{color:#8a5a00}
svg{display:block;width:100%;max-width:600px;height:auto;font-size:11px;fill:#3a434c}
svg line:not([stroke]){stroke:#c5cbd2}svg .r{fill:#b0b8c1}svg .c{fill:#1565c0}svg .thr{stroke-dasharray:4 3}
svg line.warn{stroke:#e08600}svg line.drift{stroke:#c62828}svg line.hold{stroke:#37474f;stroke-dasharray:6 3}svg .e{text-anchor:end}
svg line.zero{stroke:#37474f}svg line.when{stroke:#37474f;stroke-dasharray:2 3}.reasons{margin:6px 0}
.stack>.card+.card{margin-top:14px}
""" + "".join(f".v-{k}{{background:{c}}}svg .v-{k}{{fill:{c}}}" for k, c in COLOURS.items())


def render_report(
    report: DriftReport, report_id: int | None = None, experiment: ExperimentHistory | None = None
) -> str:
    """The whole page for ``report`` (``report_id``: its id in the store, shown when given), with the section of
    the config's ``experiment`` over the same window when there is one (its history embedded as JSON too)."""
    segments = "".join(segment_section(report, s, i) for i, s in enumerate(report.segments))
    if not report.segments:
        segments = "<section><p>No predictions with histograms in this window.</p></section>"
    section = data = ""
    if experiment is not None:
        section = experiment_section(experiment)
        data = (
            f'<script type="application/json" id="shipml-experiment">{json_for_script(experiment.to_json())}</script>'
        )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(report.model)}: monitoring report</title><style>{CSS}</style></head>"
        f"<body><main>{_header(report, report_id, experiment)}{section}{segments}</main>"
        f'<script type="application/json" id="shipml-report">{json_for_script(report.to_json())}</script>{data}'
        "</body></html>\n"
    )


def write_report(
    report: DriftReport, path: str | Path, report_id: int | None = None, experiment: ExperimentHistory | None = None
) -> Path:
    """Write the page to ``path`` through a temporary file beside it, so no reader sees half a page.
    A path that cannot be written is a ``ConfigError`` naming it."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError([f"{target}: is a directory; give the HTML file to write, e.g. {target / 'report.html'}"])
    if not target.parent.is_dir():
        raise ConfigError([f"{target}: directory {target.parent} does not exist"])
    text = render_report(report, report_id, experiment)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise ConfigError([f"{target}: cannot write the report ({exc.strerror or exc})"]) from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        tmp.chmod(0o644)  # a page to share, not mkstemp's 0600
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError([f"{target}: cannot write the report ({exc.strerror or exc})"]) from None
    return target


def _header(report: DriftReport, report_id: int | None, experiment: ExperimentHistory | None) -> str:
    def time(name: str, ts: float, **data: object) -> str:
        return figure("span", name, ts, utc(ts), cls="", **data)

    drop = " " + badge("drift", "performance drop") if report.performance_drop else ""
    rows = [
        ("window", f"{time('window_since', report.since)} to {time('window_until', report.until)} "
                   f"({(report.until - report.since) / 3600:.4g} h)"),
        ("verdict", badge(report.verdict, figure="report_verdict", verdict=report.verdict) + drop),
        ("created", time("created_at", report.created_at, model=report.model,
                         gauge="shipml_monitor_last_success_timestamp_seconds")),
        ("segments", esc(", ".join(f"version {s.version} / {s.variant}" for s in report.segments) or "none")),
    ]  # fmt: skip
    if experiment is not None:
        verdict = experiment.report.verdict
        rows.append(
            ("experiment", f'<a href="#experiment">{badge(VERDICT_STATES[verdict], verdict.replace("_", " "))}</a>')
        )
    if report_id is not None:
        rows.append(("report id", figure("span", "report_id", report_id, cls="")))
    meta = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        f"<header><h1>Monitoring report: {esc(report.model)}</h1><dl>{meta}</dl>"
        '<p class="muted">Per feature: the reference (training) share of each bucket against the window\'s, '
        "the statistics (bold: those that decide the verdict), the first over time against its warn and drift "
        "thresholds, and the verdict. Then the model's performance, realised from feedback and estimated "
        "from its probabilities, against the holdout value.</p></header>"
    )
