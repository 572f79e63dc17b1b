"""The inline SVG of the report's charts: a linear scale, the time axis, reference lines, polylines and the paired
bar chart (two shares or counts per row, grey against blue)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shipml.report.markup import attrs, esc, utc


@dataclass(frozen=True)
class Scale:
    """A linear map from data ``lo..hi`` to pixels ``a..b``."""

    lo: float
    hi: float
    a: float
    b: float

    def __call__(self, v: float) -> float:
        if self.hi <= self.lo:
            return (self.a + self.b) / 2
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)


def px(v: float) -> str:
    return f"{v:.1f}"


def svg(width: int, height: int, body: Iterable[str], label: str) -> str:
    return f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}">{"".join(body)}</svg>'


def time_axis(since: float, until: float, x: Scale, y: float) -> str:
    return (
        f'<line x1="{px(x.a)}" y1="{px(y)}" x2="{px(x.b)}" y2="{px(y)}"/>'
        f'<text x="{px(x.a)}" y="{px(y + 12)}">{esc(utc(since))}</text>'
        f'<text x="{px(x.b)}" y="{px(y + 12)}" class="e">{esc(utc(until))}</text>'
    )


def hline(y: float, x: Scale, cls: str, text: str) -> str:
    return (
        f'<line class="{cls}" x1="{px(x.a)}" y1="{px(y)}" x2="{px(x.b)}" y2="{px(y)}"/>'
        f'<text x="{px(x.b)}" y="{px(y - 2)}" class="e">{esc(text)}</text>'
    )


def polyline(points: Sequence[tuple[float, float]], colour: str) -> str:
    coords = " ".join(f"{px(a)},{px(b)}" for a, b in points)
    return f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"/>' if len(points) > 1 else ""


@dataclass(frozen=True)
class PairedBar:
    """A row of a paired bar chart: ``grey`` (the expectation: reference, expected) and ``blue`` (what was seen)
    drawn from the same zero, ``text`` written after them; the ``*_data`` go into the ``data-*`` attributes of the
    row, the bars and the text."""

    label: str
    grey: float
    blue: float
    text: str
    tip: str
    data: Mapping[str, object] = field(default_factory=dict)
    grey_data: Mapping[str, object] = field(default_factory=dict)
    blue_data: Mapping[str, object] = field(default_factory=dict)
    text_data: Mapping[str, object] = field(default_factory=dict)


def paired_bars(rows: Sequence[PairedBar], legend: tuple[str, str], label: str) -> str:
    """Grey and blue bars per row on one scale, the row's label on the left (cut at 24 characters), the legend
    on top."""
    left, bar, row, top = 150, 330, 17, 18
    x = Scale(0.0, max([r.grey for r in rows] + [r.blue for r in rows] + [1e-9]), left, left + bar)
    body = [
        f'<rect class="r" x="{left}" y="3" width="10" height="8"/><text x="{left + 14}" y="11">{esc(legend[0])}</text>'
        f'<rect class="c" x="{left + 80}" y="3" width="10" height="8"/>'
        f'<text x="{left + 94}" y="11">{esc(legend[1])}</text>'
    ]
    for i, r in enumerate(rows):
        y = top + i * row
        short = r.label if len(r.label) <= 24 else r.label[:23] + "…"
        body.append(
            f"<g{attrs(**r.data)}><title>{esc(r.tip)}</title>"
            f'<text x="{left - 4}" y="{y + 11}" class="e">{esc(short)}</text>'
            f'<rect class="r" x="{left}" y="{y + 2}" width="{px(x(r.grey) - left)}" height="6"{attrs(**r.grey_data)}/>'
            f'<rect class="c" x="{left}" y="{y + 8}" width="{px(x(r.blue) - left)}" height="6"{attrs(**r.blue_data)}/>'
            f'<text x="{left + bar + 4}" y="{y + 12}"{attrs(**r.text_data)}>{esc(r.text)}</text></g>'
        )
    return svg(left + bar + 56, top + row * len(rows) + 4, body, label)
