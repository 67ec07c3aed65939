"""The ``tracker`` command: look at runs, export them, and keep a store healthy.

    tracker ls --project gpt-small --status finished
    tracker show latest
    tracker compare k3v9q2m1xa p7wq0s1c2d
    tracker export k3v9q2m1xa --format parquet --output run.parquet
    tracker gc --status failed,crashed --older-than 30d --dry-run
    tracker doctor
    tracker sync

Every command takes ``--store PATH`` (default: $TRACKER_STORE, else ./.tracker). This
module parses and prints; the work is done by the read API and ``core.admin``.

No command prints a traceback for one bad run: a run that cannot be read, recovered or
synced is reported in one line (its id and the error) and the command goes on with the
others, exiting 1 at the end; tracker's own errors are one line and exit status 1.
The looking commands (ls, show, compare, export, doctor, gc --dry-run) open the store
read-only, so that they work on a store that cannot be written.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click
import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

import tracker
from tracker.core import admin
from tracker.core.errors import TrackerError
from tracker.core.paths import flatten
from tracker.core.store import Store

if TYPE_CHECKING:
    from tracker.core.reader import RunReader, SeriesValues

    Series = list[tuple[str, int, SeriesValues]]

STATUSES = ("running", "finished", "failed", "terminated", "crashed")
_STATUS_STYLE = {
    "running": "cyan",
    "finished": "green",
    "failed": "red",
    "terminated": "yellow",
    "crashed": "magenta",
}
_BARS = "▁▂▃▄▅▆▇█"
_MISSING = "—"
_ABSENT = object()  # a key a run does not have (None is a value a run can have)


def _one_line(text: object) -> str:
    """A message as one line: errors can carry newlines (a run's stored traceback)."""
    return " ".join(str(text).split())


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    # A warning (a run that could not be recovered, say) is one line on stderr, not
    # Python's two lines with a source location that means nothing to a CLI user.
    text = _one_line(message).removeprefix("tracker: ")
    click.echo(f"warning: {text}", err=True)


class _Group(click.Group):
    """Turns tracker's own errors into a one-line message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", RuntimeWarning)
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except TrackerError as exc:
            raise click.ClickException(_one_line(exc)) from None
        except sqlite3.Error as exc:
            raise click.ClickException(
                f"the store's database cannot be read ({_one_line(exc)}); "
                "`tracker doctor` checks it"
            ) from None
        except BrokenPipeError:
            # The reader went away (`tracker export RUN | head`): stop quietly. Pointing
            # stdout at devnull keeps Python's exit-time flush from failing again.
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, io.UnsupportedOperation):
                pass
            ctx.exit(1)
        except OSError as exc:
            # An output file that cannot be written, a store directory that cannot be read.
            raise click.ClickException(_one_line(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(tracker.__version__, "--version", "-V", prog_name="tracker")
def main() -> None:
    """Experiment tracking for distributed training: look at runs, keep the store healthy."""


def _store_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--store",
        metavar="PATH",
        default=None,
        help="Store directory (default: $TRACKER_STORE, else ./.tracker).",
    )(f)


def _project_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--project", "-p", default=None, help="Only runs of this project.")(f)


def _console(stderr: bool = False) -> Console:
    # Made per command, so output goes to the sys.stdout of the moment (CliRunner, pipes).
    # soft_wrap: long message lines stay one line (the terminal wraps them), easy to grep.
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _open(store: str | None) -> Store:
    """The store, read-only: what every command that only looks uses."""
    return Store(store, create=False, readonly=True)


def _open_for_writing(store: str | None) -> Store:
    return Store(store, create=False)


def _report(problems: list[str]) -> None:
    """Print one line per run (or series) that failed, on stderr; exit 1 if any did."""
    for problem in problems:
        click.echo(f"error: {_one_line(problem)}", err=True)
    if problems:
        click.get_current_context().exit(1)


def _split(values: Iterable[str]) -> list[str]:
    """Options given several times and/or comma-separated: ``--status failed,crashed``."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _statuses(values: Iterable[str]) -> list[str]:
    out = _split(values)
    unknown = [s for s in out if s not in STATUSES]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: statuses are {', '.join(STATUSES)}", param_hint="--status"
        )
    return out


# -- formatting ----------------------------------------------------------------------------


def _when(ts: float | None, seconds: bool = True) -> str:
    if ts is None:
        return _MISSING
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else ""))


