"""Optuna: one tracker run per trial, grouped under its study.

Importing this module imports Optuna; ``import tracker`` never imports it.

>>> from tracker.integrations.optuna import TrackerCallback
>>> cb = TrackerCallback(project="sweeps")
>>> study.optimize(objective, n_trials=50, callbacks=[cb])
>>> tracker.list_runs(project="sweeps", tags=[cb.study_tag(study)])
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

try:
    import optuna
    from optuna.trial import FrozenTrial, TrialState
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tracker.integrations.optuna needs Optuna: pip install 'tracker-dl[optuna]'"
    ) from exc

import tracker
from tracker.integrations._common import (
    CONFIG,
    clean_params,
    framework_versions,
    store_of,
    take_run_or_project,
)

__all__ = ["TrackerCallback"]

_F = TypeVar("_F", bound=Callable[..., Any])
_STATES = {TrialState.COMPLETE: "finished", TrialState.PRUNED: "finished"}
STUDY_TAG = "optuna-study"  # the study's record
STUDY_RUN_FIELD = "lineage/study_run"  # in each trial run: the id of its study's record

# Threads of one process share this lock per study record; processes also take an flock
# on a file named after the record in the temporary directory (_record_lock).
_record_locks: dict[str, threading.Lock] = {}
_record_locks_guard = threading.Lock()


class TrackerCallback:
    """Record every trial of an Optuna study as a tracker run.

    Each trial's run holds its params (``config/<param>``), the Optuna version
    (``config/framework/optuna_version``), its value or values
    (``trial/value``, ``trial/values/<metric>``), state (``trial/state``: complete, pruned,
    fail), duration and the values reported with ``trial.report`` as the series
    ``trial/intermediate`` at their steps. Pruned trials are tagged ``pruned``; failed
    trials close as ``failed``. Every trial run carries the tag ``study:<name>`` and the
    config fields ``sweep/study`` and ``sweep/trial``, so
    ``tracker.list_runs(tags=["study:NAME"])`` or
    ``tracker.list_runs(config={"sweep": {"study": "NAME"}})`` finds them.

    The study itself has one record holding its direction(s) and best trial
    (``study/...``), rewritten after every trial; each trial run names it in
    ``lineage/study_run``. The first argument is a project name, and the record is a run of
    its own (tag ``optuna-study``, id from :meth:`study_run_id`), or an open ``Run``, which
    then is the record (and is left open: it is yours); its project and store take the
    trial runs. ``project=`` and ``run=`` say the same by keyword, and other keyword
    arguments go to ``tracker.init_run`` for every trial run.

    Inside the objective, :meth:`run_for` gives the trial's own run for per-epoch curves;
    decorate the objective with :meth:`track` so that a trial whose exception Optuna
    re-raises still closes its run as failed. Safe with ``n_jobs`` threads and with
    several processes sharing one Optuna storage and one tracker store.

    >>> cb = TrackerCallback(project="sweeps", store="runs/")
    >>> @cb.track
    ... def objective(trial):
    ...     run = cb.run_for(trial)
    ...     for epoch in range(10):
    ...         run.log({"val/loss": train_one_epoch(trial)}, step=epoch)
    ...     return evaluate()
    >>> study.optimize(objective, n_trials=20, n_jobs=4, callbacks=[cb])
    >>> with tracker.init_run(project="sweeps") as sweep:  # doctest: +SKIP
    ...     study.optimize(objective, n_trials=20, callbacks=[TrackerCallback(sweep)])
    """

    def __init__(
        self,
        run_or_project: tracker.Run | str | None = None,
        /,
        *,
        project: str | None = None,
        run: tracker.Run | None = None,
        **init_run_kwargs: Any,
    ) -> None:
        for name in ("run_id", "resume", "config", "fork_from"):
            if name in init_run_kwargs:
                raise ValueError(f"{name}= is chosen per trial by TrackerCallback")
        # A given run is the study's record; the init_run arguments are the trials'.
        given, project = take_run_or_project(
            run_or_project,
            run=run,
            project=project,
            init_kwargs=init_run_kwargs,
            init_kwargs_with_run=True,
        )
        if given is not None:
            project = given.project
            if init_run_kwargs.get("store") is None and store_of(given) is not None:
                init_run_kwargs["store"] = store_of(given)
        self._record = given
        self._project = project
        tags = init_run_kwargs.pop("tags", ())
        self._tags = [tags] if isinstance(tags, str) else list(tags)
        self._init_kwargs = init_run_kwargs
        self._runs: dict[tuple[str, int], tracker.Run] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Frameworks copy or pickle callbacks (spawned workers, deep copies); a lock
        # cannot travel, and a fresh one is what the copy needs.
        if self._record is not None:
            raise TypeError(
                "a TrackerCallback holding an open run cannot be sent to other processes; "
                "construct it with a project name there"
            )
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- names ----------------------------------------------------------------------------

    @staticmethod
    def study_run_id(study: optuna.Study) -> str:
        """The run id of the study's own record; trial runs add ``-t<number>``."""
        name = study.study_name
        digest = hashlib.sha1(f"{name}\0{study._study_id}".encode()).hexdigest()[:10]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:60]
        return f"optuna-{slug}-{digest}" if slug else f"optuna-{digest}"

    def record_run_id(self, study: optuna.Study) -> str:
        """The id of the run holding the study's record: the given run, or
        :meth:`study_run_id`."""
        return self._record.id if self._record is not None else self.study_run_id(study)

    @staticmethod
    def study_tag(study: optuna.Study) -> str:
        """The tag every trial run of ``study`` carries."""
        return f"study:{study.study_name}"[:256]

    # -- inside the objective -------------------------------------------------------------

    def run_for(self, trial: optuna.Trial) -> tracker.Run:
        """The run of a running trial, opened on first use; log per-epoch curves to it."""
        return self._open(trial.study, trial.number, trial.params)

    def track(self, objective: _F) -> _F:
        """Decorate an objective so that a trial that raises closes its run as failed."""

        @functools.wraps(objective)
        def wrapper(trial: optuna.Trial, *args: Any, **kwargs: Any) -> Any:
            try:
                return objective(trial, *args, **kwargs)
            except optuna.TrialPruned:
                raise
            except BaseException as exc:
                # Optuna calls callbacks only for exceptions it catches (``catch=``); close
                # here for the rest. If the callback does run, it reopens and completes it.
                run = self._pop(trial.study, trial.number)
                if run is not None:
                    run["trial/state"] = "fail"
                    run.close("failed", error=f"{type(exc).__name__}: {exc}")
                raise

        return wrapper  # type: ignore[return-value]

    # -- after each trial -----------------------------------------------------------------

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run = self._pop(study, trial.number)
        if run is None:
            run = self._open(study, trial.number, trial.params)
            self._pop(study, trial.number)
        run[CONFIG] = clean_params(trial.params)
        state = trial.state.name.lower()
        run["trial/state"] = state
        run["trial/number"] = trial.number
        if trial.values is not None:
            if len(trial.values) == 1:
                run["trial/value"] = float(trial.values[0])
            else:
                names = _metric_names(study)
                for i, value in enumerate(trial.values):
                    run[f"trial/values/{names[i]}"] = float(value)
        if trial.datetime_start is not None:
            run["trial/start"] = trial.datetime_start
        if trial.duration is not None:
            run["trial/duration_s"] = trial.duration.total_seconds()
        steps = sorted(trial.intermediate_values)
        if steps:
            run["trial/intermediate"].extend(
                [float(trial.intermediate_values[s]) for s in steps], steps=steps
            )
        if trial.state == TrialState.PRUNED:
            run.add_tags("pruned")
        run.close(_STATES.get(trial.state, "failed"))
        self._update_study_record(study)

    # -- internals ------------------------------------------------------------------------

    def _open(self, study: optuna.Study, number: int, params: dict[str, Any]) -> tracker.Run:
        key = (study.study_name, number)
        with self._lock:
            run = self._runs.get(key)
            if run is None:
                config = clean_params(params)
                config["sweep"] = {"study": study.study_name, "trial": number}
                config["framework"] = framework_versions("optuna")
                run = tracker.init_run(
                    self._project,
                    run_id=f"{self.study_run_id(study)}-t{number}",
                    name=f"{study.study_name}/trial-{number}",
                    tags=[self.study_tag(study), *self._tags],
                    config=config,
                    resume="allow",
                    **self._init_kwargs,
                )
                if run.is_writer:
                    run[STUDY_RUN_FIELD] = self.record_run_id(study)
                self._runs[key] = run
            return run

    def _pop(self, study: optuna.Study, number: int) -> tracker.Run | None:
        with self._lock:
            return self._runs.pop((study.study_name, number), None)

    def _update_study_record(self, study: optuna.Study) -> None:
        run_id = self.study_run_id(study)
        with _record_lock(self.record_run_id(study)):
            # Read the study inside the lock: the last writer then holds the newest view,
            # so the record ends right whatever order the trials finish in.
            trials = study.get_trials(deepcopy=False)
            fields: dict[str, Any] = {
                "name": study.study_name,
                "directions": ",".join(d.name.lower() for d in study.directions),
                "n_trials": sum(t.state.is_finished() for t in trials),
                "n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
            }
            if len(study.directions) == 1:
                fields["direction"] = study.direction.name.lower()
                best = _best_single(study)
                if best is not None:
                    # best_trial is a COMPLETE trial, and a complete trial has its value.
                    assert best.value is not None
                    fields["best_trial"] = best.number
                    fields["best_value"] = float(best.value)
                    fields["best_params"] = json.dumps(best.params, default=str)
                    fields["best_run"] = f"{run_id}-t{best.number}"  # the trial's run
            else:
                front = sorted(t.number for t in study.best_trials)
                fields["best_trials"] = json.dumps(front)
            config = {
                "sweep": {"study": study.study_name},
                "framework": framework_versions("optuna"),
            }
            if self._record is not None:
                # The user's run is the record: written, made durable, left open.
                record = self._record
                record[CONFIG] = clean_params(config)
                record.add_tags(STUDY_TAG)
                record["study"] = fields
                record.flush()
                return
            kwargs = {"system_metrics": False, **self._init_kwargs}
            record = tracker.init_run(
                self._project,
                run_id=run_id,
                name=study.study_name,
                tags=[STUDY_TAG, *self._tags],
                config=config,
                resume="allow",
                **kwargs,
            )
            record["study"] = fields
            record.close("finished")


def _best_single(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _metric_names(study: optuna.Study) -> list[str]:
    names = getattr(study, "metric_names", None)
    if names and len(names) == len(study.directions):
        return [str(n).replace("/", "_") for n in names]
    return [str(i) for i in range(len(study.directions))]


@contextlib.contextmanager
def _record_lock(run_id: str) -> Iterator[None]:
    with _record_locks_guard:
        lock = _record_locks.setdefault(run_id, threading.Lock())
    path = os.path.join(tempfile.gettempdir(), f"tracker-{run_id}.lock")
    with lock, open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
