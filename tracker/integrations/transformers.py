"""Hugging Face Trainer callback: ``TrainingArguments(report_to=["tracker"])`` or
``Trainer(callbacks=[TrackerCallback(project=...)])``.

Every rank builds the callback and opens the run (the rank coordinator makes that one run);
the writing rank records the arguments, the model config, every ``on_log`` and each
checkpoint, while every rank records its own step time and throughput.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tracker.integrations.transformers needs transformers: pip install 'tracker[transformers]'"
    ) from exc

import tracker
from tracker.core.values import readable
from tracker.integrations import _hf_hook

__all__ = ["TrackerCallback"]

# The last on_log of a training run carries these totals instead of per-step values.
_SUMMARY_KEYS = (
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "total_flos",
)


class TrackerCallback(TrainerCallback):
    """Record a Hugging Face ``Trainer`` run in tracker.

    ``project``, ``run_id`` and ``store`` default to ``$TRACKER_PROJECT``,
    ``$TRACKER_RUN_ID`` and ``$TRACKER_STORE`` (which is how ``report_to=["tracker"]``,
    with no arguments, is configured). Pass ``run`` to log into a run you opened yourself;
    it is then flushed, not closed, at the end of training.

    >>> from transformers import Trainer, TrainingArguments
    >>> from tracker.integrations.transformers import TrackerCallback
    >>> trainer = Trainer(model, TrainingArguments("out", report_to=[]),
    ...                   train_dataset=ds, callbacks=[TrackerCallback(project="bert")])
    >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(
        self,
        project: str | None = None,
        *,
        run: tracker.Run | None = None,
        name: str | None = None,
        run_id: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
        store: str | os.PathLike[str] | None = None,
        per_rank: bool = True,
        **init_kwargs: Any,
    ) -> None:
        if run is not None and (project is not None or run_id is not None):
            raise ValueError("TrackerCallback takes either an existing run or project/run_id")
        self._run: tracker.Run | None = run
        self._owns_run = run is None
        self._project = project
        self._run_id = run_id or os.environ.get("TRACKER_RUN_ID") or None
        self._name = name
        self._tags = tuple(tags)
        self._store = store
        self._per_rank = per_rank
        self._init_kwargs = init_kwargs
        self._step_started: float | None = None
        self._config_recorded = False

    @property
    def run(self) -> tracker.Run | None:
        """The ``Run`` of this process, once training has begun."""
        return self._run

    def _open(self, args: Any, model: Any = None) -> tracker.Run:
        if self._run is None:
            self._run = tracker.init_run(
                self._project,
                name=self._name or _run_name(args),
                run_id=self._run_id,
                tags=self._tags,
                store=self._store,
                **self._init_kwargs,
            )
            # Reopening after on_train_end (trainer.evaluate() later) continues this run.
            self._run_id = self._run.id
        run = self._run
        if run.is_writer and not self._config_recorded:
            self._config_recorded = True
            config: dict[str, Any] = {"training_args": _readable_tree(args.to_dict())}
            model_config = getattr(model, "config", None)
            if model_config is not None and hasattr(model_config, "to_dict"):
                config["model"] = _readable_tree(model_config.to_dict())
            run["config"] = config
        return run

    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        self._open(args, model)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step_started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._per_rank or self._step_started is None:
            return
        elapsed = time.perf_counter() - self._step_started
        self._step_started = None
        figures = {"per_rank/step_time": elapsed}
        if elapsed > 0:
            samples = args.per_device_train_batch_size * args.gradient_accumulation_steps
            figures["per_rank/samples_per_second"] = samples / elapsed
        self._open(args).log(figures, step=state.global_step)

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: Mapping[str, Any] | None = None,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        run = self._open(args, model)
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
        run.log(series, step=state.global_step)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self._open(args)
        if not run.is_writer:
            return
        name = f"checkpoint-{state.global_step}"
        path = os.path.join(args.output_dir, name)
        if not os.path.isdir(path):
            return
        run[f"checkpoints/{name}/files"].track_files(path)
        run[f"checkpoints/{name}/step"] = int(state.global_step)
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
        if self._run is None:
            return
        if self._run.is_writer:
            run = self._run
            run["summary/total_flos"] = float(state.total_flos)
            run["summary/global_step"] = int(state.global_step)
        if self._owns_run:
            self._run.close("finished")
            self._run = None
        else:
            self._run.flush()


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


def _readable_tree(params: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            out[str(key)] = _readable_tree(value)
        else:
            out[str(key)] = readable(value)
    return out


# Importing this module is enough for report_to=["tracker"], even without the .pth hook.
_hf_hook.install()
