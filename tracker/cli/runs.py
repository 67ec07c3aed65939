"""``tracker ls``, ``tracker show`` and ``tracker compare``: looking at runs."""

from __future__ import annotations

import fnmatch
import math
from typing import Any

import click
import numpy as np
from rich.table import Table
from rich.text import Text

import tracker
from tracker.core.errors import TrackerError
from tracker.core.events import EVENTS_PATH
from tracker.core.lookup import resolve_run_id, run_info
from tracker.core.paths import flatten
from tracker.core.reader import RunReader
from tracker.core.replay import journal_backlog
from tracker.core.stores import Store

from . import common
from .common import Column, Free, Layout

# -- ls ------------------------------------------------------------------------------------


def _config_columns(rows: list[dict[str, Any]], how_many: int = 3) -> list[str]:
    """The config keys worth a column: those that differ between the runs shown first."""
    flat = [flatten(row["config"]) for row in rows]
    keys = set().union(*flat)
    # A key missing from a run counts as one more distinct value.
    distinct = {k: len({repr(f.get(k, common.ABSENT)) for f in flat}) for k in keys}
    return sorted(keys, key=lambda k: (-distinct[k], k))[:how_many]


def _waiting_journals(st: Store) -> str | None:
    """A line saying how many journals wait for ``tracker sync``, or None if none do."""
    try:
        known = {row["run_id"] for row in st.runs()}
        # journal_backlog probes the writer lock of every run, and a writer resuming a
        # run at that instant would find it taken: it is asked only when some journal
        # belongs to a run the store lacks (an offline run, a writer that died before
        # applying anything). A stale run the store has, list_runs recovers itself.
        if all(run_id in known for run_id in st.journal_runs()):
            return None
        backlog = journal_backlog(st)
    except (TrackerError, OSError):
        return None  # only a hint: a journal that cannot be read is doctor's to report
    if not backlog:
        return None
    unlisted = sum(1 for run_id in backlog if run_id not in known)
    n = len(backlog)
    line = (
        f"{common.plural(n, 'journal')} {'waits' if n == 1 else 'wait'} for "
        f"`tracker sync --store {st.root}` to apply {'it' if n == 1 else 'them'}"
    )
    if unlisted:
        line += (
            f" ({common.plural(unlisted, 'run')} not listed until then: offline or never applied)"
        )
    return line


def _ls_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "project": row["project"],
        "status": row["status"],
        "tags": row["tags"],
        "created_at": row["created_at"],
        "ended_at": row["ended_at"],
        "duration_s": common.duration_s(row["created_at"], row["ended_at"], row["status"]),
        "parent_id": row["parent_id"],
        "config": row["config"],
    }


@click.command("ls")
@common.project_option
@click.option("--tag", "-t", "tags", multiple=True, help="Only runs with this tag (repeatable).")
@click.option(
    "--status", "-s", "statuses", multiple=True, help="Only runs in these statuses (a,b or repeat)."
)
@click.option(
    "--limit",
    "-n",
    default=None,
    type=click.IntRange(min=0),
    help="At most this many runs; 0: all.  [default: 50; with --json all]",
)
@common.json_option
@common.store_option
def ls_cmd(
    project: str | None,
    tags: tuple[str, ...],
    statuses: tuple[str, ...],
    limit: int | None,
    as_json: bool,
    store: str | None,
) -> None:
    """List runs, newest first."""
    st = common.open_readonly(store)
    rows = tracker.list_runs(
        project=project,
        tags=common.split(tags),
        status=common.statuses(statuses) or None,
        store=store,
    )
    if limit is None:
        limit = 0 if as_json else 50
    shown = rows[:limit] if limit else rows
    waiting = _waiting_journals(st)
    if as_json:
        common.print_json([_ls_json(row) for row in shown])
        if waiting:
            click.echo(f"note: {waiting}", err=True)
        return
    console = common.console()
    if not rows:
        console.print("no runs match" if project or tags or statuses else f"no runs in {st.root}")
        if waiting:
            console.print(waiting)
        return
    text_limit = 30 if console.terminal else None
    config_keys = _config_columns(shown)
    layout = Layout(
        Column("id"),
        Column("name", wrap=True),
        Column("project", wrap=True),
        Column("status"),
        Column("created"),
        Column("duration", optional=True),
        Column("tags", wrap=True),
        *(Column(key, optional=True) for key in config_keys),
    )
    for row in shown:
        config = flatten(row["config"])
        layout.add_row(
            row["id"],
            row["name"] or "",
            row["project"],
            common.status_text(row["status"]),
            common.when(row["created_at"], seconds=False),
            common.duration(row["created_at"], row["ended_at"], row["status"]),
            ", ".join(row["tags"]),
            *(
                common.value_cell(config[k], limit=text_limit) if k in config else ""
                for k in config_keys
            ),
        )
    left_out = layout.print(console)
    common.say_left_out(console, left_out, "`tracker ls --json` or piped output shows them")
    if len(shown) < len(rows):
        console.print(f"showing {len(shown)} of {len(rows)} runs (--limit 0 shows all)")
    if waiting:
        console.print(waiting)


