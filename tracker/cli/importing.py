"""``tracker import``: bring runs kept by other tools into the store.

    tracker import neptune ./exports/data --files-dir ./exports/files

The work is done by ``tracker.importers``; this module parses, shows progress (a bar on
a terminal only) and prints the summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.text import Text

from tracker.core.stores import open_store

from . import common
from .common import Column, Free, Layout


@click.group("import")
def import_group() -> None:
    """Import runs from another tool's export (Neptune)."""


@import_group.command("neptune")
@click.argument("export_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--files-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Where the exporter downloaded files (default: 'files' beside EXPORT_DIR).",
)
@click.option(
    "--project", "-p", default=None, help="Only runs of this Neptune project (workspace/name)."
)
@click.option(
    "--include-incomplete",
    is_flag=True,
    help="Also import runs whose export did not finish (no part_0), as far as written.",
)
@common.store_option
def neptune_cmd(
    export_dir: Path,
    files_dir: Path | None,
    project: str | None,
    include_incomplete: bool,
    store: str | None,
) -> None:
    """Import the runs the Neptune exporter wrote to EXPORT_DIR (its data path).

    Every attribute keeps its path and kind; forks stay forks; files are referenced
    where they were downloaded (size and SHA-256 recorded). Run it again after an
    interruption: it resumes, and stores nothing twice. docs/neptune.md has the mapping.
    """
    from tracker.importers.neptune import RunImport, import_export

    st = open_store(store)
    console = common.console()
    err = common.console(stderr=True)
    progress: Any = None
    tasks: dict[str, Any] = {}

    def on_scan(read: int, found: int) -> None:
        nonlocal progress
        if not err.terminal or found == 0:
            return
        if progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
                transient=True,
            )
            progress.start()
            tasks["scan"] = progress.add_task("reading the export", total=found)
        progress.update(tasks["scan"], completed=read)

    def on_start(runs: int, points: int) -> None:
        if progress is None or runs == 0:
            return
        tasks["runs"] = progress.add_task("runs", total=runs)
        tasks["points"] = progress.add_task("points", total=points)

    def on_progress(points: int) -> None:
        if progress is not None and "points" in tasks:
            progress.advance(tasks["points"], points)

    def on_run_done(_result: RunImport) -> None:
        if progress is not None and "runs" in tasks:
            progress.advance(tasks["runs"], 1)

    try:
        summary = import_export(
            st,
            export_dir,
            files_dir,
            project=project,
            include_incomplete=include_incomplete,
            on_scan=on_scan,
            on_start=on_start,
            on_progress=on_progress,
            on_run_done=on_run_done,
        )
    finally:
        if progress is not None:
            progress.stop()
    table = Layout(
        Column("run"),
        Column("neptune id", wrap=True),
        Column("project", wrap=True),
        Column("points", justify="right"),
        Column("files", justify="right"),
        Column("result"),
    )
    style = {"imported": "green", "already imported": "cyan", "skipped": "yellow"}
    for r in summary.runs:
        result: Any = Text(r.status, style=style.get(r.status, "red"))
        if r.reason:
            result = Free(f"{r.status}: {r.reason}")
        table.add_row(r.run_id or "—", r.neptune_id, r.project, str(r.points), str(r.files), result)
    if summary.runs:
        table.print(console)
    counts = {
        s: sum(1 for r in summary.runs if r.status == s)
        for s in ("imported", "already imported", "skipped", "failed")
    }
    missing = sum(len(r.missing_files) for r in summary.runs)
    console.print(
        f"runs: {counts['imported']} imported, {counts['already imported']} already "
        f"there, {counts['skipped']} skipped, {counts['failed']} failed; points: "
        f"{summary.points}; files: {summary.files} referenced, {missing} missing; "
        f"exporter errors: {len(summary.export_errors)}"
    )
    for line in summary.export_errors:
        console.print(f"exporter error: {line}")
    for line in summary.problems:
        click.echo(f"warning: {common.one_line(line)}", err=True)
    common.report([f"run {r.neptune_id}: {r.reason}" for r in summary.runs if r.status == "failed"])
