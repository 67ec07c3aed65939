"""``tracker export``: runs as CSV, JSON or Parquet (the work is ``core.export``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import tracker
from tracker.core.errors import TrackerError
from tracker.core.export import FORMATS, WRITERS, ExportSummary
from tracker.core.export import Progress as ProgressFn
from tracker.core.lookup import resolve_run_id

from . import common


@click.command("export")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
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
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="File to write, - for stdout (default: stdout; for parquet RUN.parquet).",
)
@common.project_option
@common.store_option
def export_cmd(
    runs: tuple[str, ...],
    fmt: str | None,
    output: Path | None,
    project: str | None,
    store: str | None,
) -> None:
    """Export runs as one CSV, JSON or Parquet output: every series point as a row
    (run, path, rank, step, value, timestamp), plus each run's single values (rows with
    no rank, step or timestamp). Several runs give the same format as one, with more
    rows. Each RUN is what `tracker show` takes: an id, a unique id prefix, `latest` or
    a run name. docs/export.md describes the formats."""
    to_stdout = output is not None and str(output) == "-"
    if fmt is None:
        suffix = output.suffix.lstrip(".").lower() if output and not to_stdout else ""
        fmt = suffix if suffix in FORMATS else "csv"
    st = common.open_readonly(store)
    # Every run is found before anything is written: a typo costs no half export.
    run_ids = list(dict.fromkeys(resolve_run_id(st, run, project) for run in runs))
    readers = [tracker.read_run(rid, project=project, store=store) for rid in run_ids]
    if fmt == "parquet" and output is None:
        if len(run_ids) > 1:
            raise click.UsageError("parquet export of several runs: name the file with -o FILE")
        output = Path(f"{run_ids[0]}.parquet")
    elif output is None:
        to_stdout = True
    if to_stdout and fmt == "parquet" and _terminal(sys.stdout):
        raise click.UsageError(
            "parquet is binary: send stdout to a file or a pipe, or name a file with -o FILE"
        )
    err = common.console(stderr=True)
    # Progress lines on a terminal that also shows the export would be drawn into it.
    shown = _terminal(sys.stderr) and not (to_stdout and _terminal(sys.stdout))
    with _progress(err if shown else None) as progress:
        if to_stdout:
            target: Any = sys.stdout.buffer if fmt == "parquet" else sys.stdout
            summary = WRITERS[fmt](target, readers, progress)
            target.flush()  # a closed pipe shows here, inside the command's error handling
        else:
            assert output is not None
            with _open_output(output, binary=fmt == "parquet") as f:
                summary = WRITERS[fmt](f, readers, progress)
    where = "stdout" if to_stdout else str(output)
    err.print(_summary_line(summary, where), markup=False)


def _summary_line(summary: ExportSummary, where: str) -> str:
    if len(summary.runs) == 1:
        what = f"run {summary.runs[0]}"
    else:
        ids = ", ".join(summary.runs[:5]) + (", ..." if len(summary.runs) > 5 else "")
        what = f"{len(summary.runs)} runs ({ids})"
    return (
        f"exported {what}: {summary.points} points in {summary.series} series and "
        f"{summary.fields} fields to {where}"
    )


def _terminal(stream: Any) -> bool:
    # The stream itself, not rich's guess: FORCE_COLOR (set in many CI jobs) would have
    # progress bars redrawn into a log.
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


@contextmanager
def _progress(console: Console | None) -> Iterator[ProgressFn | None]:
    """A progress line per run on ``console`` (stderr, where it is a terminal; None in a
    pipe or a log, where the summary line at the end is all that is printed)."""
    if console is None:
        yield None
        return
    bar = Progress(
        TextColumn("run {task.fields[run]}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} points"),
        TimeElapsedColumn(),
        console=console,
        # The export itself goes to sys.stdout, maybe as bytes: rich must not wrap it.
        redirect_stdout=False,
        redirect_stderr=False,
    )
    tasks: dict[str, Any] = {}

    def update(run_id: str, written: int, total: int) -> None:
        if run_id not in tasks:
            tasks[run_id] = bar.add_task("", total=total, run=run_id)
        bar.update(tasks[run_id], completed=written, total=total)

    with bar:
        yield update


@contextmanager
def _open_output(path: Path, binary: bool) -> Iterator[IO[Any]]:
    """The output file, written under a temporary name and renamed when complete: an
    export that fails halfway (a damaged chunk) leaves no file, and no earlier file of
    that name is lost. A device or a FIFO (``-o /dev/null``) is written in place."""
    mode = "wb" if binary else "w"
    text_args: dict[str, Any] = {} if binary else {"newline": "", "encoding": "utf-8"}
    if path.exists() and not path.is_file():
        with open(path, mode, **text_args) as f:
            yield f
        return
    real = Path(os.path.realpath(path))  # a symlink's target is replaced, not the link
    partial = real.with_name(f".{real.name}.{os.getpid()}.partial")
    try:
        try:
            f = open(partial, mode, **text_args)
        except OSError as exc:  # name the file asked for, not the temporary one
            raise TrackerError(f"cannot write {path}: {exc.strerror}") from None
        with f:
            yield f
        if real.exists():  # a file written over keeps its permissions
            os.chmod(partial, real.stat().st_mode & 0o7777)
        os.replace(partial, real)
    finally:
        partial.unlink(missing_ok=True)
