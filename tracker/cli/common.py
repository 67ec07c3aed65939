"""What the commands share: options, opening the store, and formatting."""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from tracker.core.stores import Store, open_store

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


def store_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--store",
        metavar="PATH",
        default=None,
        help="Store directory (default: $TRACKER_STORE, else ./.tracker).",
    )(f)


def project_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--project", "-p", default=None, help="Only runs of this project.")(f)


def console(stderr: bool = False) -> Console:
    # Made per command, so output goes to the sys.stdout of the moment (CliRunner, pipes).
    # soft_wrap: long message lines stay one line (the terminal wraps them), easy to grep.
    # Not on a terminal (a pipe, a CI log), rich would lay tables out at 80 columns and
    # fold or cut ids, numbers and tags: there, tables take the width their content needs.
    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(
        stderr=stderr,
        highlight=False,
        soft_wrap=True,
        width=None if tty else _PIPE_WIDTH,
    )


_PIPE_WIDTH = 10_000


def open_readonly(store: str | None) -> Store:
    """The store, read-only: what every command that only looks uses."""
    return open_store(store, create=False, readonly=True)


def open_for_writing(store: str | None) -> Store:
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


def duration(start: float | None, end: float | None, status: str) -> str:
    if start is None:
        return MISSING
    if end is None:
        if status != "running":
            return MISSING
        end = time.time()
    seconds = max(0.0, end - start)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours < 1:
        return f"{minutes}m{secs:02d}s"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h" if days else f"{hours}h{minutes:02d}m"


def num(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.6g}"
    return str(value)


def value_text(value: Any, full: bool = False, limit: int = 100) -> str:
    if isinstance(value, dict):
        text = json.dumps(value, sort_keys=True, default=str)
    elif isinstance(value, _dt.datetime):
        text = value.isoformat()
    else:
        text = num(value)
    if full:
        return text
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