def _duration(start: float | None, end: float | None, status: str) -> str:
    if start is None:
        return _MISSING
    if end is None:
        if status != "running":
            return _MISSING
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


def _num(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.6g}"
    return str(value)


def _value(value: Any, full: bool = False, limit: int = 100) -> str:
    if isinstance(value, dict):
        text = json.dumps(value, sort_keys=True, default=str)
    elif isinstance(value, _dt.datetime):
        text = value.isoformat()
    else:
        text = _num(value)
    if full:
        return text
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status(status: str) -> Text:
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


# -- ls ------------------------------------------------------------------------------------


def _config_columns(rows: list[dict[str, Any]], how_many: int = 3) -> list[str]:
    """The config keys worth a column: those that differ between the runs shown first."""
    flat = [flatten(row["config"]) for row in rows]
    keys = set().union(*flat)
    # A key missing from a run counts as one more distinct value.
    distinct = {k: len({repr(f.get(k, _ABSENT)) for f in flat}) for k in keys}
    return sorted(keys, key=lambda k: (-distinct[k], k))[:how_many]


@main.command("ls")
@_project_option
@click.option("--tag", "-t", "tags", multiple=True, help="Only runs with this tag (repeatable).")
@click.option(
    "--status", "-s", "statuses", multiple=True, help="Only runs in these statuses (a,b or repeat)."
)
@click.option(
    "--limit", "-n", default=50, show_default=True, type=click.IntRange(min=0), help="0: all."
)
@_store_option
def ls_cmd(
    project: str | None,
    tags: tuple[str, ...],
    statuses: tuple[str, ...],
    limit: int,
    store: str | None,
) -> None:
    """List runs, newest first."""
    rows = tracker.list_runs(
        project=project, tags=_split(tags), status=_statuses(statuses) or None, store=store
    )
    console = _console()
    if not rows:
        console.print("no runs match" if project or tags or statuses else "no runs in this store")
        return
    shown = rows[:limit] if limit else rows
    config_keys = _config_columns(shown)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("id", no_wrap=True, min_width=max(len(r["id"]) for r in shown))
    for name in ("name", "project"):
        longest = max(len(name), *(len(r[name] or "") for r in shown))
        table.add_column(name, min_width=min(longest, 12), overflow="fold")
    for name in ("status", "created", "duration"):
        table.add_column(name, no_wrap=True)
    table.add_column("tags", overflow="fold")
    for key in config_keys:
        table.add_column(key, overflow="fold", max_width=24)
    for row in shown:
        config = flatten(row["config"])
        table.add_row(
            row["id"],
            row["name"] or "",
            row["project"],
            _status(row["status"]),
            _when(row["created_at"], seconds=False),
            _duration(row["created_at"], row["ended_at"], row["status"]),
            ", ".join(row["tags"]),
            *(_value(config[k], limit=30) if k in config else "" for k in config_keys),
        )
    console.print(table)
    if len(shown) < len(rows):
        console.print(f"showing {len(shown)} of {len(rows)} runs (--limit 0 shows all)")


# -- show ----------------------------------------------------------------------------------


def _series_keys(run: RunReader, store: Store) -> list[tuple[str, int]]:
    """(path, rank) of every series the run holds, its fork ancestors' included."""
    keys = {(s["path"], s["rank"]) for s in run.series_summary()}
    parent, seen = run.parent, {run.id}
    while parent is not None and parent[0] not in seen:
        seen.add(parent[0])
        try:
            ancestor = tracker.read_run(parent[0], store=store.root)
        except TrackerError:
            break
        keys |= {(s["path"], s["rank"]) for s in ancestor.series_summary()}
        parent = ancestor.parent
    return sorted(keys)


def _series_stats(run: RunReader, path: str, rank: int, width: int) -> dict[str, Any] | None:
    try:
        return _stats(run, path, rank, width)
    except (TrackerError, sqlite3.DatabaseError) as exc:
        # A damaged series: shown as such; the run's other series are still worth seeing.
        return {"error": _one_line(exc)}


