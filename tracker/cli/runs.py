"""``tracker ls``, ``tracker show`` and ``tracker compare``: looking at runs."""

from __future__ import annotations

import math
from typing import Any

import click
import numpy as np
from rich.table import Table
from rich.text import Text

import tracker
from tracker.core.errors import TrackerError
from tracker.core.lookup import resolve_run_id, run_info
from tracker.core.paths import flatten
from tracker.core.reader import RunReader

from . import common

# -- ls ------------------------------------------------------------------------------------


def _config_columns(rows: list[dict[str, Any]], how_many: int = 3) -> list[str]:
    """The config keys worth a column: those that differ between the runs shown first."""
    flat = [flatten(row["config"]) for row in rows]
    keys = set().union(*flat)
    # A key missing from a run counts as one more distinct value.
    distinct = {k: len({repr(f.get(k, common.ABSENT)) for f in flat}) for k in keys}
    return sorted(keys, key=lambda k: (-distinct[k], k))[:how_many]


@click.command("ls")
@common.project_option
@click.option("--tag", "-t", "tags", multiple=True, help="Only runs with this tag (repeatable).")
@click.option(
    "--status", "-s", "statuses", multiple=True, help="Only runs in these statuses (a,b or repeat)."
)
@click.option(
    "--limit", "-n", default=50, show_default=True, type=click.IntRange(min=0), help="0: all."
)
@common.store_option
def ls_cmd(
    project: str | None,
    tags: tuple[str, ...],
    statuses: tuple[str, ...],
    limit: int,
    store: str | None,
) -> None:
    """List runs, newest first."""
    rows = tracker.list_runs(
        project=project,
        tags=common.split(tags),
        status=common.statuses(statuses) or None,
        store=store,
    )
    console = common.console()
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
            common.status_text(row["status"]),
            common.when(row["created_at"], seconds=False),
            common.duration(row["created_at"], row["ended_at"], row["status"]),
            ", ".join(row["tags"]),
            *(common.value_text(config[k], limit=30) if k in config else "" for k in config_keys),
        )
    console.print(table)
    if len(shown) < len(rows):
        console.print(f"showing {len(shown)} of {len(rows)} runs (--limit 0 shows all)")


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
        "trend": common.sparkline(b.last.tolist()),
    }


@click.command("show")
@click.argument("run")
@common.project_option
@click.option("--full", is_flag=True, help="Print long values whole.")
@click.option(
    "--width", default=40, show_default=True, type=click.IntRange(min=1), help="Sparkline width."
)
@common.store_option
def show_cmd(run: str, project: str | None, full: bool, width: int, store: str | None) -> None:
    """Show one run: RUN is an id, a unique id prefix, or `latest`."""
    st = common.open_readonly(store)
    run_id = resolve_run_id(st, run, project)
    r = tracker.read_run(run_id, project=project, store=st.root)
    status = r.status
    info = run_info(st, run_id)
    console = common.console()

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
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
    head.add_row("tags", ", ".join(r.tags) or common.MISSING)
    if info["error"]:
        head.add_row("error", common.value_text(info["error"].strip().splitlines()[-1], full))
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
            table.add_row(path, common.value_text(fields[path], full))
        console.print()
        console.print(table)

    keys = [k for k in r.series_keys() if k[0] not in fields]
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
            cells += [str(s["count"]), common.value_text(s["last"], full, limit=40)]
            cells += [common.MISSING if s[k] is None else common.num(s[k]) for k in ("min", "max")]
            table.add_row(*cells, s["trend"])
        console.print()
        console.print(table)
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
@common.store_option
def compare_cmd(
    runs: tuple[str, ...], project: str | None, show_all: bool, store: str | None
) -> None:
    """Compare runs side by side: config values that differ, and final metrics."""
    if len(runs) < 2:
        raise click.UsageError("compare needs at least two runs")
    st = common.open_readonly(store)
    ids = [resolve_run_id(st, text, project) for text in runs]
    readers, configs, finals, statuses, problems = [], [], [], [], []
    for rid in ids:
        try:
            r = tracker.read_run(rid, project=project, store=st.root)
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

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("", no_wrap=True)
    for r in readers:
        table.add_column(
            r.id + (f"\n{r.name}" if r.name else ""), justify="right", min_width=len(r.id)
        )
    table.add_row("status", *(common.status_text(status) for status in statuses))

    keys = sorted(set().union(*configs))
    equal = 0
    table.add_section()
    for key in keys:
        values = [c.get(key, common.ABSENT) for c in configs]
        if _same(values) and not show_all:
            equal += 1
            continue
        table.add_row(
            key,
            *(
                common.MISSING if v is common.ABSENT else common.value_text(v, limit=40)
                for v in values
            ),
        )

    metric_keys = sorted(k for k in set().union(*finals) if show_all or not k.startswith("sys/"))
    if metric_keys:
        table.add_section()
    for key in metric_keys:
        values = [f.get(key, common.ABSENT) for f in finals]
        table.add_row(
            key,
            *(
                common.MISSING if v is common.ABSENT else common.value_text(v, limit=40)
                for v in values
            ),
        )
    console = common.console()
    console.print(table)
    if equal:
        console.print(f"{equal} config value(s) equal in every run, not shown (--all shows them)")
    common.report(problems)
