"""The report page's section of one segment (a version and variant of the model): the verdict of each feature,
a card per feature (its statistics, the reference against the window's distribution, the statistic over time) and
the model's performance (realised and estimated, over time, against the holdout value)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from shipml.core.binning import PREDICTION
from shipml.core.drift import MULTIVARIATE, FeatureDrift, worst
from shipml.core.monitor_report import Distribution, DriftReport, PerformanceEntry, SegmentReport, SeriesPoint
from shipml.report.markup import attrs, badge, esc, figure, fmt, utc
from shipml.report.svg import PairedBar, Scale, hline, paired_bars, polyline, px, svg, time_axis

MAX_BUCKETS = 30  # a categorical's bar chart shows its 29 largest buckets and sums the rest into one bar
KIND_COLOURS = {"realised": "#1565c0", "estimated": "#8e24aa"}


def _display(feature: str) -> str:
    names = {PREDICTION: "prediction (the model's output)", MULTIVARIATE: "multivariate (domain classifier)"}
    return names.get(feature, feature)


@dataclass(frozen=True)
class _Window:
    """The report's time axis, and the segment's index (for anchors)."""

    since: float
    until: float
    index: int


def segment_section(report: DriftReport, s: SegmentReport, index: int) -> str:
    """The section (``id="segment-<index>"``) of segment ``s`` of ``report``."""
    w = _Window(report.since, report.until, index)
    features = list(dict.fromkeys([d.feature for d in s.drift] + [d.feature for d in s.distributions]))
    model_side = [f for f in (PREDICTION, MULTIVARIATE) if f in features]
    ordered = model_side + [f for f in features if f not in model_side]
    cards = [_feature_card(w, s, f, i) for i, f in enumerate(ordered)]
    notes = "".join(f"<li>{esc(n)}</li>" for n in s.notes)
    labels = attrs(model=report.model, version=s.version, variant=s.variant)
    return (
        f'<section id="segment-{index}"{labels}><h2>Version {esc(s.version)}, variant {esc(s.variant)}: '
        f"{figure('span', 'segment_rows', s.rows, cls='')} rows, {badge(s.verdict)}</h2>"
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + _overview(w, s, ordered)
        + (f'<h3>Prediction and multivariate</h3><div class="grid">{"".join(cards[: len(model_side)])}</div>'
           if model_side else "")
        + (f'<h3>Features</h3><div class="grid">{"".join(cards[len(model_side) :])}</div>'
           if len(cards) > len(model_side) else "")
        + _performance(w, s)
        + "</section>"
    )  # fmt: skip


def _verdict_of(drift: Sequence[FeatureDrift]) -> str:
    return worst([d.verdict for d in drift if d.decisive]) if drift else "not_enough_data"


def _stat(d: FeatureDrift, tag: str = "td", statistic: str | None = None) -> str:
    """A statistic's value; a deciding one is the gauge ``shipml_drift_score``."""
    gauge = "shipml_drift_score" if d.decisive else None
    cls = "n" if d.decisive else "n ctx"
    return figure(tag, "drift_statistic", d.value, cls=cls, gauge=gauge, statistic=statistic)


def _overview(w: _Window, s: SegmentReport, features: Sequence[str]) -> str:
    rows = []
    for i, f in enumerate(features):
        drift = [d for d in s.drift if d.feature == f]
        stats = " ".join(
            f"<b>{esc(d.statistic)} {_stat(d, 'span', statistic=d.statistic)}</b>"
            if d.decisive else f"{esc(d.statistic)} {_stat(d, 'span', statistic=d.statistic)}"
            for d in drift
        )  # fmt: skip
        verdict = _verdict_of(drift)
        rows.append(
            f'<tr{attrs(feature=f)}><td><a href="#s{w.index}-f{i}">{esc(_display(f))}</a></td>'
            f"<td>{badge(verdict, figure='feature_verdict', verdict=verdict)}</td><td>{stats}</td>"
            f"{figure('td', 'drift_rows', max((d.rows for d in drift), default=None))}</tr>"
        )
    head = "<tr><th>feature</th><th>verdict</th><th>statistics</th><th>rows</th></tr>"
    return f"<h3>Overview</h3><table>{head}{''.join(rows)}</table>"


