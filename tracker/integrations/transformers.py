"""Hugging Face Trainer callback: ``TrainingArguments(report_to=["tracker"])`` or
``Trainer(callbacks=[TrackerCallback(project=...)])``.

Every rank builds the callback and opens the run (the rank coordinator makes that one run);
the writing rank records the arguments, the model config, every ``on_log`` and each
checkpoint, while every rank records its own step time and throughput.

Which run a training writes to is ``TrainingRuns``' decision (``_common``): each
``train()`` through one callback (a second ``train()``, each ``hyperparameter_search``
trial) gets a run of its own, linked to the first by a group tag; ``evaluate()`` after
training lands in the run of that training, at its last step; and
``train(resume_from_checkpoint=...)`` continues the checkpoint's run, rewound to the
checkpoint's step. The run id travels in each checkpoint folder (``tracker.json``).
An ``evaluate()`` or ``predict()`` outside training (after it, or in a script that only
evaluates) reopens the run, logs into it and closes it again before returning, on every
rank: nothing is left open for the process's exit to wait on.

Metrics: ``eval_*`` go under ``eval/``, ``predict()``'s ``test_*`` under ``test/`` (a
custom ``metric_key_prefix`` under its own name), the rest under ``train/``. What
``compute_metrics`` returns is kept whatever its form: numbers and text as they are,
bools as 0/1, per-class arrays, tensors, lists and tuples as one series per element
(``eval/f1/0``, ``eval/f1/1``, ...; at most ``MAX_ELEMENTS`` per array), dicts as nested
paths (``eval/report/macro avg/f1-score``). None, and what is neither, is skipped with one
warning per metric naming it; a metric never stops the training.

Whose arguments are the run's config: the first to record them. A later process that
opens the same run (an evaluation script sharing ``TRACKER_RUN_ID``, a resume from a
checkpoint in a new process, a second Trainer with its own callback) finds the run's
``config/training_args`` (or ``config/model``, ...) already there and records its own
beside them, never over them: under ``config_later/<n>/`` (``config_later/1/training_args/
learning_rate``, ...), ``n`` counting the later ones from 1. ``config/`` stays the first
training's, which is what ``tracker compare`` and ``list_runs(config=...)`` read.

``per_rank/samples_per_second`` counts the samples each optimizer step really took: its
micro-batches (fewer in the last accumulation window of an epoch) and a short last batch
of an epoch in a single process.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tracker.integrations.transformers needs transformers: pip install 'tracker-dl[transformers]'"
    ) from exc

import tracker
from tracker.core.paths import check_path
from tracker.integrations import _hf_hook
from tracker.integrations._common import (
    CONFIG,
    StepTimer,
    TrainingRuns,
    clean_key,
    clean_params,
    framework_versions,
    next_step,
    store_of,
)

__all__ = ["TrackerCallback", "CHECKPOINT_MARKER", "CONFIG_LATER", "MAX_ELEMENTS"]

# Written into each checkpoint folder: which run the checkpoint belongs to, so that a
# resume (in this process or a new one) continues that run.
CHECKPOINT_MARKER = "tracker.json"

# Where a later process's arguments go when the run already holds the first's.
CONFIG_LATER = "config_later"

# An array metric with more elements than this is data: skipped, with a warning.
MAX_ELEMENTS = 100

# The last on_log of a training run carries these totals instead of per-step values.
_SUMMARY_KEYS = (
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "total_flos",
)


class TrackerCallback(TrainerCallback):
    """Record a Hugging Face ``Trainer`` run in tracker.

    The first argument is a project name or an open ``Run``; ``project=`` and ``run=`` say
    the same by keyword, and other keyword arguments (``name=``, ``run_id=``, ``tags=``,
    ``store=``, ...) go to ``tracker.init_run``. ``project``, ``run_id`` and ``store``
    default to ``$TRACKER_PROJECT``, ``$TRACKER_RUN_ID`` and ``$TRACKER_STORE`` (which is
    how ``report_to=["tracker"]``, with no arguments, is configured). Each ``train()``
    gets its own run; later ones (a second ``train()``, each ``hyperparameter_search``
    trial) are linked to the first by a ``group:<first run id>`` tag and
    ``lineage/previous_run``. Pass a run you opened yourself to log into it: every
    training writes into it, each after the run's last step, and it is flushed, not
    closed, at the end of training.

    The run's config holds the training arguments (``config/training_args/...``), the
    model's config (``config/model/...``), a search trial's name and params, and the
    versions of transformers and torch (``config/framework/transformers_version``, ...);
    a later process's go under ``config_later/<n>/`` (see the module docstring).
    ``predict()`` logs its metrics under ``test/``, at the training's last step.

    >>> from transformers import Trainer, TrainingArguments
    >>> from tracker.integrations.transformers import TrackerCallback
    >>> trainer = Trainer(model, TrainingArguments("out", report_to=[]),
    ...                   train_dataset=ds, callbacks=[TrackerCallback("bert")])
    >>> trainer.train()  # doctest: +SKIP
    >>> with tracker.init_run(project="bert") as run:  # doctest: +SKIP
    ...     Trainer(model, args, train_dataset=ds, callbacks=[TrackerCallback(run)]).train()
    """

    def __init__(
        self,
        run_or_project: tracker.Run | str | None = None,
        /,
        *,
        project: str | None = None,
        run: tracker.Run | None = None,
        per_rank: bool = True,
        **init_run_kwargs: Any,
    ) -> None:
        opens_its_own = run is None and not isinstance(run_or_project, tracker.Run)
        if opens_its_own and not init_run_kwargs.get("run_id"):
            init_run_kwargs["run_id"] = os.environ.get("TRACKER_RUN_ID") or None
        self._name: str | None = init_run_kwargs.get("name")
        self._runs = TrainingRuns.from_arguments(
            run_or_project, run=run, project=project, init_kwargs=init_run_kwargs
        )
        self._per_rank = per_rank
        self._timer = StepTimer()
        self._training = False
        # Runs whose config this callback has recorded (once per run, or per training),
        # and where: "config", or "config_later/<n>" in a run an earlier process configured.
        self._configured: dict[str, str | None] = {}
        # The samples of the micro-batches since the step began; which batch of the
        # epoch the last one was (None where unknown: the epoch a resume skips into).
        self._window_samples = 0
        self._batch_in_epoch: int | None = 0
        self._epoch_position_known = True
        # Metrics already warned about (skipped, or cut short): one warning each.
        self._warned: set[str] = set()

    @property
    def run(self) -> tracker.Run | None:
        """The ``Run`` of this process for the current training (None between trainings
        when the callback opened the run itself: ``evaluate()`` and ``predict()`` reopen
        it and close it again)."""
        return self._runs.run

    @property
    def run_id(self) -> str | None:
        """The id of the current, or last, training's run."""
        return self._runs.run.id if self._runs.run is not None else self._runs.last_id

    # -- which run, which step ------------------------------------------------------------

    def _current(self, args: Any, model: Any = None, state: Any = None) -> tracker.Run:
        """The run of the current or last training (``evaluate()`` after training: its
        run, reopened), with its config recorded the first time this callback sees it."""
        self._runs.name = self._name or _run_name(args)
        run = self._runs.current()
        if run.id not in self._configured:
            self._record_config(run, args, model, state)
        return run

    def _step(self, state: Any) -> int:
        # A training into a user's run that already has steps goes on after them.
        return int(state.global_step) + self._runs.offset

    def _metrics_step(self, run: tracker.Run, state: Any) -> int:
        """Where an on_log or predict() records its metrics: the step of the training
        (after it: its last step). A callback that never trained, evaluating a run that
        has steps (an evaluation script sharing the training's run), records at the
        run's last step, not at its own global step 0 below the training's."""
        step = self._step(state)
        if not self._training and self._runs.trainings == 0 and step == 0:
            step = max(0, next_step(run) - 1)
        return step

    def _record_config(self, run: tracker.Run, args: Any, model: Any, state: Any) -> None:
        if not run.is_writer:
            self._configured[run.id] = None
            return
        config: dict[str, Any] = {"training_args": args.to_dict()}
        model_config = getattr(model, "config", None)
        if model_config is not None and hasattr(model_config, "to_dict"):
            config["model"] = model_config.to_dict()
        trial_name = getattr(state, "trial_name", None)
        if trial_name:
            config["trial_name"] = str(trial_name)
        trial_params = getattr(state, "trial_params", None)
        if trial_params:
            config["trial_params"] = trial_params
        config["framework"] = framework_versions("transformers", "torch")
        where = self._configured.get(run.id)
        if where is None:
            where = self._configured[run.id] = _config_place(run, config)
        run[where] = clean_params(config)

    # -- Trainer events -------------------------------------------------------------------

    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        self._runs.name = self._name or _run_name(args)
        runs = self._runs
        step = int(state.global_step)
        marker = None
        if step > 0:
            # The Trainer loaded a checkpoint's state before this event: a resume. It
            # continues the checkpoint's run, rewound to the checkpoint's step.
            marker = _read_marker(_checkpoint_dir(args, state), self._project_name())
        run = runs.start(
            resume_run_id=marker.get("run_id") if marker else None,
            resume_step=step if step > 0 else None,
            name=getattr(state, "trial_name", None) or None,
        )
        if marker and not runs.owns and marker.get("run_id") == run.id:
            # The user's own run: its steps keep the offset they had when it was saved.
            runs.offset = int(marker.get("offset", 0))
        self._training = True
        self._timer = StepTimer()
        self._window_samples = 0
        # A resume skips into its first epoch without events: where its batches fall
        # in that epoch is not known.
        self._epoch_position_known = step == 0
        # Every training records its arguments: a trial's differ from the last one's.
        self._record_config(run, args, model, state)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._batch_in_epoch = 0 if self._epoch_position_known else None
        self._epoch_position_known = True

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._window_samples = 0
        if self._per_rank:
            self._timer.start(self._step(state))

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # A micro-batch of gradient accumulation that did not end the step.
        self._window_samples += self._micro_batch(args, state, kwargs.get("train_dataloader"))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        samples = self._window_samples + self._micro_batch(
            args, state, kwargs.get("train_dataloader")
        )
        self._window_samples = 0
        figures = self._timer.stop(samples)
        if figures is not None:
            self._current(args).log(figures, step=self._step(state))

    def _micro_batch(self, args: Any, state: Any, loader: Any) -> int:
        """The samples of the micro-batch that just ran on this process: the batch size,
        or what is left of the epoch for its last batch (single process, no drop_last)."""
        size = int(getattr(state, "train_batch_size", None) or args.per_device_train_batch_size)
        if self._batch_in_epoch is None:
            return size
        self._batch_in_epoch += 1
        if getattr(args, "world_size", 1) > 1 or getattr(args, "dataloader_drop_last", False):
            # Across processes the last batches are evened out (padded) to full size.
            return size
        try:
            last = self._batch_in_epoch == len(loader)
            left = len(loader.dataset) % size if last else 0
        except (TypeError, AttributeError):  # no loader, or one without a length
            return size
        return left or size

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: Mapping[str, Any] | None = None,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        run = self._current(args, model, state)
        if not run.is_writer or not logs:
            return
        if "train_runtime" in logs:
            # The end-of-training totals: single values, not one-point series.
            run["summary"] = {
                k: v
                for k, v in logs.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
            return
        # evaluate() after training logs at the training's last step: a repeat step,
        # kept next to the one the training logged there.
        self._log_metrics(run, logs, self._metrics_step(run, state))

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._settle_outside_training()

    def on_predict(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> None:
        # predict() logs nothing through on_log: its metrics (test_loss, ...) come here,
        # on every rank. Recorded like evaluate()'s, at the training's last step.
        run = self._current(args, kwargs.get("model"), state)
        if run.is_writer and metrics:
            self._log_metrics(run, metrics, self._metrics_step(run, state))
        self._settle_outside_training()

    def _settle_outside_training(self) -> None:
        # An evaluation outside training (after it, or with no training at all) reopened
        # the run: close it again (a run passed in is flushed), on every rank, so that
        # nothing is left for the process's exit to wait on. A later train() or
        # evaluation opens it again.
        if not self._training:
            self._runs.end()

    def _log_metrics(self, run: tracker.Run, logs: Mapping[str, Any], step: int) -> None:
        series: dict[str, Any] = {}
        prefix = _metric_prefix(logs)
        for key, value in logs.items():
            self._points(_rename(str(key), prefix), value, series)
        try:
            run.log(series, step=step)
        except (TypeError, ValueError):
            # One the store refuses (a path holding a single value, text where numbers
            # were): the others still go in; the training goes on.
            for path, point in series.items():
                try:
                    run.log({path: point}, step=step)
                except (TypeError, ValueError) as exc:
                    self._warn(path, f"not recorded: {exc}")

    def _points(self, path: str, value: Any, out: dict[str, Any]) -> None:
        """Add to ``out`` the series point(s) of one metric (see the module docstring)."""
        skipped: dict[str, str] = {}
        _flatten(path, value, out, skipped)
        for where, why in skipped.items():
            self._warn(where, f"skipped: it {why}")

    def _warn(self, path: str, what: str) -> None:
        if path in self._warned:
            return
        self._warned.add(path)
        warnings.warn(
            f"tracker: metric {path!r} {what} (said once per metric)",
            RuntimeWarning,
            stacklevel=3,
        )

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self._current(args)
        if not run.is_writer:
            return
        directory = _checkpoint_dir(args, state)
        if not os.path.isdir(directory):
            return
        name = os.path.basename(directory)
        step = self._step(state)
        # Before track_files, so that the recorded hash is the folder's as it stays.
        _write_marker(
            directory,
            {"run_id": run.id, "project": run.project, "step": step, "offset": self._runs.offset},
        )
        run[f"checkpoints/{name}/files"].track_files(directory)
        run[f"checkpoints/{name}/step"] = step
        metric = args.metric_for_best_model
        if metric:
            key = metric if metric.startswith("eval_") else f"eval_{metric}"
            score = _last_logged(state.log_history, key)
            if score is not None:
                run[f"checkpoints/{name}/score"] = float(score)
                run[f"checkpoints/{name}/monitor"] = key
        if state.best_model_checkpoint:
            run["checkpoints/best"] = os.path.abspath(state.best_model_checkpoint)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._training = False
        run = self._runs.run
        if run is None:
            return
        if run.is_writer:
            run["summary/total_flos"] = float(state.total_flos)
            run["summary/global_step"] = int(state.global_step)
        self._runs.end()

    def _project_name(self) -> str:
        return self._runs.project or os.environ.get("TRACKER_PROJECT") or "default"


def _config_place(run: tracker.Run, config: Mapping[str, Any]) -> str:
    """Where this callback records ``config`` in ``run``: ``config``, unless the run
    already holds config under one of its keys (an earlier process recorded it), then
    the next ``config_later/<n>``."""
    try:
        fields = tracker.read_run(run.id, store=store_of(run)).fields()
    except Exception:  # noqa: BLE001 - a new run, or a store we cannot read: nothing before
        return CONFIG
    tops = [f"{CONFIG}/{key}" for key in config]
    if not any(path == top or path.startswith(top + "/") for path in fields for top in tops):
        return CONFIG
    later = [path.split("/")[1] for path in fields if path.startswith(CONFIG_LATER + "/")]
    return f"{CONFIG_LATER}/{max((int(n) for n in later if n.isdigit()), default=0) + 1}"


# -- metrics -------------------------------------------------------------------------------

_MAX_NESTING = 8  # dicts in dicts deeper than this are not metrics


def _flatten(
    path: str, value: Any, out: dict[str, Any], skipped: dict[str, str], depth: int = 0
) -> None:
    """Put the series point(s) of ``value`` into ``out`` under ``path``, and what cannot
    be recorded into ``skipped`` (path: why)."""
    if value is None:
        skipped[path] = "is None"
        return
    if hasattr(value, "tolist") and not isinstance(value, str):
        # numpy scalars and arrays, tensors (any size, any device): Python numbers/lists.
        try:
            value = value.tolist()
        except Exception as exc:  # noqa: BLE001 - an unreadable value is skipped, not fatal
            skipped[path] = f"could not be read ({type(exc).__name__}: {exc})"
            return
    if isinstance(value, bool | int | float | str):
        try:
            check_path(path)
        except ValueError as exc:
            skipped[path] = f"cannot be a path ({exc})"
            return
        out[path] = int(value) if isinstance(value, bool) else value
    elif isinstance(value, Mapping | list | tuple):
        if not value:
            skipped[path] = "is empty"
        elif depth >= _MAX_NESTING:
            skipped[path] = f"nests deeper than {_MAX_NESTING} levels"
        elif isinstance(value, Mapping):
            for key, item in value.items():
                _flatten(f"{path}/{clean_key(key)}", item, out, skipped, depth + 1)
        else:
            points: dict[str, Any] = {}
            inner: dict[str, str] = {}
            for index, item in enumerate(value):
                _flatten(f"{path}/{index}", item, points, inner, depth + 1)
            if len(points) > MAX_ELEMENTS:
                skipped[path] = (
                    f"has {len(points)} elements, more than the {MAX_ELEMENTS} series "
                    "tracker makes of one array (log it as a file, or reduce it)"
                )
            else:
                out.update(points)
                skipped.update(inner)
    else:
        skipped[path] = f"is a {type(value).__name__}, not a number, text, array or dict"


def _metric_prefix(logs: Mapping[str, Any]) -> str | None:
    """The ``metric_key_prefix`` of an evaluate()/predict() call's metrics (they always
    carry ``<prefix>_runtime`` and ``<prefix>_samples_per_second``), else None."""
    for key in logs:
        if isinstance(key, str) and key.endswith("_runtime"):
            prefix = key[: -len("_runtime")]
            if prefix and f"{prefix}_samples_per_second" in logs:
                return prefix
    return None


def _rename(key: str, prefix: str | None = None) -> str:
    # The same grouping as transformers' own reporting callbacks, and a custom
    # metric_key_prefix under its own name (not under train/).
    if key.startswith("eval_"):
        renamed = "eval/" + key[len("eval_") :]
    elif key.startswith("test_"):
        renamed = "test/" + key[len("test_") :]
    elif prefix and prefix != "train" and key.startswith(prefix + "_"):
        renamed = f"{prefix}/" + key[len(prefix) + 1 :]
    else:
        renamed = "train/" + key
    return clean_key(renamed)


def _checkpoint_dir(args: Any, state: Any) -> str:
    """Where the Trainer saves the checkpoint of ``state.global_step``.

    A ``hyperparameter_search`` trial saves under ``<output_dir>/<trial name>/``; the
    name is known here only when the search was given ``hp_name``.
    """
    base = args.output_dir
    trial_name = getattr(state, "trial_name", None)
    if getattr(state, "is_hyper_param_search", False) and trial_name:
        base = os.path.join(base, str(trial_name))
    return os.path.join(base, f"checkpoint-{int(state.global_step)}")


def _write_marker(directory: str, marker: Mapping[str, Any]) -> None:
    path = os.path.join(directory, CHECKPOINT_MARKER)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(dict(marker), f)
        os.replace(tmp, path)  # whole or absent, even if the process dies here
    except OSError:
        # A checkpoint folder we cannot write to: a resume falls back to the last run.
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _read_marker(directory: str, project: str) -> dict[str, Any] | None:
    """The run a checkpoint belongs to, if it says so and that run is in ``project``."""
    try:
        with open(os.path.join(directory, CHECKPOINT_MARKER), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None  # a checkpoint saved without tracker, or elsewhere
    if not isinstance(marker, dict) or not isinstance(marker.get("run_id"), str):
        return None
    if marker.get("project", project) != project:
        return None  # another project's run: resuming it by id would fail
    return marker


def _run_name(args: Any) -> str | None:
    name = getattr(args, "run_name", None)
    # Older transformers default run_name to output_dir: not a name anyone chose.
    if not name or name == getattr(args, "output_dir", None):
        return None
    return str(name)


def _last_logged(history: list[dict[str, Any]], key: str) -> Any:
    for entry in reversed(history):
        if key in entry:
            return entry[key]
    return None


# Importing this module is enough for report_to=["tracker"], even without the .pth hook.
_hf_hook.install()