def _stats(run: RunReader, path: str, rank: int, width: int) -> dict[str, Any] | None:
    try:
        b = run[path].fetch_values(rank=rank, buckets=width)
    except KeyError:
        return None
    except TypeError:  # a str series: no buckets, no min or max
        values = run[path].fetch_values(rank=rank)
        if not len(values):
            return None
        return {
            "count": len(values),
            "last": values.value[-1],
            "min": None,
            "max": None,
            "trend": "",
        }
    if not len(b):
        return None
    lows, highs = b.min[~np.isnan(b.min)], b.max[~np.isnan(b.max)]
    return {
        "count": int(b.count.sum()),
        "last": float(b.last[-1]),
        "min": float(lows.min()) if len(lows) else math.nan,
        "max": float(highs.max()) if len(highs) else math.nan,
        "trend": sparkline(b.last.tolist()),
    }


@main.command("show")
@click.argument("run")
@_project_option
@click.option("--full", is_flag=True, help="Print long values whole.")
@click.option(
    "--width", default=40, show_default=True, type=click.IntRange(min=1), help="Sparkline width."
)
@_store_option
def show_cmd(run: str, project: str | None, full: bool, width: int, store: str | None) -> None:
    """Show one run: RUN is an id, a unique id prefix, or `latest`."""
    st = _open(store)
    run_id = admin.resolve_run_id(st, run, project)
    r = tracker.read_run(run_id, project=project, store=st.root)
    status = r.status  # first: it records a crash the store has not noticed yet
    info = admin.run_info(st, run_id)
    console = _console()

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("run", Text(run_id + (f"  ({info['name']})" if info["name"] else "")))
    head.add_row("project", info["project"])
    head.add_row("status", _status(status))
    head.add_row("created", _when(info["created_at"]))
    head.add_row("ended", _when(info["ended_at"]))
    head.add_row("duration", _duration(info["created_at"], info["ended_at"], status))
    if info["host"]:
        head.add_row("host", f"{info['host']} (pid {info['pid']})")
    if r.parent is not None:
        head.add_row("forked from", f"{r.parent[0]} at step {r.parent[1]}")
    if info["children"]:
        head.add_row("forks", ", ".join(info["children"]))
    head.add_row("tags", ", ".join(r.tags) or _MISSING)
    if info["error"]:
        head.add_row("error", _value(info["error"].strip().splitlines()[-1], full))
    console.print(head)

    fields = r.fields()
    if fields:
        table = Table(
            title="fields", title_justify="left", box=None, header_style="bold", pad_edge=False
        )
        table.add_column("path", no_wrap=True)
        table.add_column("value", overflow="fold")
        group = None
        for path in sorted(fields, key=lambda p: (p.split("/")[0] != "config", p)):
            top = path.split("/")[0]
            if group is not None and top != group:
                table.add_section()
            group = top
            table.add_row(path, _value(fields[path], full))
        console.print()
        console.print(table)

    keys = [k for k in _series_keys(r, st) if k[0] not in fields]
    stats = [(p, k, s) for p, k in keys if (s := _series_stats(r, p, k, width)) is not None]
    problems = [f"series {p!r} rank {k}: {s['error']}" for p, k, s in stats if "error" in s]
    stats = [(p, k, s) for p, k, s in stats if "error" not in s]
    if stats:
        many = len({k for _, k, _ in stats}) > 1
        table = Table(
            title="series", title_justify="left", box=None, header_style="bold", pad_edge=False
        )
        table.add_column("path", no_wrap=True)
        if many:
            table.add_column("rank", justify="right")
        for name in ("count", "last", "min", "max"):
            table.add_column(name, justify="right", no_wrap=True)
        table.add_column("trend", no_wrap=True)
        for path, rank, s in stats:
            cells = [path] + ([str(rank)] if many else [])
            cells += [str(s["count"]), _value(s["last"], full, limit=40)]
            cells += [_MISSING if s[k] is None else _num(s[k]) for k in ("min", "max")]
            table.add_row(*cells, s["trend"])
        console.print()
        console.print(table)
    _report(problems)


# -- compare -------------------------------------------------------------------------------


def _final_values(r: RunReader, fields: dict[str, Any]) -> dict[str, Any]:
    """Last value of every series of rank 0, inherited ones included."""
    out = {s["path"]: s["last_value"] for s in r.series_summary() if s["rank"] == 0}
    for path in r.paths():
        if path in fields or path in out:
            continue
        try:
            values = r[path].fetch_values(rank=0)
        except KeyError:
            continue
        if len(values):
            last = values.value[-1]
            out[path] = last.item() if isinstance(last, np.generic) else last
    return out


