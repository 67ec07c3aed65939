"""Keras 3 TrackerCallback: hook-level tests with made-up logs, then real fits.

In-process fits use whatever backend Keras has (KERAS_BACKEND); the torch backend and the
two-worker MultiWorkerMirroredStrategy run in child processes, since Keras picks its
backend at import.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="needs keras (pip install 'tracker-dl[keras]')")

import tracker  # noqa: E402
from tracker.integrations.keras import TrackerCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _model() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse", metrics=["mae"])
    return model


def _data(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((n, 4), dtype=np.float32)
    return x, x.sum(axis=1, keepdims=True)


def _only_run(store: str) -> Any:
    runs = tracker.list_runs(store=store)
    assert len(runs) == 1, runs
    return tracker.read_run(runs[0]["id"], store=store)


def _runs_oldest_first(store: str) -> list[Any]:
    runs = sorted(tracker.list_runs(store=store), key=lambda r: r["created_at"])
    return [tracker.read_run(r["id"], store=store) for r in runs]


def _lower_step_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "lower than its last step" in str(w.message)]


class _BatchLogs(keras.callbacks.Callback):
    """What Keras hands callbacks at each batch end, to compare with what was logged."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.losses.append(float((logs or {})["loss"]))


def _fit(model: keras.Model, cb: TrackerCallback, epochs: int, **kwargs: Any) -> Any:
    """48 samples, a quarter for validation, batches of 8: 5 training batches an epoch."""
    x, y = _data(48)
    return model.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        validation_split=0.25,
        verbose=0,
        callbacks=[cb],
        **kwargs,
    )


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


# -- hooks fed made-up logs ----------------------------------------------------------------


def test_batches_out_of_order_are_all_kept_in_step_order(store: str) -> None:
    run = tracker.init_run("k", store=store, system_metrics=False)
    cb = TrackerCallback(run, log_every_n_batches=2)
    cb.set_model(_model())
    cb.set_params({"epochs": 2, "steps": 5, "verbose": 0})
    cb.on_train_begin()
    for epoch in range(2):
        cb.on_epoch_begin(epoch)
        # Async dispatch can deliver batch hooks out of order.
        for batch in (1, 0, 4, 3, 2):
            cb.on_train_batch_end(batch, {"loss": float(10 * epoch + batch)})
        cb.on_epoch_end(epoch, {"loss": 1.0 - epoch, "val_loss": 2.0, "learning_rate": 0.05})
    cb.on_train_end()
    assert run.status == "running"  # a run passed in is the caller's to close
    run.close()
    r = tracker.read_run(run.id, store=store)
    batch = r["batch/loss"].fetch_values()
    # Global steps 0..9 over two epochs of 5; every 2nd is kept.
    assert batch.step.tolist() == [0, 2, 4, 6, 8]
    assert batch.value.tolist() == [0.0, 2.0, 4.0, 11.0, 13.0]
    assert r["train/loss"].fetch_values().value.tolist() == [1.0, 0.0]
    assert r["val/loss"].fetch_values().step.tolist() == [0, 1]
    assert r["train/lr"].fetch_values().value.tolist() == [0.05, 0.05]
    assert r["config/fit/epochs"].fetch() == 2 and r["config/fit/steps"].fetch() == 5
    assert r["config/optimizer/class"].fetch() == "SGD"
    assert r["model/num_params"].fetch() == 4 * 3 + 3 + 3 + 1


def test_resume_with_epochs_of_unknown_size_goes_on_after_the_runs_last_step(store: str) -> None:
    # Neither params["steps"] (a dataset of unknown size) nor this callback knows where
    # epoch 2's batches start: the run is continued as it is, batches after its last step.
    run = tracker.init_run("k", store=store, system_metrics=False)
    run.log({"batch/loss": 3.0}, step=7)
    run.log({"train/loss": 2.0}, step=1)
    run.close()
    cb = TrackerCallback(
        project="k", store=store, run_id=run.id, log_every_n_batches=1, system_metrics=False
    )
    cb.set_model(_model())
    cb.set_params({"epochs": 3, "steps": None, "verbose": 0})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cb.on_train_begin()
        cb.on_epoch_begin(2)
        cb.on_train_batch_end(0, {"loss": 0.5})
        cb.on_train_batch_end(1, {"loss": 0.4})
        cb.on_epoch_end(2, {"loss": 0.45})
        cb.on_train_end()
    assert not _lower_step_warnings(caught)
    r = tracker.read_run(run.id, store=store)
    assert r.status == "finished"
    batch = r["batch/loss"].fetch_values(include_superseded=True)
    assert batch.step.tolist() == [7, 8, 9]
    assert batch.value.tolist() == [3.0, 0.5, 0.4]
    assert r["batch/loss"].fetch_values().step.tolist() == [7, 8, 9]
    assert r["train/loss"].fetch_values().step.tolist() == [1, 2]


