"""``tracker events RUN``: what watching a run found, and the alerts it raised."""

from __future__ import annotations

import click

import tracker
from tracker.core.events import KINDS, LEVELS
from tracker.core.lookup import resolve_run_id

from . import common
from .common import Column, Free, Layout


@click.command("events")
@click.argument("run")
@common.project_option
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(KINDS),
    help="Only events of this kind (repeatable).",
)
@click.option(
    "--level",
    type=click.Choice(LEVELS),
    help="Only events at this level or above (warning: warnings and errors).",
)
@common.json_option
@common.store_option
def events_cmd(
    run: str,
    project: str | None,
    kinds: tuple[str, ...],
    level: str | None,
    as_json: bool,
    store: str | None,
) -> None:
    """List a run's events, oldest first: non-finite values, spikes and thresholds,
    silent ranks and runs, and the run's own alerts. RUN is named as for `show`."""
    st = common.open_readonly(store)
    run_id = resolve_run_id(st, run, project)
    r = tracker.read_run(run_id, project=project, store=store)
    found = r.events(kind=kinds or None, level=level)
    if as_json:
        common.print_json({"run": run_id, "events": found})
        return
    console = common.console()
    if not found:
        console.print(f"run {run_id} has no events")
        return
    table = Layout(
        Column("time"),
        Column("level"),
        Column("kind"),
        Column("rank", justify="right"),
        Column("step", justify="right"),
        Column("path", optional=True),
        Column("message", wrap=True),
        title=f"events of {run_id}",
    )
    for e in found:
        table.add_row(
            common.when(e.get("time")),
            str(e.get("level")),
            str(e.get("kind")),
            common.MISSING if e.get("rank") is None else str(e["rank"]),
            common.MISSING if e.get("step") is None else str(e["step"]),
            e.get("path") or common.MISSING,
            Free(str(e.get("message") or "")),
        )
    left_out = table.print(console)
    common.say_left_out(console, left_out, "use --json to see every field")