def _same(values: list[Any]) -> bool:
    # repr: NaN equals NaN, and 1, 1.0 and True stay apart, as they were logged.
    return len({"<absent>" if v is _ABSENT else repr(v) for v in values}) == 1


@main.command("compare")
@click.argument("runs", nargs=-1, required=True)
@_project_option
@click.option("--all", "show_all", is_flag=True, help="Also equal config values and sys/ series.")
@_store_option
def compare_cmd(
    runs: tuple[str, ...], project: str | None, show_all: bool, store: str | None
) -> None:
    """Compare runs side by side: config values that differ, and final metrics."""
    if len(runs) < 2:
        raise click.UsageError("compare needs at least two runs")
    st = _open(store)
    ids = [admin.resolve_run_id(st, text, project) for text in runs]
    readers, configs, finals, statuses, problems = [], [], [], [], []
    for rid in ids:
        try:
            r = tracker.read_run(rid, project=project, store=st.root)
            fields = r.fields()
            final = _final_values(r, fields)
            status = r.status
        except (TrackerError, sqlite3.DatabaseError) as exc:
            problems.append(f"run {rid}: {exc}")
            continue
        readers.append(r)
        configs.append({p: v for p, v in fields.items() if p.startswith("config/")})
        finals.append(final)
        statuses.append(status)
    if not readers:
        _report(problems)

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("", no_wrap=True)
    for r in readers:
        table.add_column(
            r.id + (f"\n{r.name}" if r.name else ""), justify="right", min_width=len(r.id)
        )
    table.add_row("status", *(_status(status) for status in statuses))

    keys = sorted(set().union(*configs))
    equal = 0
    table.add_section()
    for key in keys:
        values = [c.get(key, _ABSENT) for c in configs]
        if _same(values) and not show_all:
            equal += 1
            continue
        table.add_row(key, *(_MISSING if v is _ABSENT else _value(v, limit=40) for v in values))

    metric_keys = sorted(k for k in set().union(*finals) if show_all or not k.startswith("sys/"))
    if metric_keys:
        table.add_section()
    for key in metric_keys:
        values = [f.get(key, _ABSENT) for f in finals]
        table.add_row(key, *(_MISSING if v is _ABSENT else _value(v, limit=40) for v in values))
    console = _console()
    console.print(table)
    if equal:
        console.print(f"{equal} config value(s) equal in every run, not shown (--all shows them)")
    _report(problems)


# -- export --------------------------------------------------------------------------------

_FORMATS = ("csv", "parquet", "json")


def _text(value: Any) -> str:
    """A field value as text for csv and parquet."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return repr(value)


def _json_safe(value: Any) -> Any:
    # Strict JSON has no NaN or infinity; these strings are what float() reads back.
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    return value


def _iter_series(
    r: RunReader, st: Store, fields: dict[str, Any]
) -> Iterator[tuple[str, int, SeriesValues]]:
    for path, rank in _series_keys(r, st):
        if path in fields:
            continue
        try:
            values = r[path].fetch_values(rank=rank)
        except KeyError:
            continue
        if len(values):
            yield path, rank, values


def _run_meta(r: RunReader, info: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "id": r.id,
        "project": info["project"],
        "name": info["name"],
        "status": status,
        "tags": r.tags,
        "parent": None if r.parent is None else {"id": r.parent[0], "step": r.parent[1]},
        "created_at": info["created_at"],
        "ended_at": info["ended_at"],
    }


@main.command("export")
@click.argument("run")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(_FORMATS),
    default=None,
    help="Default: from the --output suffix, else csv.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default: stdout; for parquet RUN.parquet).",
)
@_project_option
@_store_option
def export_cmd(
    run: str, fmt: str | None, output: Path | None, project: str | None, store: str | None
) -> None:
    """Export a run: every series point as a row (path, rank, step, value, timestamp),
    plus the run's single values (rows with no rank, step or timestamp)."""
    if fmt is None:
        suffix = output.suffix.lstrip(".").lower() if output else ""
        fmt = suffix if suffix in _FORMATS else "csv"
    st = _open(store)
    run_id = admin.resolve_run_id(st, run, project)
    r = tracker.read_run(run_id, project=project, store=st.root)
    status = r.status
    meta = _run_meta(r, admin.run_info(st, run_id), status)
    fields = r.fields()
    series = list(_iter_series(r, st, fields))
    points = sum(len(v) for _, _, v in series)

    if fmt == "parquet":
        output = output or Path(f"{run_id}.parquet")
        _write_parquet(output, meta, fields, series)
    elif output is None:
        (_write_csv if fmt == "csv" else _write_json)(sys.stdout, meta, fields, series)
        return
    else:
        with open(output, "w", newline="", encoding="utf-8") as f:
            (_write_csv if fmt == "csv" else _write_json)(f, meta, fields, series)
    _console(stderr=True).print(
        f"exported run {run_id}: {points} points in {len(series)} series and "
        f"{len(fields)} fields to {output}"
    )