def test_a_fit_that_raised_leaves_a_failed_run_and_the_next_fit_goes_on(store: str) -> None:
    cb = TrackerCallback(project="k", store=store, system_metrics=False)
    cb.set_model(_model())
    cb.set_params({"epochs": 2, "steps": 1, "verbose": 0})
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    cb.on_epoch_end(0, {"loss": 1.0})
    # Keras skips on_train_end when fit raises; the next fit begins from scratch.
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    cb.on_epoch_end(0, {"loss": 0.5})
    cb.on_train_end()
    first, second = _runs_oldest_first(store)
    assert (first.status, second.status) == ("failed", "finished")
    assert second["lineage/previous_run"].fetch() == first.id
    assert first["train/loss"].fetch_values().value.tolist() == [1.0]
    assert second["train/loss"].fetch_values().value.tolist() == [0.5]


def test_non_chief_worker_never_touches_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    store = tmp_path / "store"
    cb = TrackerCallback(project="k", store=str(store), log_every_n_batches=1)
    cb.set_model(_model())
    cb.set_params({"epochs": 1, "steps": 1})
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    cb.on_train_batch_end(0, {"loss": 1.0})
    cb.on_epoch_end(0, {"loss": 1.0})
    cb.on_train_end()
    assert cb.run is None
    assert not store.exists()


def test_either_run_or_project() -> None:
    run = tracker.init_run(mode="disabled")
    with pytest.raises(ValueError, match="either an open run"):
        TrackerCallback(run, project="x")
    with pytest.raises(ValueError, match="log_every_n_batches"):
        TrackerCallback(log_every_n_batches=0)


# -- real fits ------------------------------------------------------------------------------


def test_fit_creates_and_closes_a_run(store: str) -> None:
    x, y = _data(48)
    cb = TrackerCallback(project="k", store=store, log_every_n_batches=2, system_metrics=False)
    _model().fit(x, y, batch_size=8, epochs=2, validation_split=0.25, verbose=0, callbacks=[cb])
    r = _only_run(store)
    assert r.status == "finished"
    assert r["train/loss"].fetch_values().step.tolist() == [0, 1]
    assert len(r["val/loss"].fetch_values()) == 2
    assert len(r["val/mae"].fetch_values()) == 2
    assert r["train/lr"].fetch_values().value == pytest.approx([0.05, 0.05])
    # 36 training samples in batches of 8: 5 batches an epoch, 10 in all.
    assert r["batch/loss"].fetch_values().step.tolist() == [0, 2, 4, 6, 8]
    assert r["config/fit/epochs"].fetch() == 2
    assert "dense" in r["model/summary"].fetch().lower()
    assert r["config/optimizer/learning_rate"].fetch() == pytest.approx(0.05)


def test_a_model_built_by_its_first_batch_still_gets_its_summary(store: str) -> None:
    x, y = _data(16)
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    run = tracker.init_run("k", store=store, system_metrics=False)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[TrackerCallback(run)])
    run.close()
    r = tracker.read_run(run.id, store=store)
    assert r["model/num_params"].fetch() == 5
    # Keras numbers the names of optimizers made in one process (adam, adam_1, ...).
    assert r["config/optimizer/name"].fetch().lower().startswith("adam")
    assert r["config/optimizer/class"].fetch() == "Adam"


