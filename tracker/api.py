"""The public face: ``init_run``, ``read_run``, ``list_runs``.

``init_run`` asks ``rank_utils`` which process this is; a single process opens its run
directly (``core.session``), a rank of a distributed job goes through the coordinator.
Then, on every rank, it records the environment once and starts system metrics.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from .core.reader import list_runs, read_run
from .core.run import Run

__all__ = ["init_run", "init_local_run", "read_run", "list_runs"]

DEFAULT_SYSTEM_METRICS_INTERVAL_S = 10.0


def init_run(
    project: str | None = None,
    *,
    name: str | None = None,
    run_id: str | None = None,
    tags: Iterable[str] = (),
    config: Mapping[str, Any] | None = None,
    fork_from: tuple[str, int] | None = None,
    resume: str = "allow",
    resume_from_step: int | None = None,
    store: str | os.PathLike[str] | None = None,
    mode: str = "async",
    system_metrics: bool | float = True,
    quiet: bool | None = None,
) -> Run:
    """Start (or resume) a run and return it. Call it on every rank of a job.

    ``project`` defaults to $TRACKER_PROJECT, else "default"; ``store`` to
    $TRACKER_STORE, else ``./.tracker``. ``mode`` is "async" (a background writer; the
    default), "sync" (each call durable on return), "offline" (journal only, applied
    later by ``tracker sync``) or "disabled" (every call a no-op). ``system_metrics``
    samples CPU, memory and this rank's GPU every 10 s (a number sets the interval;
    $TRACKER_SYSTEM_METRICS_INTERVAL too). Secrets are masked on every path into the
    store: values under secret-looking keys, and credentials inside any text.

    On the writing process it prints one line on stderr: the run id, the store, and the
    command to look at the run (``quiet=True`` or ``$TRACKER_QUIET=1`` silences it).

    ``resume_from_step=s`` resumes from a checkpoint taken at step ``s``: what earlier
    attempts of the run logged after ``s`` is superseded (kept, hidden from default
    reads; ``fetch_values(include_superseded=True)`` shows it), and the step counter
    continues at ``s + 1``. A step may repeat (both points are kept); a step lower than
    a series' last is stored too, with one warning per series.

    >>> import tracker
    >>> with tracker.init_run(project="mnist", config={"lr": 1e-3}) as run:
    ...     for step in range(100):
    ...         run.log({"train/loss": 1.0 / (step + 1)})
    """
    from .rank_utils import detect_rank

    return _open(
        detect_rank(),
        project,
        name=name,
        run_id=run_id,
        tags=tags,
        config=config,
        fork_from=fork_from,
        resume=resume,
        resume_from_step=resume_from_step,
        store=store,
        mode=mode,
        system_metrics=system_metrics,
        quiet=quiet,
    )


def init_local_run(project: str | None = None, **kwargs: Any) -> Run:
    """Like ``init_run``, but this process writes the run alone whatever the launcher says.

    For frameworks that reduce metrics across workers themselves and pick one writer
    (the Keras multi-worker chief, XGBoost's rank 0): the other workers open no run and
    nothing is gathered. Takes the same keyword arguments as ``init_run``.
    """
    import inspect

    from .rank_utils import detect_rank
    from .rank_utils.launchers import RankInfo

    inspect.signature(init_run).bind(project, **kwargs)  # the same arguments, or TypeError
    alone = RankInfo(0, detect_rank().local_rank, 1, 1, 0, None, "single")
    return _open(alone, project, **kwargs)


def _open(
    info: Any,
    project: str | None,
    *,
    mode: str = "async",
    system_metrics: bool | float = True,
    quiet: bool | None = None,
    **run_args: Any,
) -> Run:
    """Open this process's run as ``info`` places it; ``run_args`` are init_run's others."""
    from .core.provenance import capture_environment
    from .core.secrets import mask_secrets
    from .core.session import check_start, check_tags

    project = project or os.environ.get("TRACKER_PROJECT") or "default"
    # Checked here, before any rank agrees on an id or opens anything, so that a bad
    # argument fails the same way on every rank and leaves nothing behind.
    checked = ("name", "run_id", "tags", "config", "fork_from", "resume", "resume_from_step")
    check_start(project=project, mode=mode, **{k: v for k, v in run_args.items() if k in checked})
    if not isinstance(system_metrics, bool | int | float) or (
        not isinstance(system_metrics, bool) and not system_metrics > 0
    ):
        raise ValueError(
            f"system_metrics={system_metrics!r}: use True, False or an interval in seconds"
        )
    run_args["tags"] = check_tags(run_args.get("tags", ()))
    created = _missing_directories(run_args.get("store"))
    if mode != "disabled":
        environment = {f"sys/{k}": v for k, v in capture_environment().items()}
        run_args.update(mask=mask_secrets, extra_fields=environment)
    if info.world_size > 1:
        from .rank_utils.coordinator import open_distributed_run

        run = open_distributed_run(info, project=project, mode=mode, **run_args)
    else:
        from .core.session import open_run

        run = open_run(project, mode=mode, **run_args)
    if system_metrics and mode != "disabled":
        _start_system_metrics(run, system_metrics, info.local_rank)
    if quiet is None:
        quiet = os.environ.get("TRACKER_QUIET", "").strip().lower() in ("1", "true", "yes")
    if not quiet and mode != "disabled" and run.is_writer:
        _say_where(run, mode, created)
    return run


def _missing_directories(store: Any) -> list[str]:
    """The directories opening ``store`` will create (a store made now), outermost first."""
    from .core.stores import store_kind
    from .core.stores.base import resolve_store_path

    try:
        if store_kind(store) != "directory":
            return []  # a server or a database: nothing is created on this machine
        root = resolve_store_path(store)
    except Exception:  # noqa: BLE001 - a bad store= fails with its own error when opened
        return []
    if (root / "store.db").exists():
        return []
    missing = []
    path = root
    while not path.exists() and path != path.parent:
        missing.append(str(path))
        path = path.parent
    return missing[::-1] or [str(root)]


_announced: set[tuple[str, str]] = set()  # (store, run id): one line per run and process


def _say_where(run: Run, mode: str, created: list[str]) -> None:
    """One line on stderr: where the run went and how to look at it.

    A store made by this call is said to be new, with the directories made for it, so
    that a mistyped ``store=`` shows at once rather than as runs missing elsewhere."""
    import shlex
    import sys

    root = getattr(run, "_store_root", None)
    if root is None or (str(root), run.id) in _announced:
        return
    _announced.add((str(root), run.id))
    store = shlex.quote(str(root))
    if mode == "offline":
        what = f"journal only (offline); `tracker sync --store {store}` applies it"
    else:
        what = f"look at it with `tracker show {run.id} --store {store}`"
    where = str(root)
    if created:
        made = [d for d in created if d != str(root)]
        where = f"a new store {root} (created now" + (
            f", with the missing directories {', '.join(made)})" if made else ")"
        )
    sys.stderr.write(
        f"tracker: run {run.id} (project {run.project}) in {where}: {what} "
        "(TRACKER_QUIET=1 or init_run(quiet=True) silences this)\n"
    )


def _start_system_metrics(run: Run, setting: bool | float, local_rank: int) -> None:
    from .core.system_metrics import SystemMetricsSampler
    from .rank_utils.devices import gpu_index_for

    if setting is True:
        interval = float(
            os.environ.get("TRACKER_SYSTEM_METRICS_INTERVAL", DEFAULT_SYSTEM_METRICS_INTERVAL_S)
        )
    else:
        interval = float(setting)
    gpu = gpu_index_for(local_rank, os.environ.get("CUDA_VISIBLE_DEVICES"))
    sampler = SystemMetricsSampler(run._log_system, interval=interval, gpu_index=gpu)
    sampler.start()
    run._on_close.append(sampler.stop)
