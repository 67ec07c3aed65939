"""``tracker gc``, ``tracker doctor`` and ``tracker sync``: keeping a store healthy."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.text import Text

from tracker.core.cleanup import delete_runs, find_runs_to_delete, parse_age
from tracker.core.doctor import check_store
from tracker.core.errors import TrackerError
from tracker.core.replay import journal_backlog, sync_runs
from tracker.core.stores import Store

from . import common
from .common import Column, Free, Layout

# -- gc ------------------------------------------------------------------------------------


@click.command("gc")
@click.option("--older-than", metavar="AGE", help="Runs created longer ago than AGE (30d, 12h).")
@click.option(
    "--status", "statuses", multiple=True, help="Runs in these statuses (failed,crashed)."
)
@click.option("--tag", "-t", "tags", multiple=True, help="Runs with this tag (repeatable).")
@common.project_option
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--no-compact",
    is_flag=True,
    help="Do not compact store.db afterwards (compacting rewrites it: slow for a big store).",
)
@common.store_option
def gc_cmd(
    older_than: str | None,
    statuses: tuple[str, ...],
    tags: tuple[str, ...],
    project: str | None,
    dry_run: bool,
    yes: bool,
    no_compact: bool,
    store: str | None,
) -> None:
    """Delete runs matching ALL the filters given (at least one), with their journals.

    A run with a live writer is never deleted, nor a fork parent whose children stay.
    Then store.db is compacted, so that the disk space the runs took is freed.
    """
    age = None
    if older_than is not None:
        try:
            age = parse_age(older_than)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--older-than") from None
    status_list, tag_list = common.statuses(statuses), common.split(tags)
    if age is None and not status_list and not tag_list and project is None:
        raise click.UsageError(
            "give at least one filter: --older-than, --status, --tag or --project"
        )
    st = common.open_readonly(store) if dry_run else common.open_for_writing(store)
    plan = find_runs_to_delete(
        st, older_than=age, statuses=status_list, tags=tag_list, project=project
    )
    console = common.console()
    if not plan:
        console.print("no runs match; nothing to delete")
        if not dry_run and not no_compact and st.reclaimable_bytes():
            _compact(st, console)  # what an earlier gc deleted but could not compact
        return
    table = Layout(
        Column("id"),
        Column("name", wrap=True),
        Column("project", wrap=True),
        Column("status"),
        Column("created"),
        Column("points", justify="right"),
        Column("action"),
    )
    for p in plan:
        keep = p["keep_reason"]
        # The verb stays whole on one line; the reason for keeping a run is free text.
        action = Text("delete", style="red") if keep is None else Free(f"keep: {keep}")
        table.add_row(
            p["id"], p["name"] or "", p["project"], common.status_text(p["status"]),
            common.when(p["created_at"], seconds=False), str(p["points"]), action,
        )  # fmt: skip
    table.print(console)
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
    deleted = delete_runs(st, [p["id"] for p in doomed])
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
    if deleted and not no_compact and st.reclaimable_bytes():
        _compact(st, console)


def _compact(st: Store, console: Console) -> None:
    """Free the disk space of what was deleted; a failure leaves the deletion standing."""
    size = st.disk_bytes()
    console.print(f"compacting {st.location} ({_mb(size)})...")
    try:
        freed = st.reclaim_space()
    except TrackerError as exc:
        click.echo(
            f"warning: the runs are deleted, but their space is not freed yet: "
            f"{common.one_line(exc)}; the same `tracker gc` run again later compacts it",
            err=True,
        )
        return
    console.print(f"freed {_mb(freed)}; the store now takes {_mb(st.disk_bytes())}")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


# -- doctor and sync -----------------------------------------------------------------------


@click.command("doctor")
@common.store_option
@click.pass_context
def doctor_cmd(ctx: click.Context, store: str | None) -> None:
    """Check the store end to end; exit status 1 if any check fails."""
    checks = check_store(store)
    console = common.console()
    for check in checks:
        mark = Text("✓", style="green") if check.ok else Text("✗", style="red")
        console.print(mark, Text(f"{check.name}: ", style="bold") + Text(check.detail))
    if not all(c.ok for c in checks):
        ctx.exit(1)


@click.command("sync")
@common.store_option
@click.option(
    "--to",
    "to",
    metavar="URL",
    default=None,
    help="Upload the store's runs to the tracker server at URL (token: $TRACKER_API_TOKEN).",
)
@common.project_option
@click.argument("run_ids", nargs=-1, metavar="[RUN...]")
def sync_cmd(
    store: str | None, to: str | None, project: str | None, run_ids: tuple[str, ...]
) -> None:
    """Apply every journal the store has not applied (offline runs, crashed writers).

    With --to URL: upload the runs of the store (RUN..., or every run, of --project) to
    a team server instead. Run it again after an interruption: it resumes, and sends
    nothing the server already holds.
    """
    if to is not None:
        _sync_to(store, to, project, run_ids)
        return
    if run_ids or project is not None:
        raise click.UsageError("RUN and --project select runs to upload: give --to URL too")
    st = common.open_for_writing(store)
    console = common.console()
    try:
        backlog = journal_backlog(st)
    except (TrackerError, OSError) as exc:
        # Only the report's byte counts come from it; syncing itself goes on.
        click.echo(f"warning: cannot measure the journal backlog: {common.one_line(exc)}", err=True)
        backlog = {}
    running = {row["run_id"] for row in st.runs(statuses=["running"])}
    results = sync_runs(st)
    prune = getattr(st, "prune_spool", None)  # a server's client: its spool
    if prune is not None:
        for run_id, error in results:
            if error is None:
                prune(run_id)  # kept unless the server holds every byte of it
    changed = 0
    problems = []
    for run_id, error in results:
        if error is not None:
            problems.append(f"could not sync run {run_id}: {error}")
            continue
        row = st.run(run_id)
        status = row["status"] if row else "unknown"
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
    common.report(problems)


def _sync_to(store: str | None, url: str, project: str | None, run_ids: tuple[str, ...]) -> None:
    """``tracker sync --to URL``: upload local runs to a team server (``core/upload.py``)."""
    from tracker.core.stores import store_kind
    from tracker.core.stores.http import HTTPStore
    from tracker.core.upload import upload_runs

    if store_kind(url) != "http":
        raise click.BadParameter("a tracker server's http(s)://HOST:PORT", param_hint="--to")
    if store_kind(store) == "http":
        raise click.BadParameter(
            "--store is the local store the runs come from (a directory), not a server",
            param_hint="--store",
        )
    local = common.open_readonly(store)
    remote = HTTPStore(url)
    console = common.console()
    err = common.console(stderr=True)
    progress: Any = None
    task: Any = None

    def on_start(runs: int, total: int) -> None:
        nonlocal progress, task
        if not err.terminal or total == 0:
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        progress = Progress(
            TextColumn(f"uploading {runs} run(s)"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        progress.start()
        task = progress.add_task("upload", total=total)

    def on_progress(_run_id: str, size: int) -> None:
        if progress is not None:
            progress.advance(task, size)

    try:
        results, problems = upload_runs(
            local, remote, run_ids, project, on_start=on_start, on_progress=on_progress
        )
    finally:
        if progress is not None:
            progress.stop()
    problems = list(problems)
    sent = [r for r in results if r.done and r.sent_bytes]
    held = [r for r in results if r.done and not r.sent_bytes]
    for r in results:
        if r.error is not None:
            problems.append(r.error)
        elif r.skipped is not None:
            problems.append(f"run {r.run_id}: not uploaded: {r.skipped}")
    total = sum(r.sent_bytes for r in sent)
    line = f"uploaded {len(sent)} run(s) ({total / 1e6:.1f} MB) to {remote.url}"
    if held:
        line += f"; {len(held)} already there"
    if problems:
        line += f"; {len(problems)} not uploaded"
    console.print(line)
    common.report(problems)
