"""The monitoring report's "Experiment" section, drawn from an ``ExperimentHistory``.

What it shows: the verdict of the whole window and its reasons; every variant's traffic and metric; for each
challenger the difference with the champion (challenger - champion) at every cut with its anytime-valid interval
as a band (the sequential boundary: the decision is taken when the band leaves 0), the same for each guardrail
against its margin; and the sample ratio check. Figures carry ``data-figure`` and ``data-value`` (full precision,
``nan`` where undefined) as on the rest of the page; none of them is a gauge of ``/metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shipml.report.markup import attrs, badge, esc, figure, utc
from shipml.report.svg import PairedBar, Scale, hline, paired_bars, polyline, px, svg, time_axis

if TYPE_CHECKING:
    from shipml.core.experiment_history import ExperimentHistory
    from shipml.core.experiment_report import ChallengerResult, ExperimentReport, VariantSummary
    from shipml.core.experiments import Comparison, Guardrail, SampleRatio

# verdicts and statuses drawn in the page's colours (markup.COLOURS)
VERDICT_STATES = {
    "ship": "no_drift", "rollback": "drift", "unhealthy": "drift", "continue": "warn", "no_data": "not_enough_data",
}  # fmt: skip
GUARDRAIL_STATES = {"holds": "no_drift", "violated": "drift", "undecided": "warn"}
BAND = "#1565c0"
# guardrails that are monitoring's yes/no verdicts (``Guardrail.from_check``: pipelines.experiments' DRIFT and
# PERFORMANCE), not intervals: the table shows their status, and no chart is drawn
CHECKS = frozenset({"drift", "performance"})


def experiment_section(history: ExperimentHistory) -> str:
    """The section (``id="experiment"``) for ``history``; its last point is the window's report."""
    r = history.report
    primaries = [v for v in r.variants if v.role == "primary"]
    parts = [_summary(history)]
    if sum(v.requests for v in primaries) == 0:
        parts.append(
            '<p class="muted" data-figure="experiment_empty">No predictions of the experiment\'s variants in this '
            "window: nothing to compare yet.</p>"
        )
    parts.append(_variants(r))
    if r.challengers:
        cards = "".join(_challenger(history, c, i) for i, c in enumerate(r.challengers))
        parts.append(f'<h3>Challengers against the champion</h3><div class="stack">{cards}</div>')
    if r.shadows:
        parts.append(_shadows(r))
    parts.append(_sample_ratio(r.srm))
    return f'<section id="experiment"{attrs(model=r.model)}>{"".join(parts)}</section>'


def verdict_badge(verdict: str, name: str = "experiment_verdict") -> str:
    return badge(
        VERDICT_STATES.get(verdict, "not_enough_data"), verdict.replace("_", " "), figure=name, verdict=verdict
    )


# --- numbers ---------------------------------------------------------------------------------------


def _num(tag: str, name: str, value: float, digits: str = ".4f", cls: str = "n") -> str:
    """A float figure; "–" on the page where it is undefined (NaN), ``data-value`` always the float."""
    shown = format(value, digits) if math.isfinite(value) else "–"
    return figure(tag, name, value, shown, cls=cls)


def _interval(prefix: str, lower: float, upper: float, digits: str = "+.4f") -> str:
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return '<td class="n">–</td>'
    low = _num("span", f"{prefix}_lower", lower, digits, cls="")
    high = _num("span", f"{prefix}_upper", upper, digits, cls="")
    return f'<td class="n">[{low}, {high}]</td>'


def _table(head: Sequence[str], rows: Sequence[str]) -> str:
    return f"<table><tr>{''.join(f'<th>{esc(h)}</th>' for h in head)}</tr>{''.join(rows)}</table>"


# --- parts -----------------------------------------------------------------------------------------


