"""The ``tracker`` command: look at runs, export them, and keep a store healthy.

    tracker ls --project gpt-small --status finished
    tracker show latest --path 'train/*'
    tracker compare k3v9q2m1xa ridge-sweep/trial-3 --json
    tracker events latest --level warning
    tracker export k3v9q2m1xa --format parquet --output run.parquet
    tracker gc --status failed,crashed --older-than 30d --dry-run
    tracker doctor
    tracker sync
    tracker server --store /data/tracker --host 0.0.0.0
    tracker token create --project gpt-small --scope write
    tracker ui --store /data/tracker

Every command takes ``--store PATH`` (default: $TRACKER_STORE, else ./.tracker). A run
is named by ``latest``, its id, a unique id prefix, or its name (``NAME`` or
``PROJECT/NAME``) where only one run has it. ls, show and compare print tables fitted to
the terminal (nothing is cut: docs/cli.md has the rule), or whole when piped, or with
``--json`` one strict JSON document.

These modules parse and print; the work is done by the read API and the core
(``lookup``, ``export``, ``cleanup``, ``doctor``, ``replay``): ``runs.py`` holds ls,
show and compare, ``export.py`` export, ``admin.py`` gc, doctor and sync, ``common.py``
what they share (the table layout among it).

No command prints a traceback for one bad run: a run that cannot be read, recovered or
synced is reported in one line (its id and the error) and the command goes on with the
others, exiting 1 at the end; tracker's own errors are one line and exit status 1.
The looking commands (ls, show, compare, export, doctor, gc --dry-run) open the store
read-only, so that they work on a store that cannot be written.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from typing import Any, TextIO

import click

import tracker
from tracker.core.errors import TrackerError

from . import admin, events, export, importing, runs, server, ui
from .common import one_line, sparkline

__all__ = ["main", "sparkline"]


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
    text = one_line(message).removeprefix("tracker: ")
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
            raise click.ClickException(one_line(exc)) from None
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
            raise click.ClickException(one_line(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(tracker.__version__, "--version", "-V", prog_name="tracker")
def main() -> None:
    """Experiment tracking for distributed training: look at runs, keep the store healthy."""


for _command in (
    runs.ls_cmd,
    runs.show_cmd,
    runs.compare_cmd,
    events.events_cmd,
    export.export_cmd,
    admin.gc_cmd,
    admin.doctor_cmd,
    admin.sync_cmd,
    server.server_cmd,
    server.token_group,
    ui.ui_cmd,
    importing.import_group,
):
    main.add_command(_command)
