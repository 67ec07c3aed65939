"""What every integration shares: arguments, runs, hyperparameters, timing, writer choice.

The toolkit (one place for what each integration used to do its own way):

- ``take_run_or_project`` / ``TrainingRuns.from_arguments``: the one constructor
  convention. The first positional argument is an open ``Run`` (the integration writes
  into it and leaves it open) or a project name (the integration opens its own runs and
  closes them); ``run=`` and ``project=`` are keywords for the same, and the remaining
  keyword arguments go to ``tracker.init_run``.
- ``open_run``: open a run for a training, on every rank (``init_run``) or in this
  process alone (``init_local_run``, for frameworks that pick one writer themselves).
- ``clean_value`` / ``clean_params``: hyperparameters as the store holds them, by the
  rule every config value follows (docs/config-values.md): numpy and torch scalars as
  numbers, lists and arrays as lists, None as None, nested dicts, ``Namespace`` objects
  and dataclasses as nested paths, callables by qualified name, anything else stable
  text.
- ``record_config`` / ``framework_versions``: every integration puts its
  hyperparameters under ``config/`` (so ``tracker compare`` and
  ``list_runs(config=...)`` see them) and the versions of the frameworks it ran on under
  ``config/framework/<module>_version``.
- ``StepTimer``: each rank's own step time and samples per second
  (``per_rank/step_time``, ``per_rank/samples_per_second``).
- ``records_here``: the writer-only decision for frameworks that reduce their metrics
  across workers themselves (Keras' chief, XGBoost's rank 0).

Which run each training writes to
---------------------------------

Frameworks restart their step counters with every training: a second ``fit``, each
``hyperparameter_search`` trial, fine-tuning after pre-training. Written into one run,
those trainings would land on top of each other. ``TrainingRuns`` decides, once per
training, where it goes:

- **The integration opened the run** (the usual case): the first training gets a run of
  its own, opened with the user's arguments. Each later training through the same
  callback gets a new run, linked to the first: the same ``group:<first run id>`` tag,
  and ``lineage/previous_run`` naming the run before it.
- **The user passed an open run**: every training writes into it, and a training that
  starts after the run already has steps continues after its last step (``offset`` is
  added to the framework's own step).
- **Resuming from a checkpoint** continues the checkpoint's run and rewinds it to the
  checkpoint's step (``init_run(resume_from_step=...)``; runs the integration opened
  only, a run passed in is not rewound): what the abandoned attempt logged after that
  step is superseded, kept but hidden from default reads.

After a training ends, ``current()`` still gives its run (reopened if it was closed), so
that an evaluation after training (``trainer.evaluate()``, ``trainer.test()``) lands in
the run of the training it evaluates, at that training's last step.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import tracker
from tracker.core.paths import as_mapping
from tracker.core.values import plain_value, stable_text
from tracker.rank_utils import is_writer_rank

GROUP_TAG_PREFIX = "group:"
PREVIOUS_RUN_FIELD = "lineage/previous_run"
CONFIG = "config"  # every integration's hyperparameters live below this path
FRAMEWORK = "framework"  # config/framework/<module>_version, config/framework/keras_backend
STEP_TIME = "per_rank/step_time"
SAMPLES_PER_SECOND = "per_rank/samples_per_second"

# Nested hyperparameters deeper than this are a cycle or a mistake: kept as text.
_MAX_DEPTH = 20


# -- arguments: an open run, or a project ----------------------------------------------------


def take_run_or_project(
    run_or_project: tracker.Run | str | None = None,
    *,
    run: tracker.Run | None = None,
    project: str | None = None,
    init_kwargs: Mapping[str, Any] | None = None,
    who: str = "TrackerCallback",
    init_kwargs_with_run: bool = False,
) -> tuple[tracker.Run | None, str | None]:
    """Sort out the one constructor convention; return ``(given run, project)``.

    The first positional argument is an open ``Run`` or a project name; ``run=`` and
    ``project=`` say the same by keyword. A run and a project (or ``run_id``, or other
    ``init_run`` arguments, unless ``init_kwargs_with_run``) together are a mistake, as is
    an ``init_run`` argument that does not exist: both raise here, when the callback is
    built, not later on some rank in the middle of a training.

    >>> take_run_or_project("mnist")
    (None, 'mnist')
    >>> take_run_or_project(project="mnist", init_kwargs={"tags": ["cnn"]})
    (None, 'mnist')
    """
    if run_or_project is not None:
        if isinstance(run_or_project, str):
            if project is not None:
                raise TypeError(f"{who}() got the project twice (positionally and project=)")
            project = run_or_project
        elif isinstance(run_or_project, tracker.Run):
            if run is not None:
                raise TypeError(f"{who}() got the run twice (positionally and run=)")
            run = run_or_project
        else:
            raise TypeError(
                f"{who}() takes an open tracker.Run or a project name (str) first, got "
                f"{type(run_or_project).__name__}"
            )
    if run is not None and not isinstance(run, tracker.Run):
        raise TypeError(f"{who}(run=...) takes an open tracker.Run, got {type(run).__name__}")
    if project is not None and not isinstance(project, str):
        raise TypeError(f"{who}(project=...) takes a str, got {type(project).__name__}")
    kwargs = dict(init_kwargs or {})
    if run is not None:
        clash = ["project"] if project is not None else []
        clash += sorted(
            k
            for k, v in kwargs.items()
            if v is not None and (k == "run_id" or not init_kwargs_with_run)
        )
        if clash:
            raise ValueError(
                f"{who}() takes either an open run or a project with init_run arguments, "
                f"not both (got a run and {', '.join(clash)})"
            )
    _check_init_kwargs(project, kwargs, who)
    return run, project


def _check_init_kwargs(project: str | None, kwargs: Mapping[str, Any], who: str) -> None:
    try:
        _init_run_signature().bind(project, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{who}(): {exc} (other keyword arguments go to init_run)") from None


@functools.lru_cache(maxsize=1)
def _init_run_signature() -> inspect.Signature:
    return inspect.signature(tracker.init_run)


def open_run(project: str | None = None, *, local: bool = False, **init_kwargs: Any) -> tracker.Run:
    """Open a training's run: on every rank as one run (``init_run``), or, with
    ``local=True``, as this process's own run whatever the launcher says
    (``init_local_run``: the framework already reduced the metrics and picked this process
    as the only writer, so no other rank joins).

    >>> run = open_run("mnist", local=True, system_metrics=False)  # doctest: +SKIP
    """
    if local:
        from tracker.api import init_local_run

        return init_local_run(project, **init_kwargs)
    return tracker.init_run(project, **init_kwargs)


def open_local_run(project: str | None = None, **init_kwargs: Any) -> tracker.Run:
    """``open_run(..., local=True)``, as a picklable opener for ``TrainingRuns``."""
    return open_run(project, local=True, **init_kwargs)


def records_here(
    given: tracker.Run | None = None, *, rank: int | None = None, world_size: int | None = None
) -> bool:
    """Whether this process records a training whose framework reduces across workers.

    Keras under a multi-worker strategy and XGBoost's collective run the callback on every
    worker with the same, already reduced, figures: one process records them, the writer
    rank (``tracker.rank_utils.is_writer_rank``, from ``rank``/``world_size`` when the
    framework knows them, else from the launcher's environment). A run the user gave is
    written where it is the writer's (``run.is_writer``) on that rank.

    >>> records_here(rank=1, world_size=2)
    False
    >>> records_here(rank=0, world_size=1)
    True
    """
    if not is_writer_rank(rank=rank, world_size=world_size):
        return False
    return given is None or bool(given.is_writer)


def next_step(run: tracker.Run) -> int:
    """The step a run's next ``log`` without ``step=`` would take (after its last one)."""
    return run._next_step()


def store_of(run: tracker.Run) -> Any:
    """The store directory an open run writes to (None where it does not say)."""
    return getattr(run, "_store_root", None)


# -- hyperparameters -------------------------------------------------------------------------


def clean_value(value: Any, _depth: int = 0) -> Any:
    """One hyperparameter as the store holds it: the config rule of
    ``tracker.core.values.plain_value`` (docs/config-values.md), the one
    ``init_run(config=...)`` and ``run["config/..."] = ...`` use too.

    Mappings, ``Namespace`` objects and dataclass instances become nested dicts of clean
    values (with clean keys); numpy and torch scalars numbers; lists, tuples, sets and
    arrays lists; None None; callables (functions, classes) their qualified name; enums
    their value; paths their text; anything else stable text (its repr without memory
    addresses).

    >>> import numpy as np
    >>> clean_value(np.float32(0.5))
    0.5
    >>> clean_value({"act": max, "dims": (64, 32), "scheduler": None})
    {'act': 'max', 'dims': [64, 32], 'scheduler': None}
    """
    nested = as_mapping(value)
    if nested is not None:
        if _depth >= _MAX_DEPTH:
            return stable_text(value)
        return {clean_key(k): clean_value(v, _depth + 1) for k, v in nested.items()}
    return plain_value(CONFIG, value, lenient=True)


def clean_params(params: Any) -> dict[str, Any]:
    """Hyperparameters (a mapping, ``Namespace`` or dataclass) as a nested dict of clean
    values, ready for ``run["config/..."] = ...``; something else is kept under ``value``.

    Keys become text; a ``/`` in a key nests, as everywhere in tracker (empty parts and
    ``..`` are dropped).

    >>> clean_params({"opt": {"lr": 1e-3, "betas": (0.9, 0.99)}, "epochs": 3})
    {'opt': {'lr': 0.001, 'betas': [0.9, 0.99]}, 'epochs': 3}
    """
    cleaned = clean_value(params)
    return cleaned if isinstance(cleaned, dict) else {"value": cleaned}


def clean_key(key: Any) -> str:
    """A mapping key as one readable path (``"a/b"`` nests; never empty or ``..``).

    >>> clean_key(3), clean_key("optimizer/lr"), clean_key("/weird//key/")
    ('3', 'optimizer/lr', 'weird/key')
    """
    text = key if isinstance(key, str) else str(plain_value(CONFIG, key, lenient=True))
    text = "".join(c if c.isprintable() else "?" for c in text)
    parts = [p for p in text.split("/") if p not in ("", "..")]
    return "/".join(parts) or "_"


def record_config(run: tracker.Run, params: Any, under: str = "") -> None:
    """Write hyperparameters under ``config/<under>`` (cleaned; the writing rank only).

    >>> record_config(run, {"lr": np.float32(0.5)}, under="optimizer")  # doctest: +SKIP
    >>> # -> config/optimizer/lr = 0.5
    """
    if not run.is_writer:
        return
    cleaned = clean_params(params)
    if cleaned:
        run[f"{CONFIG}/{under}" if under else CONFIG] = cleaned


def framework_versions(*modules: str, **extra: Any) -> dict[str, Any]:
    """``{"<module>_version": version}`` of each module already imported (none is
    imported here), plus ``extra`` as given: what ``config/framework/`` holds.

    >>> framework_versions("sys")  # no __version__: left out
    {}
    """
    out: dict[str, Any] = {}
    for name in modules:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module is not None else None
        if version is not None:
            out[f"{name}_version"] = str(version)
    out.update(extra)
    return out


def record_frameworks(run: tracker.Run, *modules: str, **extra: Any) -> None:
    """Write ``framework_versions(*modules, **extra)`` under ``config/framework/``.

    >>> record_frameworks(run, "xgboost")  # doctest: +SKIP
    >>> # -> config/framework/xgboost_version = "3.2.0"
    """
    record_config(run, framework_versions(*modules, **extra), under=FRAMEWORK)


# -- per-rank timing -------------------------------------------------------------------------


class StepTimer:
    """Each rank's own step time and throughput, as Lightning and Hugging Face record them.

    ``start`` when a training step begins, ``stop`` when it ends: the figures to log at
    the step given to ``start`` (``per_rank/step_time`` in seconds, and with a batch size
    ``per_rank/samples_per_second``), or None when no step was started.

    >>> timer = StepTimer()
    >>> timer.start(step=7)
    >>> figures = timer.stop(samples=32)
    >>> sorted(figures), timer.step
    (['per_rank/samples_per_second', 'per_rank/step_time'], 7)
    """

    def __init__(self) -> None:
        self.step = 0
        self._started: float | None = None

    @property
    def running(self) -> bool:
        """Whether a step was started and not stopped yet."""
        return self._started is not None

    def start(self, step: int) -> None:
        """A step begins; its figures go to ``step``."""
        self.step = int(step)
        self._started = time.perf_counter()

    def stop(self, samples: int | None = None) -> dict[str, float] | None:
        """The step ended: its figures, or None when no step is running."""
        if self._started is None:
            return None
        elapsed = time.perf_counter() - self._started
        self._started = None
        figures = {STEP_TIME: elapsed}
        if samples and elapsed > 0:
            figures[SAMPLES_PER_SECOND] = samples / elapsed
        return figures


# -- which run each training writes to -------------------------------------------------------


class TrainingRuns:
    """The runs one integration object writes to, training after training.

    >>> runs = TrainingRuns(project="mnist")
    >>> run = runs.start()  # first fit: its own run  # doctest: +SKIP
    >>> runs.end()  # doctest: +SKIP
    >>> again = runs.start()  # second fit: a new run, linked to the first  # doctest: +SKIP
    >>> tracker.read_run(again.id)[PREVIOUS_RUN_FIELD].fetch() == run.id  # doctest: +SKIP
    True
    """

    def __init__(
        self,
        *,
        run: tracker.Run | None = None,
        project: str | None = None,
        name: str | None = None,
        run_id: str | None = None,
        tags: Iterable[str] | str = (),
        store: str | os.PathLike[str] | None = None,
        init_kwargs: dict[str, Any] | None = None,
        opener: Callable[..., tracker.Run] | None = None,
    ) -> None:
        if run is not None and (project is not None or run_id is not None):
            raise ValueError("pass either an open run or project/run_id, not both")
        self.given = run
        self.project = run.project if run is not None else project
        self.name = name
        self.run_id = run.id if run is not None else run_id
        # One str is one tag, as init_run takes it (not one tag per letter).
        self.tags = (tags,) if isinstance(tags, str) else tuple(tags)
        self.store = os.fspath(store) if store is not None else None
        self.init_kwargs = dict(init_kwargs or {})
        self._opener = opener
        self.run: tracker.Run | None = run
        self.offset = 0  # added to the framework's step in the current training
        self.trainings = 0  # trainings started through this object
        self.first_id: str | None = None  # the first run opened here (the group)
        self.last_id: str | None = run.id if run is not None else run_id
        self._base_id: str | None = None  # the first run this object opened or continued
        self._world_size = 1  # of the last run: whether later runs need an agreed id

    @classmethod
    def from_arguments(
        cls,
        run_or_project: tracker.Run | str | None = None,
        *,
        run: tracker.Run | None = None,
        project: str | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
        who: str = "TrackerCallback",
        local: bool = False,
    ) -> TrainingRuns:
        """The runs of a callback built by the one convention (``take_run_or_project``).

        ``name``, ``run_id``, ``tags`` and ``store`` among ``init_kwargs`` are the runs'
        own; the rest goes to every ``init_run``. ``local=True`` opens each run in this
        process alone (``open_run(local=True)``).

        >>> runs = TrainingRuns.from_arguments("mnist", init_kwargs={"tags": ["cnn"]})
        >>> runs.owns, runs.project, runs.tags
        (True, 'mnist', ('cnn',))
        """
        given, project = take_run_or_project(
            run_or_project, run=run, project=project, init_kwargs=init_kwargs, who=who
        )
        if given is not None:
            return cls(run=given)
        kwargs = dict(init_kwargs or {})
        return cls(
            project=project,
            name=kwargs.pop("name", None),
            run_id=kwargs.pop("run_id", None),
            tags=kwargs.pop("tags", ()),
            store=kwargs.pop("store", None),
            init_kwargs=kwargs,
            opener=open_local_run if local else None,
        )

    @property
    def owns(self) -> bool:
        """Whether the runs are this object's to open and close (no run was given)."""
        return self.given is None

    def start(
        self,
        *,
        resume_run_id: str | None = None,
        resume_step: int | None = None,
        name: str | None = None,
    ) -> tracker.Run:
        """Begin a training; return the run it writes to (see the module docstring).

        ``resume_run_id``/``resume_step`` come from a checkpoint being resumed: its run
        continues, rewound to that step. A run the user opened and passed in is theirs: it
        goes on at the framework's own steps and is not rewound (to rewind it, open it
        with ``init_run(run_id=..., resume_from_step=...)`` before passing it).
        """
        self.trainings += 1
        if not self.owns:
            run = self.given
            assert run is not None
            self.offset = 0 if resume_step is not None else next_step(run)
            self.run = run
            return run
        self.offset = 0
        if resume_step is not None:
            # A resumed training is the same training: same run, rewound.
            self._close_current()
            rid = resume_run_id or self.last_id or self.run_id
            self.run = self._open(run_id=rid, resume_from_step=int(resume_step), name=name)
        elif self.trainings == 1:
            if self.run is None:
                # A run that ``current()`` opened before this first training (an evaluation
                # before ``fit``) and has since been closed is this training's run too.
                self.run = self._open(run_id=self.last_id or self.run_id, name=name)
        else:
            previous = self.run.id if self.run is not None else self.last_id
            self._close_current()
            self.run = self._open(run_id=self._later_run_id(), name=name)
            if previous is not None and self.run.is_writer:
                # (A non-writer rank's field would land under ranks/<rank>/.)
                self.run[PREVIOUS_RUN_FIELD] = previous
        self._remember(self.run)
        return self.run

    def current(self) -> tracker.Run:
        """The run of the current (or last) training, reopened if it was closed."""
        if self.run is None:
            self.run = self._open(run_id=self.last_id or self.run_id, name=None)
            self._remember(self.run)
        return self.run

    def end(self, status: str = "finished") -> None:
        """End the current training: close an owned run, flush a given one."""
        if self.run is None:
            return
        if self.owns:
            self._close_current(status)
        else:
            self.run.flush()

    # -- internals ------------------------------------------------------------------------

    def _open(self, *, run_id: str | None, name: str | None, **extra: Any) -> tracker.Run:
        opener = self._opener or open_run
        tags = list(self.tags)
        if self.first_id is not None:
            tags.append(GROUP_TAG_PREFIX + self.first_id)
        kwargs = dict(self.init_kwargs)
        kwargs.update(extra)
        run = opener(
            self.project,
            name=name if name is not None else self.name,
            run_id=run_id,
            tags=tags,
            store=self.store,
            **kwargs,
        )
        if self.first_id is None:
            # The first run names the group; a run resumed by id keeps the group it has.
            group = _group_of(run)
            self.first_id = group or run.id
            if group is None and run.is_writer:
                run.add_tags(GROUP_TAG_PREFIX + run.id)
        return run

    def _remember(self, run: tracker.Run) -> None:
        self.last_id = run.id
        self._world_size = run.world_size
        if self._base_id is None:
            self._base_id = run.id

    def _later_run_id(self) -> str | None:
        """The id of a later training's run: a new random one in a single process.

        In a distributed job ``init_run`` without an id gives every call of the job the
        same id (derived from the job id, or kept in the job's store: that is how an
        elastic restart finds its run again), so a later training would reopen the first
        run. Every rank derives this one alike from the first run's id instead.
        """
        if self._world_size <= 1 or self._base_id is None:
            return None
        return f"{self._base_id[:100]}-{self.trainings}"

    def _close_current(self, status: str = "finished") -> None:
        if self.run is not None and self.owns:
            self.run.close(status)
        self.run = None


def _group_of(run: tracker.Run) -> str | None:
    """The group a run resumed by id already belongs to (its group tag), if any."""
    if not run.is_writer:
        return None
    try:
        tags = tracker.read_run(run.id, store=store_of(run)).tags
    except Exception:  # noqa: BLE001 - a new run, or a store we cannot read: no group yet
        return None
    for tag in tags:
        if tag.startswith(GROUP_TAG_PREFIX):
            return tag[len(GROUP_TAG_PREFIX) :]
    return None