def _summary(history: ExperimentHistory) -> str:
    r = history.report
    confidence = next((1.0 - c.primary.alpha for c in r.challengers), 0.95)
    winner = f" (winner: {esc(r.winner)})" if r.winner else ""
    rows = [
        ("window", f"{esc(utc(r.since))} to {esc(utc(r.until))}"),
        ("verdict", verdict_badge(r.verdict) + winner),
        ("metric", f"{esc(r.metric)} (higher is better; {esc(r.kind)} of the labelled predictions, per routing key)"),
        ("champion", esc(r.champion)),
        ("over time", f"{figure('span', 'experiment_cuts', len(history.points), cls='')} cumulative reports"),
    ]
    meta = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    reasons = "".join(f"<li>{esc(x)}</li>" for x in r.reasons)
    notes = "".join(f"<li>{esc(x)}</li>" for x in r.notes)
    return (
        f"<h2>Experiment: {esc(r.model)}</h2><dl>{meta}</dl>"
        + (f'<ul class="reasons">{reasons}</ul>' if reasons else "")
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + '<p class="muted">Each challenger against the champion: the difference challenger - champion at each cut, '
        "computed now over the predictions logged from the window's start to the cut (with the feedback known now), "
        f"and its anytime-valid {confidence:.0%} interval (the band). The interval may be read at every cut: it is the "
        "sequential boundary, and the verdict is ship once the band lies above 0 and every guardrail holds, rollback "
        "once it lies below 0 or a guardrail is worse than its margin (with enough labelled predictions per variant). "
        "A sample ratio mismatch makes the experiment unhealthy, whatever the metrics say.</p>"
    )


def _variants(r: ExperimentReport) -> str:
    head = ("variant", "role", "model", "share", "requests", "errors", "units", "labelled", "matured", r.metric,
            "95% interval")  # fmt: skip
    return "<h3>Variants</h3>" + _table(head, [_variant_row(r, v) for v in r.variants])


def _variant_row(r: ExperimentReport, v: VariantSummary) -> str:
    role = "champion" if v.name == r.champion else v.role if v.role == "shadow" else "challenger"
    model = esc(v.model) if v.version is None or v.model.endswith(f"/{v.version}") else f"{esc(v.model)} (v{v.version})"
    m = v.metric
    return (
        f"<tr{attrs(variant=v.name, role=v.role)}><td>{esc(v.name)}</td><td>{role}</td><td>{model}</td>"
        f"{_num('td', 'variant_share', v.share, 'g')}{figure('td', 'variant_requests', v.requests)}"
        f"{figure('td', 'variant_errors', v.errors)}{figure('td', 'variant_units', v.units)}"
        f"{figure('td', 'variant_labelled', v.labelled)}{figure('td', 'variant_matured', v.matured)}"
        f"{_num('td', 'variant_metric', m.mean)}{_interval('variant_metric', m.lower, m.upper, '.4f')}</tr>"
    )


def _challenger(history: ExperimentHistory, c: ChallengerResult, index: int) -> str:
    r = history.report
    p = c.primary
    rows = [
        f"<tr{attrs(metric=p.metric)}><td>{esc(p.metric)}</td>"
        f"{_num('td', 'difference', p.difference.estimate, '+.4f')}"
        f"{_interval('difference', p.difference.lower, p.difference.upper)}"
        f"{_num('td', 'lift', p.relative_lift.estimate, '+.2%')}"
        f"{_interval('lift', p.relative_lift.lower, p.relative_lift.upper, '+.2%')}<td></td>"
        f"<td>{badge('no_drift' if p.better else 'drift' if p.worse else 'warn', _side(p))}</td></tr>"
    ]
    rows += [_guardrail_row(g) for g in c.guardrails]
    head = ("metric", "difference", "interval", "relative lift", "interval", "margin", "judged")
    reasons = "".join(f"<li>{esc(x)}</li>" for x in c.decision.reasons)
    size = c.sample_size
    needed = (
        f"<p>Sample size: {figure('span', 'sample_size_remaining', size.remaining, cls='')} more units (keys "
        f"with labelled predictions; {figure('span', 'sample_size_required', size.required_total, cls='')} in all) "
        f"to detect a {size.mde:g} {'relative' if size.relative else 'absolute'} change at power {size.power:g}.</p>"
        if size is not None else ""
    )  # fmt: skip
    charts = _primary_chart(history, c.variant) + "".join(
        _guardrail_chart(history, c.variant, g.name) for g in c.guardrails if g.name not in CHECKS
    )
    return (
        f'<div class="card" id="experiment-c{index}"{attrs(variant=c.variant)}>'
        f"<h3><span>{esc(c.variant)} vs {esc(r.champion)}</span>"
        f"{verdict_badge(c.decision.verdict, 'challenger_verdict')}</h3>"
        f'{_table(head, rows)}<ul class="reasons">{reasons}</ul>{needed}<div class="grid">{charts}</div></div>'
    )


