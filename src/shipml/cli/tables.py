"""Tables a person can read at any terminal width: the table when it fits, else a block per row.

kubectl and gh pick a layout per width rather than squeezing every column until its cells read "va…". Here a
table is printed as a table when it fits the console, the columns named ``wrap`` (free text: a reason,
examples, a parameter's value) wrapping at words, or folding a word longer than ``FOLD_MIN``, and every other
column keeping each value on one line. When even that is too wide, each row becomes a block: its first cell as
a heading, then every other value on its own line under its column's name. No value is ever cut short.
"""

from __future__ import annotations

from collections.abc import Collection

from rich.console import Console, ConsoleOptions, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Column, Table

FOLD_MIN = 16  # a wrapping column is never narrower than this, or than its longest word if that is shorter
_UNBOUNDED = 1_000_000


def show(table: Table, console: Console, *, wrap: Collection[str] = ()) -> None:
    """Print ``table`` on ``console``: as a table when it fits the width, else as a block per row.

    ``wrap``: the headers of the columns whose values may take several lines; the others never do."""
    widths = _fitted_widths(table, console, wrap)
    if widths is None:
        _print_blocks(table, console)
        return
    for column, width in zip(table.columns, widths, strict=True):
        if column.header in wrap:
            column.width, column.overflow = width, "fold"
        else:
            column.no_wrap = True
    console.print(table)


def _print_blocks(table: Table, console: Console) -> None:
    """Each row as a heading (its first column's name and value) and its other values, one per line."""
    if table.title:
        console.print(table.title, style="bold", highlight=False)
    first, *others = table.columns
    cells = [list(column.cells) for column in table.columns]
    heading = f"[bold]{escape(str(first.header))}[/] " if first.header else ""
    for row in range(table.row_count):
        console.print()
        console.print(heading, cells[0][row], sep="", highlight=False)
        grid = Table.grid(Column(no_wrap=True), Column(overflow="fold"), padding=(0, 2))
        for i, column in enumerate(others, start=1):
            grid.add_row(escape(str(column.header)), cells[i][row])
        console.print(Padding(grid, (0, 0, 0, 2), expand=False))


def _fitted_widths(table: Table, console: Console, wrap: Collection[str]) -> list[int | None] | None:
    """The width of each wrapping column (None for the others) that makes the table fit the console; None when
    it cannot. The widest columns give way first: down to their longest word (wrapping at words), and only
    then, when that is not enough, one column at a time down to ``FOLD_MIN`` (folding the longer words)."""
    options = console.options.update(max_width=_UNBOUNDED)
    excess = Measurement.get(console, options, table).maximum - console.width
    widths: list[int | None] = [None] * len(table.columns)
    words: list[int] = [0] * len(table.columns)
    for i, column in enumerate(table.columns):
        if column.header in wrap:
            widths[i], words[i] = _content_width(console, options, column)
    for floor in (words, [min(w, FOLD_MIN) for w in words]):
        while excess > 0:
            candidates = [i for i, w in enumerate(widths) if w is not None and w > floor[i]]
            if not candidates:
                break
            # a column that already folds a word folds on before another one starts to
            widest = max(candidates, key=lambda i: ((widths[i] or 0) < words[i], widths[i] or 0))
            widths[widest] = (widths[widest] or 0) - 1
            excess -= 1
    return widths if excess <= 0 else None


def _content_width(console: Console, options: ConsoleOptions, column: Column) -> tuple[int, int]:
    """The column's natural width and its longest word, over its header and cells (padding excluded)."""
    measured = [Measurement.get(console, options, cell) for cell in _cells(column)]
    return max(m.maximum for m in measured), max(m.minimum for m in measured)


def _cells(column: Column) -> list[RenderableType]:
    return [column.header, *column.cells]