def _feature_card(w: _Window, s: SegmentReport, feature: str, i: int) -> str:
    drift = [d for d in s.drift if d.feature == feature]
    dist = next((d for d in s.distributions if d.feature == feature), None)
    series = [p for p in s.series if p.feature == feature]
    charts = _distribution_svg(dist) if dist is not None else ""
    if series:
        charts += _series_svg(w, series, next((d for d in drift if d.statistic == series[0].statistic), None))
    kind = drift[0].kind if drift else (dist.kind if dist else "")
    verdict = _verdict_of(drift)
    return (
        f'<div class="card" id="s{w.index}-f{i}"{attrs(feature=feature)}>'
        f'<h3><span>{esc(_display(feature))} <span class="muted">{esc(kind)}</span></span>'
        f"{badge(verdict, figure='feature_verdict', verdict=verdict)}</h3><table><tr><th>statistic</th>"
        "<th>value</th><th>warn / drift</th><th>p</th><th>rows</th><th>verdict</th></tr>"
        f"{''.join(_stat_row(d) for d in drift)}</table>{charts}</div>"
    )


def _stat_row(d: FeatureDrift) -> str:
    p = None if d.p_value is None else ("< 0.0001" if d.p_value < 1e-4 else fmt(d.p_value))
    detected = {"gauge": "shipml_drift_detected", "value": int(d.verdict == "drift")} if d.decisive else {}
    name = f"<b>{esc(d.statistic)}</b>" if d.decisive else esc(d.statistic)
    warn = figure("span", "threshold_warn", d.threshold_warn, f"{d.threshold_warn:g}", cls="")
    drift = figure("span", "threshold_drift", d.threshold_drift, f"{d.threshold_drift:g}", cls="")
    return (
        f'<tr{attrs(statistic=d.statistic)}><td>{name}</td>{_stat(d)}<td class="n">{warn} / {drift}</td>'
        f"{figure('td', 'p_value', d.p_value, p)}{figure('td', 'drift_rows', d.rows)}"
        f"<td{attrs(figure='statistic_verdict', verdict=d.verdict, **detected)}>{badge(d.verdict)}</td></tr>"
    )


# --- charts ----------------------------------------------------------------------------------------


def _buckets(d: Distribution) -> list[tuple[str, float, float, int]]:
    """(label, reference share, current share, current count) per bucket; a categorical's smallest buckets
    beyond ``MAX_BUCKETS`` summed into one."""
    total = sum(d.current)
    rows = [
        (label, ref, n / total if total else 0.0, n)
        for label, ref, n in zip(d.labels, d.reference, d.current, strict=False)
    ]
    if len(rows) <= MAX_BUCKETS or d.kind == "numeric":
        return rows
    rows.sort(key=lambda r: -max(r[1], r[2]))
    kept, rest = rows[: MAX_BUCKETS - 1], rows[MAX_BUCKETS - 1 :]
    other = (f"… {len(rest)} more buckets", sum(r[1] for r in rest), sum(r[2] for r in rest), sum(r[3] for r in rest))
    return [*kept, other]


def _distribution_svg(d: Distribution) -> str:
    """Reference (grey) and current (blue) share of each bucket, the current share written beside."""
    rows = [
        PairedBar(
            label, ref, cur, f"{cur:.1%}", f"reference {ref:.2%}, current {cur:.2%} ({n:,} rows)", {"bucket": label},
            {"figure": "reference_share", "value": repr(ref)}, {"figure": "current_count", "value": n},
            {"figure": "current_share", "value": repr(cur)},
        )
        for label, ref, cur, n in _buckets(d)
    ]  # fmt: skip
    return paired_bars(rows, ("reference", f"current ({sum(d.current):,} rows)"), f"distribution of {d.feature}")


def _series_svg(w: _Window, points: Sequence[SeriesPoint], ref: FeatureDrift | None) -> str:
    """The statistic per slice of the window against the warn and drift lines; a slice under the minimum
    row count is a gap marked by a grey tick, never a point at 0."""
    width, height, bottom = 560, 130, 20
    x = Scale(w.since, w.until, 8, width - 8)
    judged = [p for p in points if p.verdict != "not_enough_data"]
    warn, drift = (ref.threshold_warn, ref.threshold_drift) if ref else (math.nan, math.nan)
    hi = max([v for v in (warn, drift * 1.25) if math.isfinite(v)] + [p.value for p in judged] + [1e-9]) * 1.05
    y = Scale(0.0, hi, height - bottom, 14)
    statistic = points[0].statistic
    body = [f'<text x="8" y="9">{esc(statistic)} per slice (axis 0 to {hi:.3g})</text>']
    body += [hline(y(v), x, f"thr {c}", f"{c} {v:g}") for v, c in ((warn, "warn"), (drift, "drift")) if v <= hi]
    runs: list[list[tuple[float, float]]] = [[]]
    marks, gaps = [], []
    for p in points:
        mid = x((p.start + p.end) / 2)
        if p.verdict == "not_enough_data":
            runs.append([])
            gaps.append(f"M{px(mid)} {height - bottom}v-5")
            continue
        runs[-1].append((mid, y(p.value)))
        tip = f"{utc(p.start)}: {statistic} {p.value:.4f}, {p.rows:,} rows, {p.verdict.replace('_', ' ')}"
        marks.append(
            f'<circle cx="{px(mid)}" cy="{px(y(p.value))}" r="2.5" class="v-{p.verdict}"'
            f"{attrs(figure='series', value=repr(p.value))}><title>{esc(tip)}</title></circle>"
        )
    if gaps:
        body.append(f'<path d="{"".join(gaps)}" stroke="#90a4ae" stroke-width="2"><title>{len(gaps)} slices '
                    "with too few rows to judge</title></path>")  # fmt: skip
    body += [polyline(r, "#1565c0") for r in runs] + marks + [time_axis(w.since, w.until, x, height - bottom)]
    return f"<div{attrs(statistic=statistic)}>{svg(width, height, body, f'{statistic} over time')}</div>"