def _side(c: Comparison) -> str:
    if not math.isfinite(c.difference.estimate):
        return "no data"
    return "better" if c.better else "worse" if c.worse else "not significant"


def _guardrail_row(g: Guardrail) -> str:
    status = (
        f"<td{attrs(figure='guardrail_status', status=g.status)}>{badge(GUARDRAIL_STATES[g.status], g.status)}</td>"
    )
    if g.name in CHECKS:
        return f'<tr{attrs(guardrail=g.name)}><td>guardrail {esc(g.name)} (monitoring)</td><td colspan="5"></td>{status}</tr>'
    mid = (g.lower + g.upper) / 2  # the interval is symmetric around the difference
    return (
        f"<tr{attrs(guardrail=g.name)}><td>guardrail {esc(g.name)}</td>{_num('td', 'guardrail_difference', mid, '+.4f')}"
        f"{_interval('guardrail', g.lower, g.upper)}<td></td><td></td>{_num('td', 'guardrail_margin', g.margin, 'g')}"
        f"{status}</tr>"
    )


def _shadows(r: ExperimentReport) -> str:
    rows = []
    for s in r.shadows:
        d = s.comparison.difference
        agreement = (
            _num("td", "shadow_agreement", s.agreement, ".1%") if math.isfinite(s.agreement)
            else _num("td", "shadow_mean_abs_difference", s.mean_abs_difference, ".4g")
        )  # fmt: skip
        rows.append(
            f"<tr{attrs(variant=s.variant)}><td>{esc(s.variant)}</td>{_num('td', 'shadow_difference', d.estimate, '+.4f')}"
            f"{_interval('shadow_difference', d.lower, d.upper)}{figure('td', 'shadow_joined', s.joined)}"
            f"{figure('td', 'shadow_compared', s.compared)}{agreement}</tr>"
        )
    head = ("shadow", f"{r.metric} vs champion", "interval", "joined", "compared", "agreement / mean |diff|")
    return "<h3>Shadows against the champion (never shipped)</h3>" + _table(head, rows)


_SRM_TESTS = {
    "sequential": "a sequential test (valid however often it is read)",
    "chi-square": "a chi-square test (fixed-horizon)",
}
_SRM_STATISTICS = {"sequential": "log evidence", "chi-square": "chi-square"}


def _sample_ratio(srm: SampleRatio) -> str:
    total = sum(srm.observed)
    rows = []
    for name, n, share in zip(srm.variants, srm.observed, srm.expected_share, strict=True):
        observed_share = n / total if total else math.nan
        rows.append(
            f"<tr{attrs(variant=name)}><td>{esc(name)}</td>{_num('td', 'srm_expected_share', share, '.1%')}"
            f"{_num('td', 'srm_expected', total * share, '.1f')}{figure('td', 'srm_observed', n)}"
            f"{_num('td', 'srm_observed_share', observed_share, '.1%')}</tr>"
        )
    state = ("drift", "mismatch") if srm.mismatch else ("no_drift", "healthy")
    p = "< 0.0001" if srm.p_value < 1e-4 else f"{srm.p_value:.4f}"
    verdict = badge(*state, figure="srm_mismatch", value=int(srm.mismatch), mismatch=str(srm.mismatch).lower())
    head = ("variant", "expected share", "expected units", "observed units", "observed share")
    return (
        "<h3>Sample ratio</h3>"
        '<p class="muted">Units per variant (distinct routing keys, plus requests without one) against the configured '
        f"weights, by {_SRM_TESTS.get(srm.test, esc(srm.test))}: a mismatch means assignment or logging is "
        "broken.</p>"
        f"<p>{esc(_SRM_STATISTICS.get(srm.test, 'statistic'))} "
        f"{_num('span', 'srm_statistic', srm.statistic, '.3f', cls='')}, "
        f"p = {figure('span', 'srm_p_value', srm.p_value, p, cls='')} "
        f"(mismatch under {figure('span', 'srm_threshold', srm.threshold, f'{srm.threshold:g}', cls='')}): "
        f"{verdict}</p>{_table(head, rows)}{_srm_svg(srm)}"
    )


