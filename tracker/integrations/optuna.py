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
import inspect
import json
import os
import re
import tempfile
import threading
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

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
ERROR_FIELD = "trial/error"  # in a failed trial's run: why it failed, in one line

# Threads of one process share this lock per study record; processes also take an flock
# on a file named after the record in the temporary directory (_record_lock).
_record_locks: dict[str, threading.Lock] = {}
_record_locks_guard = threading.Lock()

# What makes a study itself, beyond its name (see TrackerCallback.study_run_id), once known.
_study_keys: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_study_keys_guard = threading.Lock()

# The TrackerCallbacks watching the objective running in this thread (Study.optimize).
_watching = threading.local()
_NOTHING = object()


class _Failure(NamedTuple):
    """Why a trial failed: ``summary`` for ``trial/error``, ``detail`` for the run's error."""

    summary: str
    detail: str
    status: str  # the run's final status: failed, or terminated for a KeyboardInterrupt


class TrackerCallback:
    """Record every trial of an Optuna study as a tracker run.

    Each trial's run holds its params (``config/<param>``), the Optuna version
    (``config/framework/optuna_version``), its value or values
    (``trial/value``, ``trial/values/<metric>``), state (``trial/state``: complete, pruned,
    fail), duration and the values reported with ``trial.report`` as the series
    ``trial/intermediate`` at their steps. Pruned trials are tagged ``pruned``. A failed
    trial's run closes as ``failed`` (``terminated`` after a ``KeyboardInterrupt``) with
    the reason: ``trial/error`` (``"ValueError: ..."``, or the value Optuna refused) and
    the traceback as the run's error; whether Optuna caught the exception (``catch=``) or
    it escaped ``optimize``. Every trial run carries the tag ``study:<name>`` and the
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

    Inside the objective, :meth:`run_for` gives the trial's own run for per-epoch curves.
    Failures are seen wherever the callback is in ``study.optimize(callbacks=[...])``;
    :meth:`track` also closes a failed trial's run when the objective runs outside
    ``optimize`` (``study.ask``/``study.tell`` loops). Safe with ``n_jobs`` threads and
    with several processes sharing one Optuna storage and one tracker store.

    >>> cb = TrackerCallback(project="sweeps", store="runs/")
    >>> def objective(trial):
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
        # Keyed by (study_run_id, trial number): two studies of one name stay apart.
        self._runs: dict[tuple[str, int], tracker.Run] = {}
        self._failures: dict[tuple[str, int], _Failure] = {}  # seen, not recorded yet
        self._returned: dict[tuple[str, int], Any] = {}  # what each objective returned
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
        state.update(_runs={}, _failures={}, _returned={})  # this process's trials only
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_failures", {})
        state.setdefault("_returned", {})
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- names ----------------------------------------------------------------------------

    @staticmethod
    def study_run_id(study: optuna.Study) -> str:
        """The run id of the study's own record; trial runs add ``-t<number>``.

        It is derived from what the Optuna storage keeps of the study: its name, its id
        there and when its first trial (number 0) started. Every process and thread
        sharing the storage derives the same id, and a new study of the same name (an
        in-memory study run again, a study created again in a new database) a new one.
        Asked before the study's first trial has started, the answer is provisional.
        """
        name = study.study_name
        digest = hashlib.sha1(f"{name}\0{_study_key(study)}".encode()).hexdigest()[:10]
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
        """Decorate an objective so that a trial that raises closes its run as failed,
        with the exception as the reason, also where the objective runs outside
        ``study.optimize(callbacks=[this callback])`` (inside it, that happens anyway)."""

        @functools.wraps(objective)
        def wrapper(trial: optuna.Trial, *args: Any, **kwargs: Any) -> Any:
            try:
                return objective(trial, *args, **kwargs)
            except optuna.TrialPruned:
                raise
            except BaseException as exc:
                self._note_failure(trial.study, trial.number, exc)
                if not any(cb is self for cb in getattr(_watching, "callbacks", ())):
                    # No optimize of ours around it: Optuna may never call the callback.
                    self._close_failed(trial.study, trial.number)
                raise

        return wrapper  # type: ignore[return-value]

    # -- after each trial -----------------------------------------------------------------

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        key = self._key(study, trial.number)
        with self._lock:
            failure = self._failures.pop(key, None)
            returned = self._returned.pop(key, _NOTHING)
        if failure is None and trial.state == TrialState.FAIL and returned is not _NOTHING:
            # Optuna refused what the objective returned (None, NaN, a wrong count).
            reason = f"the objective returned {_short_repr(returned)}, which Optuna refused"
            failure = _Failure(reason, reason, "failed")
        run = self._pop(key)
        if run is None:
            run = self._open(study, trial.number, trial.params)
            self._pop(key)
        run[CONFIG] = clean_params(trial.params)
        state = trial.state.name.lower()
        if failure is not None and not trial.state.is_finished():
            state = "fail"  # an exception Optuna does not catch (SystemExit) left it running
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
        if failure is not None:
            run[ERROR_FIELD] = failure.summary
            run.close(failure.status, error=failure.detail)
        else:
            run.close(_STATES.get(trial.state, "failed"))
        self._update_study_record(study)

    # -- internals ------------------------------------------------------------------------

    def _key(self, study: optuna.Study, number: int) -> tuple[str, int]:
        return (self.study_run_id(study), number)

    def _open(self, study: optuna.Study, number: int, params: dict[str, Any]) -> tracker.Run:
        key = self._key(study, number)
        with self._lock:
            run = self._runs.get(key)
            if run is None:
                config = clean_params(params)
                config["sweep"] = {"study": study.study_name, "trial": number}
                config["framework"] = framework_versions("optuna")
                run = tracker.init_run(
                    self._project,
                    run_id=f"{key[0]}-t{number}",
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

    def _pop(self, key: tuple[str, int]) -> tracker.Run | None:
        with self._lock:
            return self._runs.pop(key, None)

    def _note_failure(self, study: optuna.Study, number: int, exc: BaseException) -> None:
        """Keep why a trial failed, until its run is closed with it."""
        summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        status = "terminated" if isinstance(exc, KeyboardInterrupt) else "failed"
        with self._lock:
            # The innermost sight of it (track inside optimize's watch) comes first.
            self._failures.setdefault(self._key(study, number), _Failure(summary, detail, status))

    def _note_returned(self, study: optuna.Study, number: int, value: Any) -> None:
        with self._lock:
            self._returned[self._key(study, number)] = value

    def _close_failed(self, study: optuna.Study, number: int) -> None:
        """Close a failed trial's run now, as ``track`` does outside an optimize of ours."""
        key = self._key(study, number)
        with self._lock:
            failure = self._failures.pop(key, None)
            self._returned.pop(key, None)
        run = self._pop(key)
        if run is None or failure is None:
            return
        run["trial/state"] = "fail"
        run[ERROR_FIELD] = failure.summary
        run.close(failure.status, error=failure.detail)

    def _finish_unreported(self, study: optuna.Study) -> None:
        """After an exception escaped ``optimize``: record the trials of ``study`` that
        Optuna called no callback for (the one that raised, or, when another callback
        raised, one that ended well), as the callback would have."""
        prefix = self.study_run_id(study)
        with self._lock:
            keys = {k for k in (*self._failures, *self._runs) if k[0] == prefix}
            for k in [k for k in self._returned if k[0] == prefix and k not in keys]:
                del self._returned[k]
        if not keys:
            return
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        for key in sorted(keys):
            frozen = trials.get(key[1])
            if frozen is None:
                continue
            with self._lock:
                failed = key in self._failures
            if failed or frozen.state.is_finished():
                # (A trial still running without a failure is another optimize call's.)
                self(study, frozen)

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


