"""The building blocks of the monitoring report page (``pipelines.report``) and its experiment section
(``pipelines.experiment_section``): escaped text, figures (a number a person reads, with ``data-figure`` and
``data-value`` at full precision for tests and tools), badges, and the inline SVG primitives of the charts."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

COLOURS = {"drift": "#c62828", "warn": "#e08600", "no_drift": "#2e7d32", "not_enough_data": "#607d8b"}


# --- text ------------------------------------------------------------------------------------------


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def json_for_script(text: str) -> str:
    """JSON that cannot end its <script> element early: <, > and & occur only inside JSON strings, where
    their \\u escapes mean the same characters."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def utc(ts: float | None) -> str:
    return "–" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def attrs(**data: object) -> str:
    """``data-*`` attributes, ``None`` values left out."""
    return "".join(f' data-{k}="{esc(v)}"' for k, v in data.items() if v is not None)


def figure(tag: str, name: str, value: float | None, text: str | None = None, cls: str = "n", **data: object) -> str:
    """An element showing a number, with the number at full precision in ``data-value``."""
    full = None if value is None else repr(value)
    shown = fmt(value) if text is None else text
    return f'<{tag} class="{cls}"{attrs(figure=name, **data, value=full)}>{esc(shown)}</{tag}>'


def badge(state: str, text: str | None = None, /, **data: object) -> str:
    """A coloured label; ``state`` is one of ``COLOURS`` (anything else is drawn grey)."""
    colour = state if state in COLOURS else "not_enough_data"
    label = state.replace("_", " ") if text is None else text
    return f'<span class="b v-{colour}"{attrs(**data)}>{esc(label)}</span>'


# --- charts ----------------------------------------------------------------------------------------


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