# -- show ----------------------------------------------------------------------------------


def _series_stats(run: RunReader, path: str, rank: int, width: int) -> dict[str, Any] | None:
    try:
        return _stats(run, path, rank, width)
    except TrackerError as exc:
        # A damaged series: shown as such; the run's other series are still worth seeing.
        return {"error": common.one_line(exc)}


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
            "trend": [],
        }
    if not len(b):
        return None
    lows, highs = b.min[~np.isnan(b.min)], b.max[~np.isnan(b.max)]
    return {
        "count": int(b.count.sum()),
        "last": float(b.last[-1]),
        "min": float(lows.min()) if len(lows) else math.nan,
        "max": float(highs.max()) if len(highs) else math.nan,
        "trend": b.last.tolist(),
    }


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(path, p) for p in patterns)


def _run_json(r: RunReader, info: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": info["name"],
        "project": info["project"],
        "status": status,
        "tags": r.tags,
        "created_at": info["created_at"],
        "ended_at": info["ended_at"],
        "duration_s": common.duration_s(info["created_at"], info["ended_at"], status),
        "host": info["host"],
        "pid": info["pid"],
        "parent_id": info["parent_id"],
        "fork_step": info["fork_step"],
        "children": info["children"],
        "error": info["error"],
    }


@click.command("show")
@click.argument("run")
@common.project_option
@click.option(
    "--path",
    "patterns",
    multiple=True,
    metavar="GLOB",
    help="Only fields and series whose path matches GLOB, e.g. 'train/*' (repeatable).",
)
@click.option("--full", is_flag=True, help="Print long text and numbers whole (exact repr).")
@click.option(
    "--width", default=40, show_default=True, type=click.IntRange(min=1), help="Sparkline width."
)
@common.json_option
@common.store_option
def show_cmd(
    run: str,
    project: str | None,
    patterns: tuple[str, ...],
    full: bool,
    width: int,
    as_json: bool,
    store: str | None,
) -> None:
    """Show one run: RUN is an id, a unique id prefix, `latest`, or a run's name
    (NAME or PROJECT/NAME) that only one run has."""
    st = common.open_readonly(store)
    run_id = resolve_run_id(st, run, project)
    r = tracker.read_run(run_id, project=project, store=store)
    status = r.status
    info = run_info(st, run_id)

    fields = r.fields()
    # Events have a line of their own (and `tracker events`); their series is shown only
    # when --path asks for it.
    keys = [
        k
        for k in r.series_keys()
        if k[0] not in fields and _matches(k[0], patterns) and (patterns or k[0] != EVENTS_PATH)
    ]
    fields = {p: v for p, v in fields.items() if _matches(p, patterns)}
    stats = [(p, k, s) for p, k in keys if (s := _series_stats(r, p, k, width)) is not None]
    problems = [f"series {p!r} rank {k}: {s['error']}" for p, k, s in stats if "error" in s]
    stats = [(p, k, s) for p, k, s in stats if "error" not in s]
    if as_json:
        common.print_json(
            {
                "run": _run_json(r, info, status),
                "fields": fields,
                "series": [
                    {"path": p, "rank": k, **{n: s[n] for n in ("count", "last", "min", "max")}}
                    for p, k, s in stats
                ],
            }
        )
        common.report(problems)
        return

    console = common.console()
    limit = 100 if console.terminal else None
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row("run", Text(run_id + (f"  ({info['name']})" if info["name"] else "")))
    head.add_row("project", info["project"])
    head.add_row("status", common.status_text(status))
    head.add_row("created", common.when(info["created_at"]))
    head.add_row("ended", common.when(info["ended_at"]))
    head.add_row("duration", common.duration(info["created_at"], info["ended_at"], status))
    if info["host"]:
        head.add_row("host", f"{info['host']} (pid {info['pid']})")
    if r.parent is not None:
        head.add_row("forked from", f"{r.parent[0]} at step {r.parent[1]}")
    if info["children"]:
        head.add_row("forks", ", ".join(info["children"]))
    head.add_row("tags", Text(", ".join(r.tags) or common.MISSING))
    events = r.events()
    if events:
        kinds: dict[str, int] = {}
        for e in events:
            kinds[str(e.get("kind"))] = kinds.get(str(e.get("kind")), 0) + 1
        counts = ", ".join(f"{k} {n}" for k, n in kinds.items())
        head.add_row("events", Text(f"{len(events)} ({counts}): `tracker events {run_id}`"))
    if info["error"]:
        error = info["error"].strip().splitlines()[-1]
        head.add_row("error", Text(common.value_text(error, full, limit)))
    console.print(head)

    if fields:
        table = Layout(Column("path"), Column("value"), title="fields")
        group = None
        for path in sorted(fields, key=lambda p: (p.split("/")[0] != "config", p)):
            top = path.split("/")[0]
            if group is not None and top != group:
                table.add_section()
            group = top
            table.add_row(path, common.value_cell(fields[path], full, limit))
        console.print()
        table.print(console)

    if stats:
        many = len({k for _, k, _ in stats}) > 1
        columns = [Column("path")]
        if many:
            columns.append(Column("rank", justify="right"))
        columns += [Column(name, justify="right") for name in ("count", "last", "min", "max")]
        columns.append(Column("trend", spark=True, optional=True))
        table = Layout(*columns, title="series")
        for path, rank, s in stats:
            cells: list[Any] = [path] + ([str(rank)] if many else [])
            cells += [str(s["count"]), common.value_cell(s["last"], full, limit and 40)]
            cells += [
                common.MISSING if s[k] is None else common.num(s[k], full) for k in ("min", "max")
            ]
            table.add_row(*cells, s["trend"])
        console.print()
        left_out = table.print(console)
        common.say_left_out(console, left_out, "a wider terminal or piped output shows it")
    if patterns and not fields and not stats:
        console.print(f"no field or series path matches {' or '.join(patterns)}")
    common.report(problems)


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
    return len({"<absent>" if v is common.ABSENT else repr(v) for v in values}) == 1


