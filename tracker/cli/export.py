"""``tracker export``: a run as CSV, JSON or Parquet (the work is ``core.export``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

import tracker
from tracker.core.export import FORMATS, collect, write_csv, write_json, write_parquet
from tracker.core.lookup import resolve_run_id

from . import common


@click.command("export")
@click.argument("run")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(FORMATS),
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
@common.project_option
@common.store_option
def export_cmd(
    run: str, fmt: str | None, output: Path | None, project: str | None, store: str | None
) -> None:
    """Export a run: every series point as a row (path, rank, step, value, timestamp),
    plus the run's single values (rows with no rank, step or timestamp)."""
    if fmt is None:
        suffix = output.suffix.lstrip(".").lower() if output else ""
        fmt = suffix if suffix in FORMATS else "csv"
    st = common.open_readonly(store)
    run_id = resolve_run_id(st, run, project)
    data = collect(tracker.read_run(run_id, project=project, store=st.root))
    write_text = write_csv if fmt == "csv" else write_json
    if fmt == "parquet":
        output = output or Path(f"{run_id}.parquet")
        write_parquet(output, data)
    elif output is None:
        write_text(sys.stdout, data)
        return
    else:
        with open(output, "w", newline="", encoding="utf-8") as f:
            write_text(f, data)
    common.console(stderr=True).print(
        f"exported run {run_id}: {data.points} points in {len(data.series)} series and "
        f"{len(data.fields)} fields to {output}"
    )
