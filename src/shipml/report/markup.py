"""The text of the report page: escaped text, times, figures (a number a person reads, with ``data-figure`` and
``data-value`` at full precision for tests and tools) and badges in the page's colours."""

from __future__ import annotations

import html
import math
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