@click.command("compare")
@click.argument("runs", nargs=-1, required=True)
@common.project_option
@click.option("--all", "show_all", is_flag=True, help="Also equal config values and sys/ series.")
@common.json_option
@common.store_option
def compare_cmd(
    runs: tuple[str, ...], project: str | None, show_all: bool, as_json: bool, store: str | None
) -> None:
    """Compare runs side by side: config values that differ, and final metrics.

    Each RUN is an id, a unique id prefix, `latest`, or a run's name (NAME or
    PROJECT/NAME) that only one run has."""
    if len(runs) < 2:
        raise click.UsageError("compare needs at least two runs")
    st = common.open_readonly(store)
    ids = [resolve_run_id(st, text, project) for text in runs]
    readers, configs, finals, statuses, problems = [], [], [], [], []
    for rid in ids:
        try:
            r = tracker.read_run(rid, project=project, store=store)
            fields = r.fields()
            final = _final_values(r, fields)
            status = r.status
        except TrackerError as exc:
            problems.append(f"run {rid}: {exc}")
            continue
        readers.append(r)
        configs.append({p: v for p, v in fields.items() if p.startswith("config/")})
        finals.append(final)
        statuses.append(status)
    if not readers:
        common.report(problems)

    keys = sorted(set().union(*configs))
    metric_keys = sorted(set().union(*finals))
    if as_json:
        config = {
            key: {r.id: c[key] for r, c in zip(readers, configs, strict=True) if key in c}
            for key in keys
        }
        common.print_json(
            {
                "runs": [
                    {"id": r.id, "name": r.name, "project": r.project, "status": status}
                    for r, status in zip(readers, statuses, strict=True)
                ],
                "config": config,
                "config_differs": [
                    key for key in keys if not _same([c.get(key, common.ABSENT) for c in configs])
                ],
                "metrics": {
                    key: {r.id: f[key] for r, f in zip(readers, finals, strict=True) if key in f}
                    for key in metric_keys
                },
            }
        )
        common.report(problems)
        return

    console = common.console()
    limit = 40 if console.terminal else None

    def cells(values: list[Any]) -> list[str]:
        return [
            common.MISSING if v is common.ABSENT else common.value_cell(v, limit=limit)
            for v in values
        ]

    table = Layout(Column(""), *(Column(r.id, justify="right") for r in readers))
    if any(r.name for r in readers):
        table.add_row("name", *(Free(r.name or "") for r in readers))
    table.add_row("status", *(common.status_text(status) for status in statuses))
    table.add_section()
    equal = 0
    for key in keys:
        values = [c.get(key, common.ABSENT) for c in configs]
        if _same(values) and not show_all:
            equal += 1
            continue
        table.add_row(key, *cells(values))
    table.add_section()
    for key in metric_keys:
        if show_all or not key.startswith("sys/"):
            table.add_row(key, *cells([f.get(key, common.ABSENT) for f in finals]))
    table.print(console)
    if equal:
        console.print(f"{equal} config value(s) equal in every run, not shown (--all shows them)")
    common.report(problems)
