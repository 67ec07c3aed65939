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
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tracker.integrations.transformers needs transformers: pip install 'tracker-dl[transformers]'"
    ) from exc

import tracker
from tracker.integrations import _hf_hook
from tracker.integrations._common import (
    CONFIG,
    StepTimer,
    TrainingRuns,
    clean_params,
    framework_versions,
)

__all__ = ["TrackerCallback", "CHECKPOINT_MARKER"]

# Written into each checkpoint folder: which run the checkpoint belongs to, so that a
# resume (in this process or a new one) continues that run.
CHECKPOINT_MARKER = "tracker.json"

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
    versions of transformers and torch (``config/framework/transformers_version``, ...).

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
        # Runs whose config this callback has recorded (once per run, or per training).
        self._configured: set[str] = set()

    @property
    def run(self) -> tracker.Run | None:
        """The ``Run`` of this process for the current training (None between trainings
        when the callback opened the run itself; ``evaluate()`` reopens it)."""
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

    def _record_config(self, run: tracker.Run, args: Any, model: Any, state: Any) -> None:
        self._configured.add(run.id)
        if not run.is_writer:
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
        run[CONFIG] = clean_params(config)

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
        # Every training records its arguments: a trial's differ from the last one's.
        self._record_config(run, args, model, state)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._per_rank:
            self._timer.start(self._step(state))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        samples = args.per_device_train_batch_size * args.gradient_accumulation_steps
        figures = self._timer.stop(samples)
        if figures is not None:
            self._current(args).log(figures, step=self._step(state))

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
        series = {}
        for key, value in logs.items():
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                if not hasattr(value, "item"):
                    continue
            series[_rename(key)] = value
        # evaluate() after training logs at the training's last step: a repeat step,
        # kept next to the one the training logged there.
        run.log(series, step=self._step(state))

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._settle_outside_training(args)

    def on_predict(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> None:
        self._settle_outside_training(args)

    def _settle_outside_training(self, args: Any) -> None:
        # After training the run was reopened for this evaluation and stays open (a
        # later train() or the process's end closes it): make what it logged durable now.
        if not self._training and self._runs.run is not None:
            self._runs.run.flush()

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


def _rename(key: str) -> str:
    # The same grouping as transformers' own reporting callbacks.
    if key.startswith("eval_"):
        return "eval/" + key[len("eval_") :]
    if key.startswith("test_"):
        return "test/" + key[len("test_") :]
    return "train/" + key


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
