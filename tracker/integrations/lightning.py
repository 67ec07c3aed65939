"""Lightning logger: ``Trainer(logger=TrackerLogger(project=...))`` gives one run per job.

Works with the ``lightning`` package and with ``pytorch_lightning`` (Lightning's Trainer
treats loggers and callbacks by duck typing, so one class serves both; it subclasses the
``Logger`` of whichever package is installed, ``lightning`` first).

Lightning calls ``log_metrics`` on rank 0 only, so per-rank figures (step time, samples
per second, each rank's own training loss) come from a small callback that the logger adds
to the Trainer itself the first time Lightning asks for the experiment. Users add only the
logger.

Which run a training writes to is ``TrainingRuns``' decision (``_common``): the first
``fit`` gets the logger's run; a later ``fit`` on the same logger (a new Trainer, or the
same one trained further) gets a new run linked to the first, or, with a run passed by the
user, continues after that run's last step; ``fit(ckpt_path=...)`` continues the
checkpoint's run, rewound to the checkpoint. ``validate``/``test``/``predict`` are no
training: they write to the run of the last one.
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
import weakref
from argparse import Namespace
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

import tracker
from tracker.integrations._common import (
    PREVIOUS_RUN_FIELD,
    StepTimer,
    TrainingRuns,
    record_config,
    record_frameworks,
)

try:
    from lightning.pytorch.callbacks import Callback as _Callback
    from lightning.pytorch.loggers.logger import DummyExperiment as _DummyExperiment
    from lightning.pytorch.loggers.logger import Logger as _Logger
except ImportError:
    # The same classes from the other package: mypy types the names by the first import,
    # and these are distinct (equivalent) classes to it. "unused-ignore": where only one
    # of the two packages is installed, the other's names are Any and nothing is ignored.
    try:
        from pytorch_lightning.callbacks import (  # type: ignore[assignment, unused-ignore]
            Callback as _Callback,
        )
        from pytorch_lightning.loggers.logger import (  # type: ignore[assignment, unused-ignore]
            DummyExperiment as _DummyExperiment,
        )
        from pytorch_lightning.loggers.logger import (  # type: ignore[assignment, unused-ignore]
            Logger as _Logger,
        )
    except ImportError:
        raise ImportError(
            "tracker.integrations.lightning needs Lightning: pip install 'tracker-dl[lightning]' "
            "(or pip install lightning)"
        ) from None

__all__ = ["TrackerLogger"]

# "lightning" or "pytorch_lightning": whichever package the Logger came from.
_PACKAGE = _Logger.__module__.split(".", 1)[0]

# Lightning's finalize statuses. "finished" only comes from the SLURM requeue handler,
# which saves a checkpoint and stops: the job was preempted, not done.
_STATUS = {"success": "finished", "failed": "failed", "finished": "terminated"}
# The checkpoint key of every logger's state before each logger had its own (one key for
# all: with two loggers the last one's state overwrote the others'). Still read.
_LEGACY_STATE_KEY = "TrackerLogger"


class TrackerLogger(_Logger):
    """Send a Lightning run to tracker: metrics, hyperparameters, checkpoints, per-rank figures.

    The first argument is a project name (the run is created when Lightning first needs
    it, on every rank, and closed by ``finalize``) or an open ``Run`` (flushed but left
    open at the end); ``project=`` and ``run=`` say the same by keyword, and other keyword
    arguments (``name=``, ``run_id=``, ``tags=``, ``store=``, ``config=``, ``mode=``, ...)
    go to ``tracker.init_run``.

    >>> from lightning.pytorch import Trainer
    >>> from tracker.integrations.lightning import TrackerLogger
    >>> trainer = Trainer(logger=TrackerLogger("mnist", tags=["cnn"]), max_epochs=3)
    >>> trainer.fit(model)  # doctest: +SKIP
    >>> with tracker.init_run(project="mnist") as run:  # doctest: +SKIP
    ...     Trainer(logger=TrackerLogger(run)).fit(model)  # the run stays open after fit

    ``experiment`` is the ``Run`` on the writing rank and Lightning's no-op stand-in on the
    others, as Lightning expects; ``logger.run`` is the ``Run`` on every rank.
    Checkpoints land in ``save_dir/<project>/<run id>/checkpoints`` (``save_dir`` defaults
    to the Trainer's ``default_root_dir``); they are recorded as references, never copied,
    and carry the run id, so ``trainer.fit(model, ckpt_path=...)`` continues the same run,
    rewound to the checkpoint: what the abandoned attempt logged after it is kept but
    hidden from default reads (``fetch_values(include_superseded=True)`` shows it). Each
    recorded checkpoint has ``checkpoints/<name>/removed``: False, and True once its file
    is deleted (``save_top_k`` dropped it); the reference stays. Every logger keeps its run
    id in the checkpoint under a key of its own, so several loggers in one Trainer each
    resume their own run.

    Under ``strategy="ddp_spawn"`` the run id is chosen before the logger is pickled for
    the workers: ``logger.version`` in the launching process names the run they wrote, and
    ``trainer.test()`` there continues it. ``log_hyperparams``/``log_metrics`` after the
    run closed reopen it for the write and close it again with the status it had.

    Each further ``fit`` through the same logger (not resuming a checkpoint) is a new
    training: it gets a run of its own, tagged ``group:<first run id>`` and naming the run
    before it in ``lineage/previous_run``; with a given ``run`` it continues after the
    run's last step instead. ``trainer.validate()``/``test()`` write to the run of the last
    training, at Lightning's step.

    Hyperparameters (``save_hyperparameters``) go under ``config/``, the versions of
    Lightning and torch under ``config/framework/`` (``lightning_version``,
    ``torch_version``). ``prefix`` is put before every metric name (``prefix/name``);
    ``per_rank=False`` turns off the per-rank figures (``per_rank/step_time``,
    ``per_rank/samples_per_second``, ``per_rank/train_loss``, logged by every rank at
    Lightning's step).
    """

    def __init__(
        self,
        run_or_project: tracker.Run | str | None = None,
        /,
        *,
        project: str | None = None,
        run: tracker.Run | None = None,
        save_dir: str | os.PathLike[str] | None = None,
        prefix: str = "",
        per_rank: bool = True,
        **init_run_kwargs: Any,
    ) -> None:
        super().__init__()
        self._runs = TrainingRuns.from_arguments(
            run_or_project,
            run=run,
            project=project,
            init_kwargs=init_run_kwargs,
            who="TrackerLogger",
        )
        self._save_dir = os.fspath(save_dir) if save_dir is not None else None
        self._prefix = prefix
        self._per_rank = per_rank
        self._callback: _RankFigures | None = None
        self._recorded_checkpoints: set[str] = set()
        # Between the start of a ``fit`` and its ``finalize``: Lightning reads ``experiment``
        # more than once per fit, and only the first read may begin a training.
        self._in_fit = False
        # Whether the current training ran a batch with this logger in place. A fit that
        # ran none is no training of its own, and the next fit keeps its run: the Tuner's
        # ``lr_find``/``scale_batch_size`` (a fit whose search trains with the logger and
        # callbacks swapped out, then stops), a fit with nothing left to do.
        self._trained = False
        # Checkpoints recorded, by (run id, file): the field they went under, and those
        # whose file has since been deleted (save_top_k dropped it, an older ``last``).
        self._checkpoint_fields: dict[tuple[str, str], str] = {}
        self._removed_checkpoints: set[tuple[str, str]] = set()
        # The status ``finalize`` closed the last run with: a write after that reopens the
        # run and closes it again with this status, never leaving it running.
        self._closed_status: str | None = None
        # In the process that launches a spawned fit (strategy="ddp_spawn"): the Trainer
        # it was shipped for and what each worker's copy is told (every worker is pickled
        # on its own, and all must get the same run).
        self._launched: weakref.ref[Any] | None = None
        self._launch_plan: dict[str, Any] = {}
        # In a spawned worker: the run of the training before this one, to link to.
        self._previous_run: str | None = None

    # -- the Logger contract: cheap properties that never create a run ---------------------

    @property
    def name(self) -> str:
        """The project; Lightning uses it for the checkpoint directory."""
        return self._runs.project or os.environ.get("TRACKER_PROJECT") or "default"

    @property
    def version(self) -> str | None:
        """The run id, once known (given, restored from a checkpoint, or the run exists)."""
        if self._runs.run is not None:
            return self._runs.run.id
        return self._runs.last_id

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    @property
    def log_dir(self) -> str | None:
        if self._save_dir is None or self.version is None:
            return None
        return os.path.join(self._save_dir, self.name, self.version)

    @property
    def run(self) -> tracker.Run:
        """The ``Run`` of this process (every rank): the current training's, opened on first
        use and reopened after ``finalize`` (``trainer.test()`` after ``fit``)."""
        return self._runs.current()

    @property
    def experiment(self) -> Any:
        """The ``Run`` on the writing rank; a no-op stand-in elsewhere, as Lightning expects.

        Lightning reads this on every rank while setting up, before the callbacks' ``setup``
        (where ``ModelCheckpoint`` takes ``version`` for its directory) and before it
        restores a checkpoint: that is where a training begins (see ``_begin_training``)
        and where the per-rank callback joins the Trainer.
        """
        if not self._in_fit or self._callback is None:
            trainer, ckpt_path, weights_only = _running_trainer()
            if trainer is not None:
                self._attach(trainer)
                if _is_fitting(trainer):
                    self._begin_training(trainer, ckpt_path, weights_only)
        run = self.run
        return run if run.is_writer else _DummyExperiment()

    def log_hyperparams(
        self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        with self._writing() as run:
            if run.is_writer:
                record_config(run, params)
                _record_frameworks(run)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        with self._writing() as run:
            if not run.is_writer:
                return
            if self._prefix:
                metrics = {f"{self._prefix}/{k}": v for k, v in metrics.items()}
            if step is not None:
                step += self._runs.offset  # non-zero only when continuing a given run
            run.log(dict(metrics), step=step)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning calls this on every rank with the LightningModule: the last chance to
        # join a Trainer whose experiment was created outside ``fit``.
        trainer = getattr(model, "_trainer", None)
        if trainer is not None:
            self._attach(trainer)
            if _is_fitting(trainer) and not self._in_fit:
                # ``experiment`` did not see the Trainer (read outside ``Trainer._run``).
                self._begin_training(trainer, getattr(trainer, "ckpt_path", None), None)
        run = self.run
        if not run.is_writer:
            return
        params = list(model.parameters())
        run["model"] = {
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "parameters": sum(p.numel() for p in params),
            "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
            "summary": _short_text(repr(model)),
        }

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        run = self.run
        if not run.is_writer:
            return
        # ModelCheckpoint deletes the checkpoint a new one displaces right after this call:
        # what the last call saw go is gone by now (and by ``finalize``, for the last one).
        self._mark_removed_checkpoints(run)
        scores = {os.path.abspath(p): s for p, s in checkpoint_callback.best_k_models.items()}
        candidates = list(scores)
        for extra in (checkpoint_callback.last_model_path, checkpoint_callback.best_model_path):
            if extra and os.path.abspath(extra) not in scores:
                candidates.append(os.path.abspath(extra))
        monitor = checkpoint_callback.monitor
        for path in candidates:
            # A file re-saved under the same name (last.ckpt) is recorded again: new hash.
            stamp = (path, os.path.getmtime(path)) if os.path.isfile(path) else None
            if stamp is None or repr(stamp) in self._recorded_checkpoints:
                continue
            self._recorded_checkpoints.add(repr(stamp))
            key = "checkpoints/" + os.path.splitext(os.path.basename(path))[0]
            run[key + "/file"].track_files(path)
            # True once the file is deleted (see ``_mark_removed_checkpoints``); a file saved
            # again under the name of a deleted one is there again.
            run[key + "/removed"] = False
            self._checkpoint_fields[(run.id, path)] = key
            self._removed_checkpoints.discard((run.id, path))
            score = scores.get(path)
            if score is None and path == os.path.abspath(checkpoint_callback.last_model_path):
                score = checkpoint_callback.current_score
            if score is not None and monitor:
                run[key + "/score"] = float(score)
                run[key + "/monitor"] = str(monitor)
        if checkpoint_callback.best_model_path:
            run["checkpoints/best"] = os.path.abspath(checkpoint_callback.best_model_path)

    def finalize(self, status: str) -> None:
        # Lightning calls this at the end of every fit, validate, test and predict.
        self._in_fit = False
        run = self._runs.run
        if run is not None and run.is_writer:
            self._mark_removed_checkpoints(run)
        # An owned run is closed (a later trainer.test()/validate() reopens it through
        # ``run``); a run the user gave is only flushed.
        closing = _STATUS.get(status, "finished")
        if run is not None and self._runs.owns:
            self._closed_status = closing
        self._runs.end(closing)

    def __getstate__(self) -> dict[str, Any]:
        # Lightning pickles loggers for spawn: ship ids and settings, never a live run or
        # writer. A spawned process opens the run by id itself, as its owner. The id is
        # chosen here, before the copies leave (as Lightning's W&B logger does): the
        # spawned workers and this process then agree on it, and a later
        # ``trainer.test()`` or ``logger.version`` here names the run the workers wrote.
        launch: dict[str, Any] = {}
        if self._runs.owns and not self._in_fit:
            trainer, ckpt_path, weights_only = _fit_being_launched()
            if trainer is not None:
                launch = self._plan_launched_fit(trainer, ckpt_path, weights_only)
            elif self.version is None and _single_process():
                self._runs.last_id = _new_run_id()
        state = self.__dict__.copy()
        runs = copy.copy(self._runs)
        runs.last_id = self.version
        runs.run_id = runs.run_id or (runs.given.id if runs.given is not None else None)
        runs.run = None
        runs.given = None
        for name, value in launch.get("runs", {}).items():
            setattr(runs, name, value)
        state["_runs"] = runs
        state["_callback"] = None
        state["_launched"] = None
        state["_launch_plan"] = {}
        state["_previous_run"] = launch.get("previous")
        return state

    # -- wiring -----------------------------------------------------------------------------

    def _attach(self, trainer: Any) -> None:
        # Once per Trainer: the same logger may serve a second Trainer (fit, then test).
        for callback in trainer.callbacks:
            if isinstance(callback, _RankFigures) and callback.logger is self:
                self._callback = callback
                return
        self._callback = _RankFigures(self, self._state_key_in(trainer))
        trainer.callbacks.append(self._callback)

    def _state_key_in(self, trainer: Any) -> str:
        """This logger's own key in the Trainer's checkpoints: its project, and which of the
        Trainer's loggers of that project it is (two loggers of one Trainer never share a
        key, and the key stays the same for the same Trainer set up again to resume)."""
        same = [
            logger
            for logger in getattr(trainer, "loggers", [])
            if isinstance(logger, TrackerLogger) and logger.name == self.name
        ]
        index = next((i for i, logger in enumerate(same) if logger is self), 0)
        return f"{_LEGACY_STATE_KEY}{ {'project': self.name, 'index': index}!r}"

    @property
    def _state_key(self) -> str:
        return self._callback.state_key if self._callback is not None else _LEGACY_STATE_KEY

    @contextmanager
    def _writing(self) -> Iterator[tracker.Run]:
        """The run to write to; one that ``finalize`` closed is reopened for the write and
        closed again with the status it had, never left running."""
        restore = self._status_to_restore()
        run = self.run
        try:
            yield run
        finally:
            if restore is not None:
                self._runs.end(restore)

    def _status_to_restore(self) -> str | None:
        runs = self._runs
        if not runs.owns or runs.run is not None:
            return None  # open: a stage is running, or the user opened it through ``run``
        if self._closed_status is not None:
            return self._closed_status
        # Closed elsewhere: by the spawned workers of a ddp_spawn fit, or another process.
        run_id = runs.last_id or runs.run_id
        if run_id is None:
            return None  # no run yet: this write opens the run a coming fit goes on with
        try:
            status = tracker.read_run(run_id, store=runs.store).status
        except Exception:  # noqa: BLE001 - no such run (yet), or no store: nothing closed
            return None
        return None if status == "running" else status

    def _mark_removed_checkpoints(self, run: tracker.Run) -> None:
        """Mark the recorded checkpoints of ``run`` whose file is gone as removed; the
        reference (path, size, hash) stays, for the record."""
        for (run_id, path), key in self._checkpoint_fields.items():
            if run_id != run.id or (run_id, path) in self._removed_checkpoints:
                continue
            if not os.path.exists(path):
                self._removed_checkpoints.add((run_id, path))
                run[key + "/removed"] = True

    def _plan_launched_fit(self, trainer: Any, ckpt_path: Any, weights_only: Any) -> dict[str, Any]:
        """In the process launching a spawned fit: choose the run its workers write to, and
        keep this process's bookkeeping as if it had trained (the workers do, on copies).

        Returns what each worker's copy of ``_runs`` is set to (``runs``) and the run a new
        training links to (``previous``). The same for every worker of one fit.
        """
        if self._launched is not None and self._launched() is trainer:
            return self._launch_plan
        runs = self._runs
        if runs.run is not None:
            # Opened here before the fit (``log_hyperparams`` first): the workers go on
            # with it, so this process lets go of it (its writer would be a second one).
            runs.end("finished")
        saved_id, saved_step = (None, None)
        if ckpt_path:
            saved_id, saved_step = _checkpoint_origin(
                ckpt_path, weights_only, self._state_key_in(trainer), self.name
            )
        previous = None
        if saved_id is not None and saved_step is not None and runs.run_id in (None, saved_id):
            planned = saved_id  # the workers read the checkpoint and resume its run
        elif runs.trainings == 0:
            planned = runs.last_id or runs.run_id or _new_run_id()
        else:
            # A later training: a new run, linked to the one before (each worker's copy
            # opens it as its first, and links it; a lower id would be derived per rank).
            planned, previous = _new_run_id(), runs.last_id
        plan = {
            "runs": {"last_id": planned, "trainings": 0, "first_id": runs.first_id},
            "previous": previous,
        }
        runs.trainings += 1
        runs.last_id = planned
        if runs.first_id is None and saved_id is None:
            runs.first_id = planned
        self._trained = True
        self._closed_status = None
        self._launched = weakref.ref(trainer)
        self._launch_plan = plan
        return plan

    def _begin_training(self, trainer: Any, ckpt_path: Any, weights_only: Any) -> None:
        """A ``fit`` starts: pick its run (once per fit, on every rank, before Lightning
        resolves the checkpoint directory or restores a checkpoint)."""
        if self._in_fit:
            return
        self._in_fit = True
        runs = self._runs
        previous, self._previous_run = self._previous_run, None
        saved_id, saved_step = (None, None)
        if ckpt_path:
            saved_id, saved_step = _checkpoint_origin(
                ckpt_path, weights_only, self._state_key, self.name
            )
        # The run the user named (run=/run_id=) wins over the checkpoint's; the callback
        # warns when they differ, and such a fit is not a resume of the user's run.
        named = runs.run_id
        if saved_id is not None and saved_step is not None and named in (None, saved_id):
            # Resuming: the same training, rewound. Lightning restores ``global_step`` = g
            # and then logs every metric of the resumed fit at a step >= g (training steps
            # from g on, validation at the step of the batch before it; after an
            # end-of-epoch checkpoint Lightning's own counter even starts at g + 1). What
            # the abandoned attempt logged at steps <= g - 1 is never logged again: the
            # checkpoint is saved in ``on_train_batch_end`` of the batch at step g - 1,
            # before that batch's metrics and the validation after it, and an end-of-epoch
            # checkpoint before the epoch's own metrics (logged at g - 1). So rewinding to
            # g - 1 hides exactly the abandoned branch's later points: the default view
            # holds each step once, and the resumed branch from g on.
            runs.start(resume_run_id=saved_id, resume_step=max(saved_step - 1, 0))
        elif runs.trainings and not self._trained:
            # The last fit trained nothing with this logger in place: no training to part
            # from, so this fit keeps its run (``lr_find`` then ``fit``).
            runs.current()
        else:
            started = runs.start()
            if previous is not None and started.is_writer:
                # A later training launched into spawned workers: linked here (see
                # ``_plan_launched_fit``), as ``TrainingRuns`` links one in one process.
                started[PREVIOUS_RUN_FIELD] = previous
            if not runs.owns:
                # ``start`` sets the offset to the run's next step, for a framework counting
                # from 0 again (a new Trainer). The same Trainer trained further goes on
                # from its own ``global_step``: only the difference is added.
                runs.offset = max(0, runs.offset - int(trainer.global_step))
        run = runs.current()
        if run.is_writer:
            _record_frameworks(run)
        self._trained = False


class _RankFigures(_Callback):
    """Runs on every rank: what Lightning alone cannot show (each rank's own figures).

    Also carries the run id in checkpoints, so that resuming continues the same run.
    """

    def __init__(self, logger: TrackerLogger, state_key: str = _LEGACY_STATE_KEY) -> None:
        super().__init__()
        self.logger = logger
        self._state_key = state_key
        self._timer = StepTimer()

    @property
    def state_key(self) -> str:
        return self._state_key

    @property
    def _legacy_state_key(self) -> Any:
        # Lightning falls back to this key for a checkpoint that lacks ``state_key``.
        return _LEGACY_STATE_KEY

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        # Normally begun already, by ``experiment``; this is for a Trainer it did not see.
        self.logger._begin_training(trainer, getattr(trainer, "ckpt_path", None), None)

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if not any(logger is self.logger for logger in trainer.loggers):
            return  # trained with a stand-in logger (as Lightning's tuners do): not ours
        self.logger._trained = True
        if not self.logger._per_rank:
            return
        self._timer.start(trainer.global_step + self.logger._runs.offset)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        timed = self._timer.stop(_batch_size(batch))
        if timed is None:
            return
        figures: dict[str, Any] = dict(timed)
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None and getattr(loss, "numel", lambda: 0)() == 1:
            # Detached: the value is read later (on the writer thread for accelerator
            # tensors), never holding the autograd graph.
            figures["per_rank/train_loss"] = loss.detach()
        self.logger.run.log(figures, step=self._timer.step)

    def state_dict(self) -> dict[str, Any]:
        if self.logger.version is None:
            return {}
        return {"run_id": self.logger.version, "project": self.logger.name}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("project", self.logger.name) != self.logger.name:
            return  # an old checkpoint's one shared entry, of another logger
        saved = state_dict.get("run_id")
        if saved and saved != self.logger.version:
            warnings.warn(
                f"this checkpoint belongs to tracker run {saved!r}, but the logger already "
                f"writes to run {self.logger.version!r}; pass TrackerLogger(run_id={saved!r}) "
                "to continue the checkpoint's run",
                stacklevel=2,
            )


def _running_trainer() -> tuple[Any, Any, Any]:
    """Find the Trainer whose ``_run`` is on the stack, and the checkpoint it will restore.

    Lightning offers loggers no reference to their Trainer, and creates the experiment
    before it restores a checkpoint; looking one frame range up is the only way to continue
    the checkpoint's run instead of opening a new one. Returns ``(trainer, ckpt_path,
    weights_only)``, all None when the experiment is touched outside ``Trainer`` (then
    ``log_graph`` attaches the callback later, and no checkpoint is consulted).
    """
    frame: FrameType | None
    try:
        frame = sys._getframe(2)
    except ValueError:  # called from the top of the stack: no Trainer above
        return None, None, None
    for _ in range(12):
        if frame is None:
            break
        if frame.f_code.co_name == "_run":
            owner = frame.f_locals.get("self")
            if type(owner).__name__ == "Trainer" and hasattr(owner, "callbacks"):
                f_locals = frame.f_locals
                return owner, f_locals.get("ckpt_path"), f_locals.get("weights_only")
        frame = frame.f_back
    return None, None, None


def _fit_being_launched() -> tuple[Any, Any, Any]:
    """The Trainer whose ``fit`` is pickling this logger for spawned workers
    (``strategy="ddp_spawn"``), with its ``ckpt_path`` and ``weights_only``; all None
    when the pickling is no such launch.

    The launching process never runs the fit itself: ``Trainer.fit`` hands it to a
    launcher that pickles the Trainer (loggers included) once per worker.
    """
    frame: FrameType | None = sys._getframe(2)
    for _ in range(100):
        if frame is None:
            break
        if frame.f_code.co_name == "fit":
            owner = frame.f_locals.get("self")
            if type(owner).__name__ == "Trainer" and hasattr(owner, "callbacks"):
                launcher = getattr(getattr(owner, "strategy", None), "launcher", None)
                spawns = getattr(launcher, "_start_method", None) in ("spawn", "forkserver")
                if not spawns or not _is_fitting(owner):
                    break
                f_locals = frame.f_locals
                return owner, f_locals.get("ckpt_path"), f_locals.get("weights_only")
        frame = frame.f_back
    return None, None, None


def _single_process() -> bool:
    from tracker.rank_utils import detect_rank

    return detect_rank().world_size <= 1


def _new_run_id() -> str:
    from tracker.core.session import new_run_id

    return new_run_id()


def _is_fitting(trainer: Any) -> bool:
    # TrainerFn is a str enum in both packages: "fit", "validate", "test", "predict".
    return getattr(getattr(trainer, "state", None), "fn", None) == "fit"


def _checkpoint_origin(
    ckpt_path: Any, weights_only: Any, state_key: str, project: str
) -> tuple[str | None, int | None]:
    """The tracker run id a logger saved in a checkpoint file under ``state_key``, and
    Lightning's ``global_step`` there.

    A checkpoint written before each logger had its own key holds one entry under the
    old key: it is this logger's when it names the same project (the first such logger).
    """
    path = os.fspath(ckpt_path)
    if not os.path.isfile(path):
        return None, None
    import torch

    try:
        # Lightning is about to load this very file; mmap keeps the peek cheap, and full
        # unpickling happens only where the user asked Lightning for it (weights_only=False).
        checkpoint = torch.load(
            path, map_location="cpu", mmap=True, weights_only=weights_only is not False
        )
    except Exception as error:  # noqa: BLE001 - a peek must not stop training
        warnings.warn(
            f"could not read the tracker run id from {path!r} ({error}); a new run starts",
            stacklevel=3,
        )
        return None, None
    states = checkpoint.get("callbacks") or {}
    state = states.get(state_key)
    if state is None:
        legacy = states.get(_LEGACY_STATE_KEY) or {}
        first = state_key == _LEGACY_STATE_KEY or state_key.endswith("'index': 0}")
        state = legacy if first and legacy.get("project") == project else {}
    step = checkpoint.get("global_step")
    return state.get("run_id"), int(step) if isinstance(step, int) else None


def _batch_size(batch: Any) -> int | None:
    if hasattr(batch, "shape") and len(batch.shape) > 0:
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        for item in batch:
            size = _batch_size(item)
            if size:
                return size
    return None


def _record_frameworks(run: tracker.Run) -> None:
    record_frameworks(run, _PACKAGE, "torch")


def _short_text(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
