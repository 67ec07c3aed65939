"""What the commands share: options, opening the store, formatting, and table layout."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
import numpy as np
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from tracker.core.errors import StoreError
from tracker.core.export import json_safe
from tracker.core.stores import Store, open_store, resolve_store_path
from tracker.core.stores.sqlite import DB_NAME

STATUSES = ("running", "finished", "failed", "terminated", "crashed")
_STATUS_STYLE = {
    "running": "cyan",
    "finished": "green",
    "failed": "red",
    "terminated": "yellow",
    "crashed": "magenta",
}
_BARS = "▁▂▃▄▅▆▇█"
MISSING = "—"
ABSENT = object()  # a key a run does not have (None is a value a run can have)


def one_line(text: object) -> str:
    """A message as one line: errors can carry newlines (a run's stored traceback)."""
    return " ".join(str(text).split())


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def store_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--store",
        metavar="PATH",
        default=None,
        help="Store directory, or a tracker server's http(s)://HOST:PORT "
        "(default: $TRACKER_STORE, else ./.tracker).",
    )(f)


def project_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--project", "-p", default=None, help="Only runs of this project.")(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document instead of tables."
    )(f)


# -- output --------------------------------------------------------------------------------


class CliConsole(Console):
    """A rich Console that knows whether it lays out for a terminal (``terminal``)."""

    def __init__(self, *, terminal: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.terminal = terminal


def terminal_width(stream: Any) -> int | None:
    """The columns of the terminal ``stream`` writes to; None when it is not a terminal
    (a pipe, a file, a CI log), where output is laid out as wide as its content."""
    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError, OSError):
        return None
    return Console(file=stream).width  # rich reads $COLUMNS, else asks the terminal


def console(stderr: bool = False) -> CliConsole:
    # Made per command, so output goes to the sys.stdout of the moment (CliRunner, pipes).
    # soft_wrap: long message lines stay one line (the terminal wraps them), easy to grep.
    # Not on a terminal, rich would lay tables out at 80 columns and cut values: there,
    # tables take the width their content needs ($COLUMNS must not narrow a pipe).
    stream = sys.stderr if stderr else sys.stdout
    width = terminal_width(stream)
    return CliConsole(
        terminal=width is not None,
        stderr=stderr,
        highlight=False,
        soft_wrap=True,
        width=width or _PIPE_WIDTH,
    )


_PIPE_WIDTH = 10_000


def strict_json(value: Any) -> Any:
    """``value`` with every leaf made fit for strict JSON (NaN and infinities as strings,
    datetimes as ISO text, numpy scalars as Python numbers)."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return json_safe(value)


def print_json(doc: Any) -> None:
    """One JSON document on stdout, nothing else (warnings go to stderr)."""
    click.echo(json.dumps(strict_json(doc), indent=2, allow_nan=False, default=str))


# -- the store -----------------------------------------------------------------------------


def _check_store_exists(store: str | None) -> None:
    from tracker.core.stores import store_kind

    if store_kind(store) != "directory":
        return  # a server (or a database): opening it says whether it can be reached
    root = resolve_store_path(store)
    try:
        exists = (root / DB_NAME).exists()
    except OSError:
        return  # opening it reports the problem, with its cause
    if exists:
        return
    if store is not None:
        source = "given by --store"
    elif os.environ.get("TRACKER_STORE"):
        source = "from $TRACKER_STORE"
    else:
        source = "the default, ./.tracker"
    raise StoreError(
        f"no tracker store at {root} ({source}; no {DB_NAME} there): point tracker at a "
        "store directory with --store PATH or the TRACKER_STORE environment variable"
    )


def open_readonly(store: str | None) -> Store:
    """The store, read-only: what every command that only looks uses."""
    _check_store_exists(store)
    return open_store(store, create=False, readonly=True)


def open_for_writing(store: str | None) -> Store:
    _check_store_exists(store)
    return open_store(store, create=False)


def report(problems: list[str]) -> None:
    """Print one line per run (or series) that failed, on stderr; exit 1 if any did."""
    for problem in problems:
        click.echo(f"error: {one_line(problem)}", err=True)
    if problems:
        click.get_current_context().exit(1)


def split(values: Iterable[str]) -> list[str]:
    """Options given several times and/or comma-separated: ``--status failed,crashed``."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def statuses(values: Iterable[str]) -> list[str]:
    out = split(values)
    unknown = [s for s in out if s not in STATUSES]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: statuses are {', '.join(STATUSES)}", param_hint="--status"
        )
    return out


# -- formatting ----------------------------------------------------------------------------