# --- performance -----------------------------------------------------------------------------------


def _performance(w: _Window, s: SegmentReport) -> str:
    labels = "".join(
        f"<tr{attrs(state=state)}><td>{esc(state)}</td>{figure('td', 'labels', n, gauge='shipml_labels')}</tr>"
        for state, n in s.labels.items()
    )
    parts = ["<h3>Performance</h3>"]
    if labels:
        parts.append(f"<table><tr><th>predictions</th><th>count</th></tr>{labels}</table>")
    if s.performance:
        head = "".join(
            f"<th>{h}</th>" for h in ("metric", "kind", "value", "95% interval", "count", "holdout", "judged")
        )
        parts.append(f"<table><tr>{head}</tr>{''.join(_performance_row(p) for p in s.performance)}</table>")
    else:
        parts.append('<p class="muted">No performance figures in this report.</p>')
    charts = [_performance_chart(w, m, s) for m in dict.fromkeys(p.estimate.metric for p in s.performance_series)]
    if charts:
        parts.append(f'<div class="grid">{"".join(charts)}</div>')
    return "".join(parts)


def _performance_row(p: PerformanceEntry) -> str:
    e = p.estimate
    exported = e.value is not None  # /metrics has no gauge for a refused metric
    value = figure("td", "performance", e.value, gauge="shipml_model_performance" if exported else None)
    interval = (
        "<td>–</td>" if e.lower is None or e.upper is None
        else f"<td class=\"n\">[{figure('span', 'performance_lower', e.lower, cls='')}, "
        f"{figure('span', 'performance_upper', e.upper, cls='')}]</td>"
    )  # fmt: skip
    judged = "drop" if p.dropped else "refused" if e.refused else "ok" if e.enough_data else "too few rows"
    drop = {"gauge": "shipml_performance_drop_detected", "value": int(p.dropped)} if exported else {}
    colour = "drift" if p.dropped else "no_drift" if judged == "ok" else "not_enough_data"
    return (
        f"<tr{attrs(metric=e.metric, kind=e.kind)}><td>{esc(e.metric)}</td><td>{esc(e.kind)}</td>{value}"
        f"{interval}{figure('td', 'performance_count', e.count)}{figure('td', 'holdout', p.holdout)}"
        f"<td{attrs(figure='performance_judged', **drop)}>{badge(colour, judged)} "
        f'<span class="muted">{esc(p.reason)}</span></td></tr>'
    )


def _performance_chart(w: _Window, metric: str, s: SegmentReport) -> str:
    entries = [p for p in s.performance_series if p.estimate.metric == metric and p.start is not None]
    holdouts = (p.holdout for p in (*entries, *s.performance) if p.estimate.metric == metric)
    holdout = next((h for h in holdouts if h is not None), None)
    if not any(p.estimate.value is not None for p in entries):
        reasons = dict.fromkeys(f"{p.estimate.kind}: {p.estimate.refused or p.reason}" for p in entries)
        body = f'<p class="muted">No value in any slice ({esc("; ".join(reasons))}).</p>'
    else:
        body = _performance_svg(w, metric, entries, holdout)
    return f'<div class="card"{attrs(metric=metric)}><h3>{esc(metric)} over time</h3>{body}</div>'


