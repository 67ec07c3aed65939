"""Opening a run on the writing process: new, resumed or forked, in any of the four modes."""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from . import lifecycle, ops
from .errors import RunExistsError, RunNotFoundError
from .paths import as_mapping, check_path, flatten
from .replay import recover_run
from .run import _FIELD, _FLOAT, _STR, NullWriter, Run
from .stores import Store, open_store, resolve_store_path
from .values import FILE, check_text, field_value, is_config_path, plain_value
from .writer import Writer

MODES = ("async", "sync", "offline", "disabled")
RESUME = ("allow", "must", "never")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_run_id() -> str:
    """A short random id: 10 characters of lowercase base32 (50 bits)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(secrets.choice(alphabet) for _ in range(10))


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ValueError(
            f"run_id {run_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return run_id


def open_run(
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
    flush_interval: float = 0.5,
    close_timeout: float | None = None,
    mask: Any = None,
    extra_fields: Mapping[str, Any] | None = None,
    run_class: type[Run] = Run,
) -> Run:
    """Open the writing ``Run`` of this process (the public face is ``tracker.init_run``)."""
    project = project or os.environ.get("TRACKER_PROJECT") or "default"
    # Every argument is checked before anything exists: a bad one leaves no run behind.
    start = check_start(
        project=project,
        name=name,
        run_id=run_id,
        tags=tags,
        config=config,
        fork_from=fork_from,
        resume=resume,
        resume_from_step=resume_from_step,
        mode=mode,
        mask=mask,
        extra_fields=extra_fields,
    )
    if mode == "disabled":
        run = Run(run_id=run_id or new_run_id(), project=project, name=name, writer=NullWriter())
        _record_start(run, start)
        return run

    if run_id is not None:
        same = lifecycle.find_open(resolve_store_path(store), run_id)
        if same is not None:
            # One writer per run, also within a process: a second init_run of a run this
            # process has open (a re-created callback, an unpickled logger) gets that run.
            if resume == "never":
                raise RunExistsError(f"run {run_id!r} is open in this process and resume='never'")
            if same.project != project:
                raise RunExistsError(
                    f"run {run_id!r} belongs to project {same.project!r}, not {project!r}"
                )
            _record_start(same, start)
            return same

    st = open_store(store)
    check_project = getattr(st, "check_project", None)
    if check_project is not None:
        # A server store refuses, before anything exists, a project its token cannot use.
        check_project(project, write=mode != "offline")
    existing = st.run(run_id) if run_id is not None else None
    if run_id is not None and existing is None and st.segments(run_id):
        recover_run(st, run_id)  # an offline or crashed run the store has not seen yet
        existing = st.run(run_id)
    if existing is not None and resume == "never":
        raise RunExistsError(f"run {run_id!r} already exists in {st.root} and resume='never'")
    if existing is None and resume == "must":
        raise RunNotFoundError(f"run {run_id!r} does not exist in {st.root} and resume='must'")
    if existing is not None and existing["project"] != project:
        raise RunExistsError(
            f"run {run_id!r} belongs to project {existing['project']!r}, not {project!r}"
        )

    parent = None
    fork_step = None
    if fork_from is not None and existing is None:
        parent_id, fork_step = fork_from[0], int(fork_from[1])
        parent = st.run(check_run_id(parent_id))
        if parent is None:
            raise RunNotFoundError(f"fork_from: run {parent_id!r} does not exist in {st.root}")
        if parent["status"] == "running":
            recover_run(st, parent_id)

    run_id = run_id or new_run_id()
    if existing is not None and existing["status"] == "running":
        recover_run(st, run_id)  # a crashed earlier session: apply its journal first
    next_step, series_next, series_last, kinds = _state(
        st, run_id, parent["run_id"] if parent else None, fork_step, resume_from_step
    )

    writer = Writer(
        st,
        run_id,
        apply_to_store=mode != "offline",
        threaded=mode != "sync",
        flush_interval=flush_interval,
    )
    writer.series_last.update(series_last)
    writer.run_info.update(
        project=project, name=name if name is not None else (existing or {}).get("name")
    )
    run = run_class(
        run_id=run_id,
        project=project,
        name=name if name is not None else (existing or {}).get("name"),
        writer=writer,
        sync=mode == "sync",
        next_step=next_step,
        series_next=series_next,
        kinds=kinds,
        close_timeout=close_timeout,
    )
    run._store_root = st.root
    meta = {
        "project": project,
        "name": name,
        "ts": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "parent_id": parent["run_id"] if parent else None,
        "fork_step": fork_step,
        "rewind_step": resume_from_step,
    }
    run._enqueue(ops.create(meta))
    _record_start(run, start)
    # The run is listed in the store when init_run returns, not a flush interval later.
    run.flush()
    return run


class Start(NamedTuple):
    """What a new run records first, checked: its tags and its single values."""

    tags: list[str]
    fields: dict[str, Any]


def check_start(
    *,
    project: str,
    name: str | None = None,
    run_id: str | None = None,
    tags: Iterable[str] | str = (),
    config: Mapping[str, Any] | None = None,
    fork_from: tuple[str, int] | None = None,
    resume: str = "allow",
    resume_from_step: int | None = None,
    mode: str = "async",
    mask: Any = None,
    extra_fields: Mapping[str, Any] | None = None,
) -> Start:
    """Check ``init_run``'s arguments and turn tags and config into what will be stored.

    Raises TypeError or ValueError naming the argument; nothing is created before this
    has passed, so a bad argument never leaves a run behind.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: use one of {', '.join(MODES)}")
    if resume not in RESUME:
        raise ValueError(f"resume={resume!r}: use one of {', '.join(RESUME)}")
    _check_text("project", project, 256, required=True)
    if name is not None:
        _check_text("name", name, 1024)
    if run_id is not None:
        check_run_id(run_id)
    if fork_from is not None:
        if (
            not isinstance(fork_from, tuple | list)
            or len(fork_from) != 2
            or not isinstance(fork_from[1], int)
            or isinstance(fork_from[1], bool)
            or not 0 <= fork_from[1] < 2**63
        ):
            raise ValueError(f"fork_from={fork_from!r}: expected ('RUN-ID', step) with step >= 0")
        check_run_id(fork_from[0])
    if resume_from_step is not None:
        if (
            not isinstance(resume_from_step, int)
            or isinstance(resume_from_step, bool)
            or not 0 <= resume_from_step < 2**63
        ):
            raise ValueError(
                f"resume_from_step={resume_from_step!r}: expected the step (an int >= 0) "
                "of the checkpoint training resumes from"
            )
        if resume == "never":
            raise ValueError("resume_from_step resumes a run; it cannot go with resume='never'")
    tag_list = check_tags(tags)
    fields: dict[str, Any] = {}
    if config is not None:
        # A Namespace or a dataclass instance counts as a dict (the forms other trackers
        # take), at the top and nested alike.
        if as_mapping(config) is None:
            raise TypeError(
                f"config must be a dict (nested dicts allowed), got {type(config).__name__}"
            )
        # The config rule (values.plain_value): lists stay lists, None stays None, and
        # what has no kind of its own becomes stable text; nothing here is refused.
        flat = {k: plain_value(k, v, lenient=True) for k, v in flatten(config, "config").items()}
        fields.update(mask(flat) if mask is not None else flat)
    if extra_fields:
        fields.update(extra_fields)
    for path, value in fields.items():
        check_path(path)
        # Raises for a value the store cannot hold (a bad path, or outside config/ a
        # value with no kind): here, before anything exists.
        field_value(path, value, lenient=is_config_path(path))
    return Start(tag_list, fields)


