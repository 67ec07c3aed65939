"""Keras 3: ``TrackerCallback`` records a ``model.fit`` in a tracker run.

Importing this module imports Keras; ``import tracker`` never imports it.

>>> from tracker.integrations.keras import TrackerCallback
>>> model.fit(x, y, epochs=5, callbacks=[TrackerCallback(project="mnist")])
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

try:
    import keras
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tracker.integrations.keras needs Keras 3: pip install 'tracker[keras]'"
    ) from exc

import tracker
from tracker.api import init_local_run
from tracker.rank_utils import detect_rank

__all__ = ["TrackerCallback"]


class TrackerCallback(keras.callbacks.Callback):
    """Log a Keras ``fit`` to a tracker run.

    Records the fit parameters, the optimizer's config and the model summary when
    training starts; each epoch's logs at the epoch index (``train/<metric>``,
    ``val/<metric>``, ``train/lr``); with ``log_every_n_batches=N`` every N-th batch's
    logs at the global batch step (``batch/<metric>``).

    Pass an open ``run`` (the callback never closes it), or leave it out and the callback
    opens one with ``project`` and ``init_run_kwargs`` on the chief worker only (rank 0
    by ``tracker.rank_utils.detect_rank``, which reads ``TF_CONFIG``) and closes it when
    training ends. Other workers record nothing.

    >>> cb = TrackerCallback(project="mnist", log_every_n_batches=50, tags=["cnn"])
    >>> model.fit(x, y, validation_split=0.1, epochs=3, callbacks=[cb])
    """

    # Keras runs batch hooks of async-safe callbacks on a worker thread, so the training
    # thread keeps dispatching while logs are read; without this, the mere presence of a
    # batch hook turns async dispatch off. Batch hooks here only enqueue, under a lock.
    async_safe = True

    def __init__(
        self,
        run: tracker.Run | None = None,
        *,
        project: str | None = None,
        log_every_n_batches: int | None = None,
        log_model_summary: bool = True,
        **init_run_kwargs: Any,
    ) -> None:
        super().__init__()
        if log_every_n_batches is not None and log_every_n_batches < 1:
            raise ValueError(f"log_every_n_batches must be >= 1, got {log_every_n_batches}")
        if run is not None and (project is not None or init_run_kwargs):
            raise ValueError("pass either run= or project=/init_run arguments, not both")
        self._given_run = run
        self._project = project
        self._init_kwargs = init_run_kwargs
        self._every = log_every_n_batches
        self._summary = log_model_summary
        self.run: tracker.Run | None = None
        self._lock = threading.Lock()
        self._epoch_start = 0  # global step of the current epoch's first batch
        self._batches = 0  # batches seen in the current epoch
        self._pending: dict[int, dict[str, Any]] = {}
        self._next = 0  # next global step whose batch logs are due
        self._summary_due = False

    # -- hooks ----------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Frameworks copy or pickle callbacks (spawned workers, deep copies); a lock
        # cannot travel, and a fresh one is what the copy needs.
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._given_run is not None:
            self.run = self._given_run
        elif detect_rank().rank == 0:
            self.run = _open_run(self._project, self._init_kwargs)
        else:
            self.run = None
        self._epoch_start = 0
        self._batches = 0
        self._pending = {}
        self._next = 0
        if self.run is None:
            return
        fit = {k: v for k, v in (self.params or {}).items() if v is not None and k != "verbose"}
        if fit:
            self.run["fit"] = _plain(fit)
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            self.run["optimizer"] = _plain(optimizer.get_config())
        self._summary_due = self._summary and model is not None
        self._record_summary()

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._batches = 0
        self._next = _round_up(self._epoch_start, self._every or 1)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.run is None or self._every is None:
            return
        step = self._epoch_start + batch
        with self._lock:
            self._batches = max(self._batches, batch + 1)
            if step % self._every or not logs:
                return
            self._pending[step] = {f"batch/{k}": v for k, v in logs.items()}
            # Async dispatch may deliver batches out of order; a series refuses a lower
            # step than its last, so emit only the unbroken prefix of due steps.
            while self._next in self._pending:
                self.run.log(self._pending.pop(self._next), step=self._next)
                self._next += self._every

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.run is None:
            return
        with self._lock:
            # Keras waits for every dispatched batch hook before this one.
            for step in sorted(self._pending):
                self.run.log(self._pending[step], step=step)
            self._pending.clear()
            self._epoch_start += self._batches
        data: dict[str, Any] = {}
        for key, value in (logs or {}).items():
            if key in ("learning_rate", "lr"):
                data["train/lr"] = value
            elif key.startswith("val_"):
                data[f"val/{key[4:]}"] = value
            else:
                data[f"train/{key}"] = value
        if "train/lr" not in data:
            lr = _learning_rate(getattr(self.model, "optimizer", None))
            if lr is not None:
                data["train/lr"] = lr
        if data:
            self.run.log(data, step=epoch)
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
        if run is not None and run is not self._given_run:
            run.close("finished")


def _open_run(project: str | None, kwargs: dict[str, Any]) -> tracker.Run:
    # The framework already reduced the metrics and made this process the only writer,
    # so the run is this process's alone: no other rank joins a coordinator here.
    return init_local_run(project, **kwargs)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _learning_rate(optimizer: Any) -> float | None:
    if optimizer is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except Exception:  # noqa: BLE001 - a custom optimizer without a readable rate
        return None


def _plain(value: Any) -> Any:
    """Nested dicts of values the run accepts; anything else as its text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)