def _performance_svg(w: _Window, metric: str, entries: Sequence[PerformanceEntry], holdout: float | None) -> str:
    """Realised and estimated values per slice with their intervals (a band and bars), the holdout value as a
    dashed line, and under it the labelled rows per slice that the realised values rest on."""
    x = Scale(w.since, w.until, 48, 552)
    values = [
        v for p in entries for v in (p.estimate.value, p.estimate.lower, p.estimate.upper)
        if v is not None and math.isfinite(v)
    ] + ([holdout] if holdout is not None else [])  # fmt: skip
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or 0.05
    y = Scale(lo - pad, hi + pad, 134, 18)
    body = [
        "".join(f'<rect x="{8 + i * 90}" y="2" width="12" height="8" fill="{c}"/><text x="{24 + i * 90}" y="10">'
                f"{k}</text>" for i, (k, c) in enumerate(KIND_COLOURS.items())),
        '<line class="hold" x1="188" y1="6" x2="204" y2="6"/><text x="208" y="10">holdout</text>',
        f'<line x1="{x.a}" y1="18" x2="{x.a}" y2="134"/>',
        *(f'<text x="{x.a - 4}" y="{px(y(v) + 4)}" class="e">{v:.3f}</text>' for v in (lo, hi)),
    ]  # fmt: skip
    if holdout is not None:
        body.append(hline(y(holdout), x, "hold", f"holdout {holdout:.4f}"))
    for kind, colour in KIND_COLOURS.items():
        points = [p for p in entries if p.estimate.kind == kind and p.estimate.value is not None]
        body.append(_kind_marks(x, y, sorted(points, key=lambda p: p.start or 0.0), colour))
    body.append(_count_strip(x, [p for p in entries if p.estimate.kind == "realised"], 142, 172))
    body.append(time_axis(w.since, w.until, x, 176))
    return svg(560, 200, body, f"{metric}: realised and estimated over time")


def _kind_marks(x: Scale, y: Scale, points: Sequence[PerformanceEntry], colour: str) -> str:
    """One kind's line, interval band and bars, and a point per slice."""
    if not points:
        return ""
    kind = points[0].estimate.kind
    mids = [x(((p.start or 0.0) + (p.end or 0.0)) / 2) for p in points]
    both = [(m, p.estimate.lower, p.estimate.upper) for m, p in zip(mids, points, strict=True)]
    band = [(m, lo, up) for m, lo, up in both if lo is not None and up is not None]
    marks = [f'<line x1="{px(m)}" x2="{px(m)}" y1="{px(y(lo))}" y2="{px(y(up))}" stroke="{colour}"/>'
             for m, lo, up in band]  # fmt: skip
    if len(band) > 1:
        outline = [(m, y(up)) for m, _, up in band] + [(m, y(lo)) for m, lo, _ in reversed(band)]
        coords = " ".join(f"{px(a)},{px(b)}" for a, b in outline)
        marks.insert(0, f'<polygon points="{coords}" fill="{colour}" fill-opacity="0.13"/>')
    marks.append(polyline([(m, y(p.estimate.value or 0.0)) for m, p in zip(mids, points, strict=True)], colour))
    for m, p in zip(mids, points, strict=True):
        e = p.estimate
        interval = "" if e.lower is None or e.upper is None else f" [{e.lower:.4f}, {e.upper:.4f}]"
        tip = f"{utc(p.start)}: {e.kind} {e.metric} {fmt(e.value)}{interval}, {e.count:,} rows"
        data = attrs(figure="performance_series", start=repr(p.start), value=repr(e.value))
        marks.append(f'<circle cx="{px(m)}" cy="{px(y(e.value or 0.0))}" r="3" fill="{colour}"{data}>'
                     f"<title>{esc(tip)}</title></circle>")  # fmt: skip
    return f"<g{attrs(kind=kind)}>{''.join(marks)}</g>"


def _count_strip(x: Scale, realised: Sequence[PerformanceEntry], top: float, bottom: float) -> str:
    most = max((p.estimate.count for p in realised), default=0)
    parts = [f'<text x="{x.a}" y="{px(top - 2)}">labelled rows per slice (max {most:,})</text>']
    y = Scale(0.0, float(most or 1), bottom, top + 4)
    for p in realised:
        a, b, n = x(p.start or 0.0), x(p.end or 0.0), p.estimate.count
        parts.append(
            f'<rect x="{px(a + 1)}" y="{px(y(n))}" width="{px(max(b - a - 2, 1))}" height="{px(bottom - y(n))}" '
            f'fill="#90a4ae"{attrs(figure="labelled_rows", start=repr(p.start), value=n)}>'
            f"<title>{esc(utc(p.start))}: {n:,} labelled rows</title></rect>"
        )
    return "".join(parts)