def _srm_svg(srm: SampleRatio) -> str:
    """Expected (grey) and observed (blue) units per variant."""
    total = sum(srm.observed)
    if total == 0:
        return ""
    rows = [
        PairedBar(name, total * share, n, f"{n:,}", f"expected {total * share:,.1f}, observed {n:,} units",
                  {"variant": name})
        for name, n, share in zip(srm.variants, srm.observed, srm.expected_share, strict=True)
    ]  # fmt: skip
    return paired_bars(rows, ("expected", "observed"), "units per variant, expected and observed")


# --- over time -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mark:
    """One cut of a chart: the difference and its interval (NaN: none yet), and the state its point is drawn in."""

    until: float
    estimate: float
    lower: float
    upper: float
    state: str
    tip: str

    @property
    def drawn(self) -> bool:
        return all(math.isfinite(v) for v in (self.estimate, self.lower, self.upper))


def _challenger_at(report: ExperimentReport, variant: str) -> ChallengerResult | None:
    return next((c for c in report.challengers if c.variant == variant), None)


def _primary_chart(history: ExperimentHistory, variant: str) -> str:
    marks, decided = [], None
    for point in history.points:
        c = _challenger_at(point, variant)
        if c is None:
            continue
        d, verdict = c.primary.difference, c.decision.verdict
        n = f"{c.primary.control.n:,} + {c.primary.treatment.n:,} units"
        tip = (
            f"until {utc(point.until)}: {_signed(d.estimate)} [{_signed(d.lower)}, {_signed(d.upper)}], {n}, {verdict}"
        )
        marks.append(_Mark(point.until, d.estimate, d.lower, d.upper, VERDICT_STATES.get(verdict, "warn"), tip))
        if decided is None and verdict in ("ship", "rollback"):
            decided = (point.until, verdict)
    r = history.report
    title = f"{r.metric}: {variant} - {r.champion} over time"
    when = (
        f"<p>First decided at {figure('span', 'decided_at', decided[0], utc(decided[0]), cls='')} ({esc(decided[1])}).</p>"
        if decided else '<p class="muted">Not decided at any cut.</p>'
    )  # fmt: skip
    chart = _band_chart(history, marks, [(0.0, "zero", "0")], title, "difference", decided)
    return f"<div{attrs(chart='primary')}><h3>{esc(title)}</h3>{chart}{when}</div>"


def _guardrail_chart(history: ExperimentHistory, variant: str, name: str) -> str:
    marks, last = [], None
    for point in history.points:
        c = _challenger_at(point, variant)
        g = next((g for g in c.guardrails if g.name == name), None) if c is not None else None
        if g is None:
            continue
        mid = (g.lower + g.upper) / 2
        tip = f"until {utc(point.until)}: {_signed(mid)} [{_signed(g.lower)}, {_signed(g.upper)}], {g.status}"
        marks.append(_Mark(point.until, mid, g.lower, g.upper, GUARDRAIL_STATES[g.status], tip))
        last = g
    refs = []
    if last is not None:  # worse than the margin: above it for a cost, below minus it for a benefit
        limit = -last.margin if last.higher_is_better else last.margin
        refs.append((limit, "thr drift", f"margin {limit:+g}"))
    refs.append((0.0, "zero", "0"))
    title = f"guardrail {name}: {variant} - {history.report.champion} over time"
    chart = _band_chart(history, marks, refs, title, "guardrail", None)
    return f"<div{attrs(chart='guardrail', guardrail=name)}><h3>{esc(title)}</h3>{chart}</div>"


def _signed(v: float) -> str:
    return f"{v:+.4f}" if math.isfinite(v) else "–"


_TOP, _BOTTOM = 18.0, 140.0  # the plot area of an over-time chart, in pixels