def check_tags(tags: Iterable[str] | str) -> list[str]:
    """Tags as a list: one str is one tag; each non-empty, at most 256 characters."""
    if isinstance(tags, str):
        tags = [tags]  # tags="baseline" means one tag, not eight letters
    elif not isinstance(tags, Iterable):
        raise TypeError(f"tags must be a list of str, got {type(tags).__name__}")
    out = []
    for tag in tags:
        _check_text("tag", tag, 256, required=True)
        out.append(tag)
    return out


def _check_text(what: str, value: Any, limit: int, *, required: bool = False) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}: {value!r}")
    if required and not value:
        raise ValueError(f"{what} is empty")
    if len(value) > limit:
        raise ValueError(
            f"{what} {value[:40]!r}... is {len(value)} characters; the limit is {limit}"
        )
    check_text(what, value)


def _record_start(run: Run, start: Start) -> None:
    if start.tags:
        run.add_tags(*start.tags)
    if start.fields:
        run._assign_many(start.fields)


def _state(
    st: Store,
    run_id: str,
    parent_id: str | None,
    fork_step: int | None,
    rewind: int | None = None,
) -> tuple[int, dict[str, int], dict[str, int], dict[str, str]]:
    """What a resumed or forked run's counters, last steps and path kinds start from.

    After a rewind to step ``rewind`` the run continues at ``rewind + 1``: what earlier
    attempts logged past it is superseded, so it is neither the series' last step nor
    where their counters go on from. System metrics count samples and keep counting.
    """
    kinds: dict[str, str] = {}
    series_next: dict[str, int] = {}
    series_last: dict[str, int] = {}
    next_step = 0
    sources = [(run_id, rewind)]
    if parent_id is not None:
        assert fork_step is not None  # a fork has both: open_run sets them together
        sources.append((parent_id, fork_step if rewind is None else min(fork_step, rewind)))
    for rid, limit in sources:
        for series in st.series_list(rid, rank=0):
            path, kind, last = series.path, series.kind, series.last_step
            kinds.setdefault(path, _FLOAT if kind == "float" else _STR)
            if path.startswith("sys/"):
                series_next["sys/"] = max(series_next.get("sys/", 0), last + 1)
                continue
            if limit is not None:
                last = min(last, limit)
            series_next[path] = max(series_next.get(path, 0), last + 1)
            series_last[path] = max(series_last.get(path, last), last)
            next_step = max(next_step, last + 1)
        if rid == run_id:
            for path, kind, _value in st.fields(rid):
                kinds.setdefault(path, FILE if kind == "file" else _FIELD)
    if fork_step is not None:
        next_step = max(next_step, fork_step + 1)
    if rewind is not None:
        next_step = rewind + 1
    return next_step, series_next, series_last, kinds
