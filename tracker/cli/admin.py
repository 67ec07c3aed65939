"""``tracker gc``, ``tracker doctor`` and ``tracker sync``: keeping a store healthy."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from tracker.core.cleanup import delete_runs, find_runs_to_delete, parse_age
from tracker.core.doctor import check_store
from tracker.core.errors import TrackerError
from tracker.core.replay import journal_backlog, sync_runs

from . import common

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
@common.store_option
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
            p["id"], p["name"] or "", p["project"], common.status_text(p["status"]),
            common.when(p["created_at"]), str(p["points"]), action,
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
def sync_cmd(store: str | None) -> None:
    """Apply every journal the store has not applied (offline runs, crashed writers)."""
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