def _study_key(study: optuna.Study) -> str:
    """What tells this study from another of the same name, as its storage keeps it: the
    study's id there and the start of its trial 0 (set once, when that trial starts, and
    read alike by every process sharing the storage)."""
    with _study_keys_guard:
        known = _study_keys.get(study)
    if known is not None:
        return known
    study_id = getattr(study, "_study_id", 0)
    trials = study.get_trials(deepcopy=False)
    first = trials[0] if trials and trials[0].number == 0 else None
    if first is None or first.datetime_start is None:
        # No trial has started yet (none is recorded before one has): not final.
        return str(study_id)
    key = f"{study_id}\0{first.datetime_start.isoformat()}"
    with _study_keys_guard:
        _study_keys[study] = key
    return key


def _short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


# -- seeing every trial's end: Study.optimize, watched --------------------------------------
#
# Optuna calls callbacks only for trials whose exception it catches (``catch=``), and keeps
# no exception for those: a trial that fails any other way never reaches a callback, and
# none tells why a trial failed. So ``study.optimize`` is wrapped, once, when this module
# is imported: where a TrackerCallback is among its callbacks, the objective runs inside a
# watch that hands each TrackerCallback the exception (or the value) of its trial, and
# when an exception escapes ``optimize`` the TrackerCallbacks record the trials Optuna
# called no callback for. With no TrackerCallback among the callbacks it changes nothing.


def _watched(
    func: Callable[..., Any], callbacks: tuple[TrackerCallback, ...]
) -> Callable[..., Any]:
    def objective(trial: optuna.Trial) -> Any:
        outer = getattr(_watching, "callbacks", ())
        _watching.callbacks = (*outer, *callbacks)
        try:
            value = func(trial)
        except optuna.TrialPruned:
            raise
        except BaseException as exc:
            for cb in callbacks:
                cb._note_failure(trial.study, trial.number, exc)
            raise
        finally:
            _watching.callbacks = outer
        for cb in callbacks:
            cb._note_returned(trial.study, trial.number, value)
        return value

    return objective


def _watch_optimize() -> None:
    study_class = optuna.study.Study
    original = study_class.optimize
    if getattr(original, "_tracker_watched", False):
        return
    try:
        signature = inspect.signature(original)
    except (TypeError, ValueError):  # pragma: no cover - depends on the Optuna release
        return
    if not {"func", "callbacks"} <= set(signature.parameters):  # pragma: no cover
        return  # an Optuna this was not written for: ``track`` still works

    @functools.wraps(original)
    def optimize(self: optuna.Study, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            return original(self, *args, **kwargs)  # Optuna's own error
        callbacks = bound.arguments.get("callbacks")
        if callbacks is not None and not isinstance(callbacks, list | tuple):
            callbacks = bound.arguments["callbacks"] = list(callbacks)  # an iterator, once
        ours = tuple(cb for cb in callbacks or () if isinstance(cb, TrackerCallback))
        if not ours or not callable(bound.arguments.get("func")):
            return original(*bound.args, **bound.kwargs)
        bound.arguments["func"] = _watched(bound.arguments["func"], ours)
        try:
            return original(*bound.args, **bound.kwargs)
        except BaseException:
            for cb in ours:
                try:
                    cb._finish_unreported(self)
                except Exception as exc:  # noqa: BLE001 - never hide the exception escaping
                    warnings.warn(
                        f"tracker: recording the trials of study {self.study_name!r} after "
                        f"an exception escaped optimize failed: {exc!r}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            raise

    optimize._tracker_watched = True  # type: ignore[attr-defined]
    study_class.optimize = optimize  # type: ignore[method-assign]


_watch_optimize()