def test_a_second_fit_gets_its_own_linked_run_with_every_value(store: str) -> None:
    x, y = _data(48)
    model = _model()
    cb = TrackerCallback(project="k", store=store, log_every_n_batches=2, system_metrics=False)
    histories, batches = [], []
    for _ in range(2):  # the second fit (fine-tuning) starts from epoch 0 again
        seen = _BatchLogs()
        history = model.fit(
            x, y, batch_size=8, epochs=2, validation_split=0.25, verbose=0, callbacks=[cb, seen]
        )
        histories.append(history.history)
        batches.append(seen.losses)
    first, second = _runs_oldest_first(store)
    assert first.status == second.status == "finished"
    assert f"group:{first.id}" in first.tags and f"group:{first.id}" in second.tags
    assert second["lineage/previous_run"].fetch() == first.id
    for r, history, losses in zip((first, second), histories, batches, strict=True):
        train = r["train/loss"].fetch_values()
        assert train.step.tolist() == [0, 1]
        assert train.value.tolist() == pytest.approx(history["loss"])
        assert r["val/loss"].fetch_values().value.tolist() == pytest.approx(history["val_loss"])
        batch = r["batch/loss"].fetch_values()
        assert batch.step.tolist() == [0, 2, 4, 6, 8]
        assert batch.value.tolist() == pytest.approx(losses[0::2])
        assert len(r["batch/loss"].fetch_values(include_superseded=True)) == 5
        assert r["config/fit/epochs"].fetch() == 2
        assert r["model/num_params"].fetch() == 4 * 3 + 3 + 3 + 1


