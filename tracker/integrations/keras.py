"""Keras 3: ``TrackerCallback`` records a ``model.fit`` in a tracker run.

Importing this module imports Keras; ``import tracker`` never imports it.

>>> from tracker.integrations.keras import TrackerCallback
>>> model.fit(x, y, epochs=5, callbacks=[TrackerCallback(project="mnist")])
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

try:
    import keras
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tracker.integrations.keras needs Keras 3: pip install 'tracker-dl[keras]'"
    ) from exc

import tracker
from tracker.integrations._common import (
    TrainingRuns,
    next_step,
    record_config,
    record_frameworks,
    records_here,
)

__all__ = ["TrackerCallback"]


class TrackerCallback(keras.callbacks.Callback):
    """Log a Keras ``fit`` to a tracker run.

    Records when training starts the fit parameters (``config/fit/...``), the optimizer's
    config (``config/optimizer/...``), the Keras version and backend
    (``config/framework/keras_version``, ``keras_backend`` and the backend's version,
    e.g. ``tensorflow_version``), the settings of an ``EarlyStopping`` callback of the fit
    (``config/early_stopping/...``: monitor, patience, min_delta, mode, baseline,
    restore_best_weights, start_from_epoch) and the model summary (``model/...``); each
    epoch's logs at the epoch index (``train/<metric>``, ``val/<metric>``, ``train/lr``);
    with ``log_every_n_batches=N`` every N-th batch's logs at the global batch step
    (``batch/<metric>``, ``batch/lr``). The learning rate is the one the optimizer used:
    under a ``LearningRateSchedule``, a batch's own rate, and for an epoch the rate of its
    last batch (not the rate the next step will use).

    When training ends: the epochs the training ran (``summary/epochs_run``, counted from
    epoch 0 like ``config/fit/epochs``, which keeps what was asked for) and, when an
    ``EarlyStopping`` callback took part, what it did: ``early_stopping/stopped`` (whether
    it stopped the fit), ``stopped_epoch``, ``best_epoch`` and ``best`` (the monitored
    value there) and ``restored_weights`` (whether the model now holds the best epoch's
    weights rather than the last one's).

    The first argument is an open ``Run`` (the callback never closes it) or a project
    name; ``run=`` and ``project=`` say the same by keyword. Without a run the callback
    opens one, with the other keyword arguments for ``tracker.init_run``, on the chief
    worker only (the writer rank by ``tracker.rank_utils``, which reads ``TF_CONFIG``)
    and closes it when training ends. Other workers record nothing; with a given run, the
    process where that run is the writer's records.

    One callback, several fits:

    - **A fit from epoch 0** is a new training. A run the callback opens is a new one for
      each, linked to the first (``group:<first run id>`` tag, ``lineage/previous_run``);
      a run passed in continues after its last step (epoch and batch steps both shifted).
    - **A fit from a later epoch** (``fit(initial_epoch=k)``, or ``BackupAndRestore``
      after a crash) continues the same training: epoch ``k`` at step ``k``, its batches
      after those of the ``k`` epochs before. A run the callback opens is the training's
      last one (or ``run_id=``'s), resumed from the step before
      (``init_run(resume_from_step=...)``), so that what an abandoned attempt logged
      past it is superseded: kept, hidden from default reads. That step is ``k - 1``
      when only epochs are logged. With batch logging it is the step before epoch
      ``k``'s first batch: batch steps run ahead of epoch steps in the one run, and a
      rewind to ``k - 1`` would hide the batches of the epochs already done. An
      abandoned attempt's epochs from ``k`` on then stay visible beside the new ones
      (``fetch_values(per_step="last")`` keeps the newest). Where epoch ``k``'s batches
      start is counted by the callback, else ``k * params["steps"]``; when neither is
      known (a dataset of unknown size, in a new process), the run goes on without a
      rewind and the batches after its last step. A run passed in is never rewound.

    >>> cb = TrackerCallback("mnist", log_every_n_batches=50, tags=["cnn"])
    >>> model.fit(x, y, validation_split=0.1, epochs=3, callbacks=[cb])  # doctest: +SKIP
    >>> model.fit(x, y, epochs=6, initial_epoch=3, callbacks=[cb])  # doctest: +SKIP
    >>> with tracker.init_run(project="mnist") as run:  # doctest: +SKIP
    ...     model.fit(x, y, epochs=3, callbacks=[TrackerCallback(run)])  # run stays open
    """

    # Keras runs batch hooks of async-safe callbacks on a worker thread, so the training
    # thread keeps dispatching while logs are read; without this, the mere presence of a
    # batch hook turns async dispatch off. Batch hooks here only enqueue, under a lock.
    async_safe = True

    def __init__(
        self,
        run_or_project: tracker.Run | str | None = None,
        /,
        *,
        project: str | None = None,
        run: tracker.Run | None = None,
        log_every_n_batches: int | None = None,
        log_model_summary: bool = True,
        **init_run_kwargs: Any,
    ) -> None:
        super().__init__()
        if log_every_n_batches is not None and log_every_n_batches < 1:
            raise ValueError(f"log_every_n_batches must be >= 1, got {log_every_n_batches}")
        # Only the chief opens a run, as this process's own: Keras reduced the figures.
        self._runs = TrainingRuns.from_arguments(
            run_or_project, run=run, project=project, init_kwargs=init_run_kwargs, local=True
        )
        self._every = log_every_n_batches
        self._summary = log_model_summary
        self.run: tracker.Run | None = None
        self._lock = threading.Lock()
        self._chief = False  # whether this process records (decided per fit)
        self._began = False  # whether this fit's first epoch has begun
        self._base = 0  # the run's step for this training's epoch 0 and batch 0
        self._epoch_start = 0  # this training's batch index of the epoch's first batch
        self._batches = 0  # batches seen in the current epoch
        self._pending: dict[int, dict[str, Any]] = {}
        self._next = 0  # next batch index whose logs are due
        self._summary_due = False
        self._stoppers: list[Any] = []  # this fit's EarlyStopping callbacks
        self._last_epoch: int | None = None  # the last epoch this fit ended
        self._iterations = 0  # the optimizer's step count at this training's batch 0
        # Where the current training got to, as (next epoch, next batch index): what a
        # fit(initial_epoch=...) continuing it in this process starts from.
        self._reached: tuple[int, int] | None = None

    # -- hooks ----------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Frameworks copy or pickle callbacks (spawned workers, deep copies); a lock
        # cannot travel, and a fresh one is what the copy needs.
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state["_stoppers"] = []  # they hold the model
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._began and self.run is not None:
            # The last fit never reached on_train_end: Keras skips it when fit raises.
            self._runs.end("failed")
        self.run = None
        self._began = False
        self._batches = 0
        self._pending = {}
        self._last_epoch = None
        self._chief = records_here(self._runs.given)
        # Keras hands a callback neither its fellow callbacks nor the fit's arguments:
        # the EarlyStopping ones are found in the CallbackList calling this hook.
        self._stoppers = [
            cb for cb in _fellow_callbacks(self) if isinstance(cb, keras.callbacks.EarlyStopping)
        ]
        # The run is chosen at the first epoch: only then does Keras say which epoch
        # this fit starts from (initial_epoch, or BackupAndRestore's, set in its own
        # on_train_begin, which may come after this one).

    def _begin(self, first_epoch: int) -> None:
        """Choose this fit's run and steps (see the class docstring); record the setup."""
        self._began = True
        if not self._chief:
            return
        runs = self._runs
        batch_start: int | None  # known here by the end of either branch
        if first_epoch == 0:
            run = runs.start()
            base, batch_start = runs.offset, 0
        else:
            batch_start = self._batch_start(first_epoch)
            base = self._base if runs.trainings else 0
            if self._every is None:
                rewind: int | None = first_epoch - 1
            elif batch_start is not None:
                # Never behind a finished epoch, even one without batches.
                rewind = max(batch_start, first_epoch) - 1
            else:
                rewind = None
            if rewind is not None or not runs.owns:
                # A given run is neither reopened nor rewound: steps go on from base.
                run = runs.start(resume_step=base + (rewind or 0))
            else:
                runs.end()  # the same run, reopened as it is
                run = runs.current()
                runs.trainings += 1
            if batch_start is None:
                batch_start = max(0, next_step(run) - base)
        self.run, self._base, self._epoch_start = run, base, batch_start
        self._reached = (first_epoch, batch_start)
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        # Batch ``i`` of this training is the optimizer's step ``self._iterations + i``.
        self._iterations = (_iterations(optimizer) or 0) - batch_start
        fit = {k: v for k, v in (self.params or {}).items() if v is not None and k != "verbose"}
        record_config(run, fit, under="fit")
        if self._stoppers:
            record_config(run, _stopping_config(self._stoppers[0]), under="early_stopping")
        if optimizer is not None:
            # The config's name is the instance's (adam, adam_1, ... in one process): the
            # class is what runs are compared by.
            config = {**optimizer.get_config(), "class": type(optimizer).__name__}
            record_config(run, config, under="optimizer")
        backend = keras.backend.backend()
        # The backend is a module of the same name (tensorflow, torch, jax, numpy).
        record_frameworks(run, "keras", backend, keras_backend=backend)
        self._summary_due = self._summary and model is not None
        self._record_summary()

    def _batch_start(self, epoch: int) -> int | None:
        """This training's batch index of ``epoch``'s first batch, when it can be known."""
        if self._reached is not None and self._reached[0] == epoch:
            return self._reached[1]  # counted by this callback: right whatever the sizes
        steps = (self.params or {}).get("steps")
        if isinstance(steps, int) and steps > 0:
            return epoch * steps
        return None

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if not self._began:
            self._begin(epoch)
        self._batches = 0
        self._next = _round_up(self._epoch_start, self._every or 1)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.run is None or self._every is None:
            return
        index = self._epoch_start + batch
        with self._lock:
            self._batches = max(self._batches, batch + 1)
            if index % self._every or not logs:
                return
            data = {f"batch/{k}": v for k, v in logs.items()}
            if "batch/lr" not in data and "batch/learning_rate" not in data:
                lr = _learning_rate(self._optimizer(), self._iterations + index)
                if lr is not None:
                    data["batch/lr"] = lr
            self._pending[index] = data
            # Async dispatch may deliver batches out of order; a lower step than a
            # series' last is stored but sorts apart from its write order and warns, so
            # emit only the unbroken prefix of due steps.
            while self._next in self._pending:
                self.run.log(self._pending.pop(self._next), step=self._base + self._next)
                self._next += self._every

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.run is None:
            return
        with self._lock:
            # Keras waits for every dispatched batch hook before this one.
            for index in sorted(self._pending):
                self.run.log(self._pending[index], step=self._base + index)
            self._pending.clear()
            self._epoch_start += self._batches
        self._reached = (epoch + 1, self._epoch_start)
        self._last_epoch = epoch
        data: dict[str, Any] = {}
        for key, value in (logs or {}).items():
            if key in ("learning_rate", "lr"):
                data["train/lr"] = value
            elif key.startswith("val_"):
                data[f"val/{key[4:]}"] = value
            else:
                data[f"train/{key}"] = value
        if "train/lr" not in data:
            # The rate the epoch's last batch used (a schedule's rate moves on with the
            # step count: read now, it would be the next epoch's first).
            optimizer = self._optimizer()
            lr = _learning_rate(optimizer, (_iterations(optimizer) or 1) - 1)
            if lr is not None:
                data["train/lr"] = lr
        if data:
            self.run.log(data, step=self._base + epoch)
        self._record_summary()

    def _record_summary(self) -> None:
        # A model without an Input is built by its first batch: try again after an epoch.
        model = self.model
        if not self._summary_due or self.run is None or not model.built:
            return
        self._summary_due = False
        lines: list[str] = []
        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        self.run["model/name"] = str(model.name)
        self.run["model/summary"] = "\n".join(lines)
        self.run["model/num_params"] = int(model.count_params())

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        run, self.run = self.run, None
        self._began = False
        stoppers, self._stoppers = self._stoppers, []
        if run is None:
            return
        if run.is_writer:
            if self._last_epoch is not None:
                run["summary/epochs_run"] = self._last_epoch + 1
            if stoppers:
                # Read here, not at the last epoch's end: EarlyStopping may come after
                # this callback in the list, and it has seen every epoch by now.
                facts = _stopping_facts(stoppers[0])
                if facts:
                    run["early_stopping"] = facts
        self._runs.end("finished")  # closes a run the callback opened; flushes a given one

    def _optimizer(self) -> Any:
        return getattr(self.model, "optimizer", None)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _fellow_callbacks(callback: Any, depth: int = 6) -> list[Any]:
    """The callbacks of the ``CallbackList`` that is calling ``callback``'s hook (empty
    when the hook is called some other way)."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, keras.callbacks.CallbackList):
            found = list(getattr(owner, "callbacks", []))
            if any(cb is callback for cb in found):
                return found
        frame = frame.f_back
    return []


# EarlyStopping's settings, as its constructor names them.
_STOPPING_SETTINGS = (
    "monitor",
    "patience",
    "min_delta",
    "mode",
    "baseline",
    "restore_best_weights",
    "start_from_epoch",
)


def _stopping_config(stopper: Any) -> dict[str, Any]:
    out = {name: getattr(stopper, name) for name in _STOPPING_SETTINGS if hasattr(stopper, name)}
    return {k: v for k, v in out.items() if v is not None}


def _stopping_facts(stopper: Any) -> dict[str, Any]:
    """What an EarlyStopping callback did in the fit that just ended."""
    stopped_epoch = int(getattr(stopper, "stopped_epoch", 0) or 0)
    facts: dict[str, Any] = {"stopped": stopped_epoch > 0}  # it never stops at epoch 0
    if stopped_epoch > 0:
        facts["stopped_epoch"] = stopped_epoch
    best = getattr(stopper, "best", None)
    if best is not None:  # None: the monitored value never came (or start_from_epoch)
        facts["best_epoch"] = int(getattr(stopper, "best_epoch", 0))
        try:
            facts["best"] = _number(best)
        except Exception:  # noqa: BLE001 - a value that is not a number: left out
            pass
    # EarlyStopping restores in its on_train_end when it kept the best epoch's weights.
    facts["restored_weights"] = bool(
        getattr(stopper, "restore_best_weights", False)
        and getattr(stopper, "best_weights", None) is not None
    )
    return facts


def _number(value: Any) -> float:
    """A Keras variable, backend tensor or number as a Python float."""
    if isinstance(value, keras.Variable):
        # (converting the variable itself, NumPy 2 warns about its __array__)
        return float(value.numpy())
    return float(keras.ops.convert_to_numpy(value))


def _iterations(optimizer: Any) -> int | None:
    """The optimizer's step count (the steps it has applied), if it says."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    try:
        return int(_number(optimizer.iterations))
    except Exception:  # noqa: BLE001 - no optimizer, or a custom one without a counter
        return None


def _learning_rate(optimizer: Any, iteration: int | None = None) -> float | None:
    """The rate the optimizer used at step ``iteration`` (0 is its first).

    A ``LearningRateSchedule`` gives the rate of a step; a plain rate is the same for all
    (a callback changing it does so between epochs). Without ``iteration``, the rate the
    optimizer would use now.
    """
    if optimizer is None:
        return None
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    schedule = getattr(inner, "_learning_rate", None)
    try:
        if iteration is not None and isinstance(
            schedule, keras.optimizers.schedules.LearningRateSchedule
        ):
            return _number(schedule(max(int(iteration), 0)))
        return _number(optimizer.learning_rate)
    except Exception:  # noqa: BLE001 - a custom optimizer without a readable rate
        return None
