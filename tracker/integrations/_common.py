"""What every integration shares: which run a training writes to, and where its steps go.

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
  checkpoint's step (runs the integration opened; a run passed in is not rewound) (``init_run(resume_from_step=...)``): what the abandoned attempt logged
  after that step is superseded, kept but hidden from default reads.

After a training ends, ``current()`` still gives its run (reopened if it was closed), so
that an evaluation after training (``trainer.evaluate()``, ``trainer.test()``) lands in
the run of the training it evaluates, at that training's last step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import tracker

GROUP_TAG_PREFIX = "group:"
PREVIOUS_RUN_FIELD = "lineage/previous_run"


class TrainingRuns:
    """The runs one integration object writes to, training after training.

    >>> runs = TrainingRuns(project="mnist")
    >>> run = runs.start()            # first fit: its own run
    >>> runs.end()
    >>> again = runs.start()          # second fit: a new run, linked to the first
    >>> again[PREVIOUS_RUN_FIELD].fetch() == run.id  # doctest: +SKIP
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
            self.offset = 0 if resume_step is not None else run._next_step()
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
        opener = self._opener or tracker.init_run
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
        tags = tracker.read_run(run.id, store=_store_of(run)).tags
    except Exception:  # noqa: BLE001 - a new run, or a store we cannot read: no group yet
        return None
    for tag in tags:
        if tag.startswith(GROUP_TAG_PREFIX):
            return tag[len(GROUP_TAG_PREFIX) :]
    return None


def _store_of(run: tracker.Run) -> Any:
    return getattr(run, "_store_root", None)