def _band_chart(
    history: ExperimentHistory,
    marks: Sequence[_Mark],
    refs: Sequence[tuple[float, str, str]],
    label: str,
    name: str,
    decided: tuple[float, str] | None,
) -> str:
    """The difference at each cut (a line through points in their verdict's colour) inside its interval (a band,
    and a bar per cut), against horizontal lines ``refs`` (value, class, text), and the cut where it was decided.
    A cut without an interval is a grey tick, never a point at 0."""
    drawn = [m for m in marks if m.drawn]
    if not drawn:
        return '<p class="muted">No interval at any cut yet (a variant has no labelled predictions).</p>'
    r = history.report
    x = Scale(r.since, r.until, 52, 552)
    y = _value_axis(drawn, refs)
    clipped = any(y(m.lower) > _BOTTOM or y(m.upper) < _TOP for m in drawn)
    body = [
        f'<rect x="8" y="2" width="12" height="8" fill="{BAND}" fill-opacity="0.2"/>'
        f'<text x="24" y="10">anytime-valid interval{" (cut at the axis)" if clipped else ""}</text>',
        f'<line x1="{x.a}" y1="{_TOP}" x2="{x.a}" y2="{_BOTTOM}"/>',
        *(f'<text x="{x.a - 4}" y="{px(y(v) + 4)}" class="e">{v:+.3g}</text>' for v in (y.lo, y.hi)),
    ]
    labelled: list[float] = []
    for v, cls, text in refs:  # a label too close to one already written is left out (the line stays)
        if math.isfinite(v):
            free = all(abs(y(v) - other) > 11 for other in labelled)
            body.append(hline(y(v), x, cls, text if free else ""))
            labelled += [y(v)] if free else []
    body += _band(marks, x, y, name)
    if decided is not None:
        at = px(x(decided[0]))
        body.append(f'<line class="when" x1="{at}" y1="{_TOP}" x2="{at}" y2="{_BOTTOM}"/>'
                    f'<text x="{px(x(decided[0]) + 3)}" y="{_BOTTOM - 4}">{esc(decided[1])}</text>')  # fmt: skip
    body.append(time_axis(r.since, r.until, x, _BOTTOM + 6))
    return svg(560, int(_BOTTOM + 30), body, label)


def _value_axis(drawn: Sequence[_Mark], refs: Sequence[tuple[float, str, str]]) -> Scale:
    """An axis that fits the lines, every estimate and the intervals of the later half of the cuts: an earlier,
    wider interval is cut at its edge (its numbers are in its tooltip), so the recent ones stay readable."""
    values = [v for v, _, _ in refs if math.isfinite(v)] + [m.estimate for m in drawn]
    values += [v for m in drawn[len(drawn) // 2 :] for v in (m.lower, m.upper)]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 0.05
    return Scale(lo - pad, hi + pad, _BOTTOM, _TOP)


def _band(marks: Sequence[_Mark], x: Scale, y: Scale, name: str) -> list[str]:
    """The band and line through each run of cuts with an interval, a bar and a point per cut, a tick per gap."""

    def at(v: float) -> float:
        return min(max(y(v), _TOP), _BOTTOM)

    runs: list[list[_Mark]] = [[]]
    gaps = []
    for m in marks:
        if m.drawn:
            runs[-1].append(m)
        else:
            runs.append([])
            gaps.append(f"M{px(x(m.until))} {_BOTTOM}v-5")
    body = []
    for run in runs:
        if len(run) > 1:
            outline = [(x(m.until), at(m.upper)) for m in run] + [(x(m.until), at(m.lower)) for m in reversed(run)]
            coords = " ".join(f"{px(a)},{px(b)}" for a, b in outline)
            body.append(f'<polygon points="{coords}" fill="{BAND}" fill-opacity="0.13"/>')
        body.append(polyline([(x(m.until), y(m.estimate)) for m in run], BAND))
    for m in (m for m in marks if m.drawn):
        until, value = repr(m.until), repr(m.estimate)
        bar = attrs(figure=f"{name}_interval", until=until, lower=repr(m.lower), upper=repr(m.upper), value=value)
        body.append(
            f'<line x1="{px(x(m.until))}" x2="{px(x(m.until))}" y1="{px(at(m.lower))}" y2="{px(at(m.upper))}" '
            f'stroke="{BAND}"{bar}/><circle cx="{px(x(m.until))}" cy="{px(y(m.estimate))}" r="3" class="v-{m.state}"'
            f"{attrs(figure=f'{name}_series', until=until, value=value)}><title>{esc(m.tip)}</title></circle>"
        )
    if gaps:
        body.append(f'<path d="{"".join(gaps)}" stroke="#90a4ae" stroke-width="2"><title>{len(gaps)} cuts without '
                    "an interval (a variant without labelled predictions)</title></path>")  # fmt: skip
    return body