def _write_csv(out: TextIO, meta: dict[str, Any], fields: dict[str, Any], series: Series) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("path", "rank", "step", "value", "timestamp"))
    for path, value in fields.items():
        writer.writerow((path, "", "", _text(value), ""))
    for path, rank, values in series:
        text = values.value.dtype == object
        for step, value, ts in zip(
            values.step.tolist(), values.value.tolist(), values.timestamp.tolist(), strict=True
        ):
            writer.writerow((path, rank, step, value if text else repr(value), repr(ts)))


def _write_json(out: TextIO, meta: dict[str, Any], fields: dict[str, Any], series: Series) -> None:
    rows = []
    for path, rank, values in series:
        for step, value, ts in zip(
            values.step.tolist(), values.value.tolist(), values.timestamp.tolist(), strict=True
        ):
            rows.append(
                {
                    "path": path,
                    "rank": rank,
                    "step": step,
                    "value": _json_safe(value),
                    "timestamp": ts,
                }
            )
    doc = {
        "run": meta,
        "fields": {p: _json_safe(v) for p, v in fields.items()},
        "series": rows,
    }
    json.dump(doc, out, allow_nan=False, ensure_ascii=False)
    out.write("\n")


def _write_parquet(
    output: Path, meta: dict[str, Any], fields: dict[str, Any], series: Series
) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise click.ClickException(
            "parquet export needs pyarrow, which is not installed: pip install pyarrow"
        ) from None
    try:
        import pandas as pd
    except ImportError:
        raise click.ClickException(
            "parquet export needs pandas, which is not installed: pip install pandas"
        ) from None
    import numpy as np

    # Numbers go to `value` (float64), everything else to `text`, so each column has one type.
    frames = [
        pd.DataFrame(
            {
                "path": list(fields),
                "rank": pd.array([None] * len(fields), dtype="Int64"),
                "step": pd.array([None] * len(fields), dtype="Int64"),
                "value": [
                    float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan
                    for v in fields.values()
                ],
                "text": [
                    None if isinstance(v, int | float) and not isinstance(v, bool) else _text(v)
                    for v in fields.values()
                ],
                "timestamp": [math.nan] * len(fields),
            }
        )
    ]
    for path, rank, values in series:
        n = len(values)
        is_text = values.value.dtype == object
        frames.append(
            pd.DataFrame(
                {
                    "path": [path] * n,
                    "rank": pd.array(np.full(n, rank), dtype="Int64"),
                    "step": pd.array(values.step, dtype="Int64"),
                    "value": np.full(n, math.nan) if is_text else values.value,
                    "text": list(values.value) if is_text else [None] * n,
                    "timestamp": values.timestamp,
                }
            )
        )
    df = pd.concat(frames, ignore_index=True)
    df["text"] = df["text"].astype(object)
    table = pa.Table.from_pandas(df, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[b"tracker.run"] = json.dumps(meta, default=str).encode()
    pq.write_table(table.replace_schema_metadata(metadata), output)


# -- gc ------------------------------------------------------------------------------------


@main.command("gc")
@click.option("--older-than", metavar="AGE", help="Runs created longer ago than AGE (30d, 12h).")
@click.option(
    "--status", "statuses", multiple=True, help="Runs in these statuses (failed,crashed)."
)
@click.option("--tag", "-t", "tags", multiple=True, help="Runs with this tag (repeatable).")
@_project_option
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_store_option
def gc_cmd(
    older_than: str | None,
    statuses: tuple[str, ...],
    tags: tuple[str, ...],
    project: str | None,
    dry_run: bool,
    yes: bool,
    store: str | None,
) -> None:
    """Delete runs matching ALL the filters given (at least one), with their journals.

    A run with a live writer is never deleted, nor a fork parent whose children stay.
    """
    age = None
    if older_than is not None:
        try:
            age = admin.parse_age(older_than)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--older-than") from None
    status_list, tag_list = _statuses(statuses), _split(tags)
    if age is None and not status_list and not tag_list and project is None:
        raise click.UsageError(
            "give at least one filter: --older-than, --status, --tag or --project"
        )
    st = _open(store) if dry_run else _open_for_writing(store)
    plan = admin.find_runs_to_delete(
        st, older_than=age, statuses=status_list, tags=tag_list, project=project
    )
    console = _console()
    if not plan:
        console.print("no runs match; nothing to delete")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("id", no_wrap=True, min_width=max(len(p["id"]) for p in plan))
    for name in ("name", "project", "status", "created", "points"):
        table.add_column(
            name, no_wrap=name != "name", justify="right" if name == "points" else "left"
        )
    table.add_column("action")
    for p in plan:
        keep = p["keep_reason"]
        action = Text("delete", style="red") if keep is None else Text(f"keep: {keep}")
        table.add_row(
            p["id"], p["name"] or "", p["project"], _status(p["status"]),
            _when(p["created_at"]), str(p["points"]), action,
        )  # fmt: skip
    console.print(table)
    doomed = [p for p in plan if p["keep_reason"] is None]
    if not doomed:
        console.print(f"nothing to delete: all {len(plan)} matching run(s) are kept")
        return
    points = sum(p["points"] for p in doomed)
    if dry_run:
        console.print(
            f"dry run: {len(doomed)} run(s) ({points} points) would be deleted; nothing was deleted"
        )
        return
    if not yes:
        click.confirm(
            f"Delete {len(doomed)} run(s) ({points} points) and their journals from {st.root}?",
            abort=True,
        )
    deleted = admin.delete_runs(st, [p["id"] for p in doomed])
    gone = set(deleted)
    for p in doomed:
        if p["id"] in gone:
            console.print(
                f"deleted {p['id']}: {p['series']} series, {p['points']} points, "
                f"journal {p['journal']}"
            )
        else:
            console.print(f"kept {p['id']}: a writer opened it (or a fork child) meanwhile")
    console.print(f"deleted {len(deleted)} run(s)")


# -- doctor and sync -----------------------------------------------------------------------


@main.command("doctor")
@_store_option
@click.pass_context
def doctor_cmd(ctx: click.Context, store: str | None) -> None:
    """Check the store end to end; exit status 1 if any check fails."""
    checks = admin.check_store(store)
    console = _console()
    for check in checks:
        mark = Text("✓", style="green") if check.ok else Text("✗", style="red")
        console.print(mark, Text(f"{check.name}: ", style="bold") + Text(check.detail))
    if not all(c.ok for c in checks):
        ctx.exit(1)


@main.command("sync")
@_store_option
def sync_cmd(store: str | None) -> None:
    """Apply every journal the store has not applied (offline runs, crashed writers)."""
    st = _open_for_writing(store)
    console = _console()
    try:
        backlog = admin.journal_backlog(st)
    except (TrackerError, OSError, sqlite3.Error) as exc:
        # Only the report's byte counts come from it; syncing itself goes on.
        click.echo(f"warning: cannot measure the journal backlog: {_one_line(exc)}", err=True)
        backlog = {}
    conn = st.connection()
    running = {r for (r,) in conn.execute("SELECT run_id FROM runs WHERE status='running'")}
    results = admin.sync_runs(st)
    changed = 0
    problems = []
    for run_id, error in results:
        if error is not None:
            problems.append(f"could not sync run {run_id}: {error}")
            continue
        row = conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        status = row[0] if row else "unknown"
        if run_id in backlog:
            console.print(f"synced {run_id}: {backlog[run_id]} journal bytes applied, {status}")
        elif run_id in running and status != "running":
            console.print(f"synced {run_id}: its writer is gone, recorded as {status}")
        else:
            continue
        changed += 1
    if changed:
        console.print(f"{changed} run(s) synced")
    elif not problems:
        console.print(f"nothing to sync: the store holds every journal ({len(results)} checked)")
    if problems:
        console.print(f"{len(problems)} run(s) could not be synced")
    _report(problems)


if __name__ == "__main__":
    main(prog_name="tracker")