def when(ts: float | None, seconds: bool = True) -> str:
    if ts is None:
        return MISSING
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else ""))


def duration_s(start: float | None, end: float | None, status: str) -> float | None:
    """Seconds a run lasted (so far, while it runs); None where that is unknown."""
    if start is None:
        return None
    if end is None:
        if status != "running":
            return None
        end = time.time()
    return max(0.0, end - start)


def duration(start: float | None, end: float | None, status: str) -> str:
    seconds = duration_s(start, end, status)
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours < 1:
        return f"{minutes}m{secs:02d}s"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h" if days else f"{hours}h{minutes:02d}m"


def num(value: Any, full: bool = False) -> str:
    """A number as text: 6 significant digits, or with ``full`` its exact repr."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value) if full else f"{value:.6g}"
    return str(value)


def value_text(value: Any, full: bool = False, limit: int | None = 100) -> str:
    """A value as one line of text; text longer than ``limit`` is shortened with "…"
    unless ``full`` (or ``limit`` is None: output that is not for a terminal)."""
    if isinstance(value, dict | list):
        # As JSON, the way export writes it and the docs show it (not Python's repr).
        text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    elif isinstance(value, _dt.datetime):
        text = value.isoformat()
    else:
        text = num(value, full)
    if full:
        return text
    text = text.replace("\n", " ⏎ ")
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


class Free(str):
    """A table cell of free text (a name, tags, a text value): it may wrap over lines.
    Every other cell (ids, numbers, statuses, dates) stays whole on one line."""


def value_cell(value: Any, full: bool = False, limit: int | None = 100) -> str:
    """A value as a table cell: numbers whole on one line, text free to wrap."""
    text = value_text(value, full, limit)
    if isinstance(value, str | dict):
        return Free(text)
    return text


def status_text(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


def sparkline(values: Iterable[float]) -> str:
    """One block character per value, scaled between the lowest and highest (NaN: blank)."""
    values = [float(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    out = []
    for v in values:
        if not math.isfinite(v):
            out.append(" ")
        elif hi == lo:
            out.append(_BARS[3])
        else:
            out.append(_BARS[min(len(_BARS) - 1, int((v - lo) / (hi - lo) * len(_BARS)))])
    return "".join(out)


def resample(values: Sequence[float], width: int) -> list[float]:
    """At most ``width`` values: the last of each of ``width`` even slices, as the buckets
    a sparkline draws keep each bucket's last value."""
    if len(values) <= width:
        return list(values)
    return [values[(i + 1) * len(values) // width - 1] for i in range(width)]


# -- table layout --------------------------------------------------------------------------

_GAP = 2  # blank cells between two columns
_FREE_MIN = 8  # free text is never wrapped narrower than this
_WORD_MAX = 20  # a word longer than this may be broken where the terminal is too narrow
_SPARK_MIN = 5  # a sparkline is not drawn narrower than this


@dataclass
class Column:
    header: str
    justify: JustifyMethod = "left"
    wrap: bool = False  # every cell is free text
    optional: bool = False  # may be left out, whole, when the table cannot fit otherwise
    spark: bool = False  # cells are lists of values, drawn as sparklines as wide as fits
    cells: list[Any] = field(default_factory=list)

    def measure(self) -> _Measure:
        m = _Measure(*(Text(self.header).cell_len,) * 3, words=[])
        for cell in self.cells:
            if self.spark:
                low = min(len(cell), _SPARK_MIN)
                m.natural, m.least = max(m.natural, len(cell)), max(m.least, low)
                m.comfortable = max(m.comfortable, low)
                continue
            n = _cell_len(cell)
            m.natural = max(m.natural, n)
            if self.wrap or isinstance(cell, Free):
                text = cell.plain if isinstance(cell, Text) else cell
                word = max((Text(w).cell_len for w in text.split()), default=0)
                if _FREE_MIN < word <= _WORD_MAX and word < n:
                    m.words.append(word)
                m.comfortable = max(m.comfortable, min(n, max(_FREE_MIN, min(word, _WORD_MAX))))
                m.least = max(m.least, min(n, _FREE_MIN))
            else:
                m.comfortable, m.least = max(m.comfortable, n), max(m.least, n)
        return m


@dataclass
class _Measure:
    """A column's widths: to show every cell on one line (``natural``); to wrap free text
    only between words, but for words over ``_WORD_MAX`` (``comfortable``); to wrap it
    anywhere (``least``). Each keeps the header on one line and every cell that is not
    free text whole. ``words``: the longest word of each free-text cell that wraps, where
    ``least`` would break it."""

    natural: int
    comfortable: int
    least: int
    words: list[int]


def _cell_len(cell: str | Text) -> int:
    text = cell if isinstance(cell, Text) else Text(cell)
    return max((Text(line).cell_len for line in text.plain.split("\n")), default=0)


def _fit(measures: list[_Measure], room: int) -> list[int]:
    """Column widths for ``room`` cells (the narrowest possible if that is too few)."""
    gaps = _GAP * (len(measures) - 1)
    if sum(m.natural for m in measures) + gaps <= room:
        return [m.natural for m in measures]
    if sum(m.comfortable for m in measures) + gaps <= room:
        widths = [m.comfortable for m in measures]
    else:
        widths = [m.least for m in measures]
        spare = room - gaps - sum(widths)
        # Break as few words as the room allows: widen, step by step, the column where
        # one more cell of width keeps the most cells' words whole.
        while spare > 0:
            best: tuple[float, int, int] | None = None
            for i, m in enumerate(measures):
                for target in sorted({w for w in m.words if widths[i] < w <= widths[i] + spare}):
                    kept = sum(1 for w in m.words if widths[i] < w <= target)
                    score = kept / (target - widths[i])
                    if best is None or score > best[0]:
                        best = (score, i, target)
            if best is None:
                break
            _, i, target = best
            spare -= target - widths[i]
            widths[i] = target
    spare = room - gaps - sum(widths)
    # What is left goes, one cell at a time, to the column that lacks the most.
    for _ in range(max(0, spare)):
        i = max(range(len(measures)), key=lambda k: measures[k].natural - widths[k])
        if measures[i].natural <= widths[i]:
            break
        widths[i] += 1
    return widths


class Layout:
    """A table laid out so that nothing but free text wraps and nothing is cut.

    On a terminal, free text wraps and sparklines narrow to fit its width; where the
    table cannot fit without breaking words, optional columns are left out whole (the
    last first) and ``print`` returns their headers for the caller to say so; where it
    cannot fit at all, lines run past the terminal's edge rather than cut a value. Not
    on a terminal, every column is as wide as its widest cell.
    """

    def __init__(self, *columns: Column, title: str | None = None) -> None:
        self.columns = list(columns)
        self.title = title
        self._sections: list[int] = []  # row indexes after which a section ends

    def add_row(self, *cells: Any) -> None:
        for column, cell in zip(self.columns, cells, strict=True):
            column.cells.append(cell)

    def add_section(self) -> None:
        if self.columns and self.columns[0].cells:
            self._sections.append(len(self.columns[0].cells) - 1)

    def print(self, console: CliConsole) -> list[str]:
        """Print the table; return the headers of the optional columns left out."""
        columns = list(self.columns)
        measures = [c.measure() for c in columns]
        left_out: list[str] = []
        if not console.terminal:
            widths = [m.natural for m in measures]
        else:
            room = console.width
            # Leaving a column out beats breaking words.
            while any(c.optional for c in columns) and (
                sum(m.comfortable for m in measures) + _GAP * (len(columns) - 1) > room
            ):
                i = max(k for k, c in enumerate(columns) if c.optional)
                left_out.insert(0, columns.pop(i).header)
                measures.pop(i)
            widths = _fit(measures, room)

        table = Table(
            box=None,
            pad_edge=False,
            header_style="bold",
            title=self.title,
            title_justify="left",
            # Exactly the widths chosen: rich would otherwise cut columns to its own width.
            width=sum(widths) + _GAP * (len(widths) - 1),
        )
        for column, width in zip(columns, widths, strict=True):
            free = column.wrap or any(isinstance(c, Free) for c in column.cells)
            table.add_column(
                column.header,
                justify=column.justify,
                width=width,
                no_wrap=not free,
                overflow="fold" if free else "ignore",
            )
        rows = len(columns[0].cells) if columns else 0
        for i in range(rows):
            cells: list[Text] = []
            for column, width in zip(columns, widths, strict=True):
                cell = column.cells[i]
                if column.spark:
                    cell = sparkline(resample(cell, width))
                cells.append(cell if isinstance(cell, Text) else Text(cell))
            table.add_row(*cells, end_section=i in self._sections)
        console.print(table)
        return left_out


def say_left_out(console: CliConsole, left_out: list[str], hint: str) -> None:
    """One line naming the columns a terminal could not fit and how to see them."""
    if left_out:
        console.print(
            f"left out to fit a terminal of {console.width} columns: {', '.join(left_out)} ({hint})"
        )
