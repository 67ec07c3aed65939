"""The public face: ``init_run``, ``read_run``, ``list_runs``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from .core.reader import list_runs, read_run
from .core.run import Run
from .core.session import open_run

__all__ = ["init_run", "read_run", "list_runs"]


def init_run(
    project: str | None = None,
    *,
    name: str | None = None,
    run_id: str | None = None,
    tags: Iterable[str] = (),
    config: Mapping[str, Any] | None = None,
    fork_from: tuple[str, int] | None = None,
    resume: str = "allow",
    store: str | os.PathLike[str] | None = None,
    mode: str = "async",
    system_metrics: bool = True,
) -> Run:
    """Start (or resume) a run and return it. Call it on every rank of a job.

    ``project`` defaults to $TRACKER_PROJECT, else "default"; ``store`` to
    $TRACKER_STORE, else ``./.tracker``. ``mode`` is "async" (a background writer; the
    default), "sync" (each call durable on return), "offline" (journal only, applied
    later by ``tracker sync``) or "disabled" (every call a no-op).

    >>> import tracker
    >>> with tracker.init_run(project="mnist", config={"lr": 1e-3}) as run:
    ...     for step in range(100):
    ...         run.log({"train/loss": 1.0 / (step + 1)})
    """
    return open_run(
        project,
        name=name,
        run_id=run_id,
        tags=tags,
        config=config,
        fork_from=fork_from,
        resume=resume,
        store=store,
        mode=mode,
    )