def test_a_second_fit_into_a_given_run_continues_after_its_last_step(store: str) -> None:
    run = tracker.init_run("k", store=store, system_metrics=False)
    model = _model()
    cb = TrackerCallback(run, log_every_n_batches=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = _fit(model, cb, 2).history
        second = _fit(model, cb, 2).history
        run.flush()
    assert not _lower_step_warnings(caught)
    assert run.status == "running"  # the caller's to close
    run.close()
    (r,) = _runs_oldest_first(store)
    # The first fit's last step was batch 8; the second starts at 9, epochs and batches.
    train = r["train/loss"].fetch_values()
    assert train.step.tolist() == [0, 1, 9, 10]
    assert train.value.tolist() == pytest.approx(first["loss"] + second["loss"])
    assert r["batch/loss"].fetch_values().step.tolist() == [0, 2, 4, 6, 8, 9, 11, 13, 15, 17]
    assert r["val/loss"].fetch_values().step.tolist() == [0, 1, 9, 10]


def test_fit_with_initial_epoch_continues_the_same_run(store: str) -> None:
    model = _model()
    cb = TrackerCallback(project="k", store=store, log_every_n_batches=2, system_metrics=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = _fit(model, cb, 2).history
        second = _fit(model, cb, 4, initial_epoch=2).history
    assert not _lower_step_warnings(caught)
    (r,) = _runs_oldest_first(store)
    assert r.status == "finished"
    train = r["train/loss"].fetch_values()
    assert train.step.tolist() == [0, 1, 2, 3]
    assert train.value.tolist() == pytest.approx(first["loss"] + second["loss"])
    # Batches go on from epoch 2's first (index 10); nothing is superseded.
    batch = r["batch/loss"].fetch_values(include_superseded=True)
    assert batch.step.tolist() == list(range(0, 20, 2))
    assert r["batch/loss"].fetch_values().step.tolist() == list(range(0, 20, 2))


def test_resuming_in_a_new_process_by_run_id(store: str) -> None:
    model = _model()
    cb = TrackerCallback(project="k", store=store, log_every_n_batches=5, system_metrics=False)
    first = _fit(model, cb, 3).history
    (r,) = _runs_oldest_first(store)
    # A new callback (as a restarted job builds it) resumes the run from epoch 2's
    # checkpoint. It knows nothing of the first fit: epoch 2's batches start at 2 * 5
    # (params["steps"]), and the run is rewound to the step before them (9).
    resumed = TrackerCallback(
        project="k", store=store, run_id=r.id, log_every_n_batches=5, system_metrics=False
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _fit(model, resumed, 3, initial_epoch=2).history
    assert not _lower_step_warnings(caught)
    (r,) = _runs_oldest_first(store)
    assert r.status == "finished"
    # The abandoned attempt's batch 10 is superseded...
    assert r["batch/loss"].fetch_values().step.tolist() == [0, 5, 10]
    assert r["batch/loss"].fetch_values(include_superseded=True).step.tolist() == [0, 5, 10, 10]
    # ...but its epoch 2 (step 2, below the rewind) is kept next to the new one.
    train = r["train/loss"].fetch_values()
    assert train.step.tolist() == [0, 1, 2, 2]
    assert train.value.tolist() == pytest.approx(first["loss"] + again["loss"])
    newest = r["train/loss"].fetch_values(per_step="last")
    assert newest.value.tolist() == pytest.approx(first["loss"][:2] + again["loss"])


def test_initial_epoch_before_the_last_epoch_rewinds_an_epoch_only_run(store: str) -> None:
    model = _model()
    cb = TrackerCallback(project="k", store=store, system_metrics=False)
    first = _fit(model, cb, 4).history
    again = _fit(model, cb, 4, initial_epoch=2).history  # back to epoch 2's checkpoint
    (r,) = _runs_oldest_first(store)
    shown = r["train/loss"].fetch_values()
    assert shown.step.tolist() == [0, 1, 2, 3]
    assert shown.value.tolist() == pytest.approx(first["loss"][:2] + again["loss"])
    everything = r["train/loss"].fetch_values(include_superseded=True)
    assert everything.step.tolist() == [0, 1, 2, 2, 3, 3]


def test_initial_epoch_before_the_last_with_batches_keeps_finished_batches(store: str) -> None:
    # Batch steps run ahead of epoch steps in one run, so the rewind is to the step
    # before epoch 1's first batch (4): the batches of epoch 0 stay, the abandoned
    # attempt's later ones are superseded, and its epoch-2 point stays next to the new.
    model = _model()
    cb = TrackerCallback(project="k", store=store, log_every_n_batches=1, system_metrics=False)
    first = _fit(model, cb, 3).history
    with pytest.warns(RuntimeWarning, match="lower than its last step"):
        again = _fit(model, cb, 3, initial_epoch=1).history
    (r,) = _runs_oldest_first(store)
    batch = r["batch/loss"].fetch_values()
    assert batch.step.tolist() == list(range(15))
    assert len(r["batch/loss"].fetch_values(include_superseded=True)) == 25
    train = r["train/loss"].fetch_values()
    assert train.step.tolist() == [0, 1, 1, 2, 2]
    newest = r["train/loss"].fetch_values(per_step="last")
    assert newest.value.tolist() == pytest.approx(first["loss"][:1] + again["loss"])


class _RatesUsed(keras.callbacks.Callback):
    """The learning rate each training batch is about to use, read as it begins."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        lr = self.model.optimizer.learning_rate
        self.rates.append(float(keras.ops.convert_to_numpy(lr)))


def test_the_learning_rate_logged_is_the_one_each_epoch_and_batch_used(store: str) -> None:
    # Halved at every step: the rate after an epoch is not the one its batches used.
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    cb = TrackerCallback(project="k", store=store, log_every_n_batches=1, system_metrics=False)
    used = _RatesUsed()
    x, y = _data(48)
    model.fit(x, y, batch_size=8, epochs=2, validation_split=0.25, verbose=0, callbacks=[used, cb])
    assert used.rates == pytest.approx([0.1 * 0.5**i for i in range(10)])
    r = _only_run(store)
    batch = r["batch/lr"].fetch_values()
    assert batch.step.tolist() == list(range(10))
    assert batch.value.tolist() == pytest.approx(used.rates)
    # Each epoch's rate is the one its last batch used (5 batches an epoch).
    epoch = r["train/lr"].fetch_values()
    assert epoch.step.tolist() == [0, 1]
    assert epoch.value.tolist() == pytest.approx([used.rates[4], used.rates[9]])


@pytest.mark.parametrize("restore", [True, False], ids=["restore", "keep-last"])
@pytest.mark.parametrize("first", ["tracker", "early-stopping"])
def test_early_stopping_records_where_it_stopped_and_its_best_epoch(
    store: str, restore: bool, first: str
) -> None:
    # No epoch after the first improves by 1e9: patience 2 stops the fit at epoch 2.
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=2, min_delta=1e9, restore_best_weights=restore
    )
    cb = TrackerCallback(project="k", store=store, system_metrics=False)
    model = _model()
    x, y = _data(48)
    callbacks = [cb, stop] if first == "tracker" else [stop, cb]
    history = model.fit(
        x, y, batch_size=8, epochs=30, validation_split=0.25, verbose=0, callbacks=callbacks
    ).history
    assert len(history["loss"]) == 3
    r = _only_run(store)
    assert r["config/fit/epochs"].fetch() == 30  # what was asked for...
    assert r["summary/epochs_run"].fetch() == 3  # ...and what ran
    assert r["train/loss"].fetch_values().step.tolist() == [0, 1, 2]
    assert r["config/early_stopping/monitor"].fetch() == "val_loss"
    assert r["config/early_stopping/patience"].fetch() == 2
    assert r["config/early_stopping/restore_best_weights"].fetch() is restore
    assert r["early_stopping/stopped"].fetch() is True
    assert r["early_stopping/stopped_epoch"].fetch() == 2
    assert r["early_stopping/best_epoch"].fetch() == 0
    assert r["early_stopping/best"].fetch() == pytest.approx(history["val_loss"][0])
    assert r["early_stopping/restored_weights"].fetch() is restore


def test_a_fit_without_early_stopping_records_the_epochs_it_ran(store: str) -> None:
    cb = TrackerCallback(project="k", store=store, system_metrics=False)
    _fit(_model(), cb, 2)
    r = _only_run(store)
    assert r["summary/epochs_run"].fetch() == 2
    assert not any(p.startswith(("early_stopping/", "config/early_stopping/")) for p in r.paths())


_TORCH_FIT = """
import sys
import numpy as np
import keras
import tracker
from tracker.integrations.keras import TrackerCallback

assert keras.backend.backend() == "torch"
x = np.random.default_rng(0).random((32, 4), dtype=np.float32)
y = x.sum(axis=1, keepdims=True)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
cb = TrackerCallback(project="k", store=sys.argv[1], log_every_n_batches=1,
                     system_metrics=False)
model.fit(x, y, batch_size=8, epochs=2, validation_split=0.25, verbose=0, callbacks=[cb])
"""


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_fit_on_the_torch_backend(tmp_path: Path, store: str) -> None:
    script = tmp_path / "fit_torch.py"
    script.write_text(_TORCH_FIT)
    proc = subprocess.run(
        [sys.executable, str(script), store],
        env=_env(KERAS_BACKEND="torch"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = _only_run(store)
    assert r.status == "finished"
    assert r["train/loss"].fetch_values().step.tolist() == [0, 1]
    assert len(r["val/loss"].fetch_values()) == 2
    # 24 training samples in batches of 8: every one of 6 batches, in order.
    assert r["batch/loss"].fetch_values().step.tolist() == [0, 1, 2, 3, 4, 5]


_MULTI_WORKER = """
import sys
import numpy as np
import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()
import keras
import keras.src.backend.tensorflow.trainer as tf_trainer
from keras.src import tree

# Keras 3.15 on TensorFlow 2.21 cannot fit under MultiWorkerMirroredStrategy as shipped:
# it reduces the whole (x, y) batch as one value when building the model, and reduces
# scalar metrics along axis 0. Both are patched to reduce each tensor over replicas.
def _mean_over_replicas(value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.reduce("MEAN", value, axis=None)
    return value

def _symbolic_build(self, iterator=None, data_batch=None):
    if iterator is not None:
        for _, _, it in iterator:
            data_batch = tree.map_structure(_mean_over_replicas, next(it))
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)

_reduce_per_replica = tf_trainer.reduce_per_replica

def _reduce(values, strategy, reduction):
    if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
        return tree.map_structure(_mean_over_replicas, values)
    return _reduce_per_replica(values, strategy, reduction)

tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _symbolic_build
tf_trainer.reduce_per_replica = _reduce

from tracker.integrations.keras import TrackerCallback

x = np.random.default_rng(0).random((64, 4), dtype=np.float32)
y = x.sum(axis=1, keepdims=True)
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
cb = TrackerCallback(project="mw", store=sys.argv[1], log_every_n_batches=1,
                     system_metrics=False)
model.fit(data, epochs=2, verbose=0, callbacks=[cb])
"""


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
def test_multi_worker_mirrored_strategy_writes_one_run_from_the_chief(tmp_path: Path) -> None:
    script = tmp_path / "multi_worker.py"
    script.write_text(textwrap.dedent(_MULTI_WORKER))
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    # Each worker gets its own store directory, so the test can see that only the
    # chief's was ever written; in a real job they share one.
    stores = [tmp_path / "store", tmp_path / "store-worker1"]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(stores[index])],
                env=_env(TF_CONFIG=json.dumps(tf_config), KERAS_BACKEND="tensorflow"),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert not stores[1].exists()
    r = _only_run(str(stores[0]))
    assert r.status == "finished"
    assert r["train/loss"].fetch_values().step.tolist() == [0, 1]
    # 64 samples in global batches of 16: 4 steps an epoch.
    assert r["batch/loss"].fetch_values().step.tolist() == list(range(8))
