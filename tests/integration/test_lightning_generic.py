"""Lightning's generic logger checks, run on TrackerLogger beside Lightning's own loggers.

Lightning tests every logger it ships through the same scenarios (its generic logger
tests): metrics reach the logger during ``fit`` and ``test`` at Lightning's steps, the
logger pickles alone and inside a Trainer, ``name``/``version``/``save_dir``/``log_dir``
agree with where Lightning puts checkpoints, ``strategy="ddp_spawn"`` gets the experiment
ready on rank 0 and a stand-in elsewhere, several loggers serve one Trainer, hyperparameters
come as a ``Namespace``, a dict, nested or numpy values, ``after_save_checkpoint`` and
``finalize`` are called with the status. The same checks here, written for this suite:
each runs TrackerLogger, CSVLogger and TensorBoardLogger through a real Trainer, and adds
for TrackerLogger what the store must then hold.
"""

from __future__ import annotations

import os
import pickle
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning", reason="needs lightning (pip install 'tracker-dl[lightning]')")
torch = pytest.importorskip("torch", reason="needs torch")

import numpy as np  # noqa: E402
from lightning.pytorch import Callback, Trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.demos.boring_classes import BoringModel  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from lightning.pytorch.loggers.logger import DummyExperiment  # noqa: E402

import tracker  # noqa: E402
from tracker.integrations.lightning import TrackerLogger  # noqa: E402


def _tensorboard_available() -> bool:
    from importlib.util import find_spec

    return find_spec("tensorboard") is not None or find_spec("tensorboardX") is not None


LOGGERS = [
    pytest.param(TrackerLogger, id="tracker"),
    pytest.param(CSVLogger, id="csv"),
    pytest.param(
        TensorBoardLogger,
        id="tensorboard",
        marks=pytest.mark.skipif(
            not _tensorboard_available(),
            reason="TensorBoardLogger needs tensorboard or tensorboardX (pip install tensorboardX)",
        ),
    ),
]
PROJECT = "generic"


def _arguments(logger_class: type, tmp_path: Path, store: str) -> dict[str, Any]:
    if issubclass(logger_class, TrackerLogger):
        return {"project": PROJECT, "store": store, "save_dir": str(tmp_path)}
    return {"save_dir": str(tmp_path)}


def _make(logger_class: type, tmp_path: Path, store: str, **kwargs: Any) -> Any:
    return logger_class(**_arguments(logger_class, tmp_path, store), **kwargs)


def _quiet(tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = dict(
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    options.update(kwargs)
    return options


def _read(logger: TrackerLogger, store: str) -> Any:
    assert logger.version is not None
    return tracker.read_run(logger.version, project=PROJECT, store=store)


# -- metrics during fit and test ------------------------------------------------------------


class HistoryModel(BoringModel):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        loss = self.step(batch)
        self.log("train_some_val", loss)
        return {"loss": loss}

    def on_validation_epoch_end(self) -> None:
        self.log_dict({"early_stop_on": torch.tensor(1.0), "val_loss": torch.tensor(0.5)})

    def on_test_epoch_end(self) -> None:
        self.log("test_loss", torch.tensor(2.0))


def _with_history(logger_class: type) -> type:
    class WithHistory(logger_class):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.history: list[tuple[int, dict[str, float]]] = []

        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            super().log_metrics(metrics, step)
            self.history.append((step, dict(metrics)))

    return WithHistory


@pytest.mark.parametrize("logger_class", LOGGERS)
def test_fit_then_test_metrics_at_lightning_steps(
    tmp_path: Path, store: str, logger_class: type
) -> None:
    logger = _make(_with_history(logger_class), tmp_path, store)
    trainer = Trainer(
        logger=logger,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        log_every_n_steps=1,
        **_quiet(tmp_path),
    )
    trainer.fit(HistoryModel())
    trainer.test()

    assert [(step, sorted(metrics)) for step, metrics in logger.history] == [
        (0, ["epoch", "train_some_val"]),
        (0, ["early_stop_on", "epoch", "val_loss"]),
        (1, ["epoch", "test_loss"]),
    ]
    if isinstance(logger, TrackerLogger):
        # Every value, read back from the one run that fit opened and test continued.
        assert [row["id"] for row in tracker.list_runs(store=store)] == [logger.version]
        r = _read(logger, store)
        assert r.status == "finished"
        for step, metrics in logger.history:
            for key, value in metrics.items():
                series = r[key].fetch_values()
                assert (step, float(value)) in zip(series.step, series.value, strict=True)


# -- pickling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("logger_class", LOGGERS)
def test_logger_pickles_alone_and_inside_a_trainer(
    tmp_path: Path, store: str, logger_class: type
) -> None:
    logger = _make(logger_class, tmp_path, store)
    _ = logger.experiment  # a live experiment must stay out of the pickle
    logger.log_metrics({"a": 1.0}, step=0)
    logger.save()
    pickle.dumps(logger)
    trainer = Trainer(logger=logger, max_epochs=1, **_quiet(tmp_path))

    restored = pickle.loads(pickle.dumps(trainer))
    restored.logger.log_metrics({"acc": 1.0}, step=1)
    assert restored.logger.name == logger.name
    assert restored.logger.save_dir == logger.save_dir
    assert restored.logger.version == logger.version
    assert restored.logger.log_dir == logger.log_dir
    restored.logger.finalize("success")
    logger.finalize("success")
    if isinstance(logger, TrackerLogger):
        assert {"a", "acc"} <= set(_read(logger, store).paths())


@pytest.mark.parametrize("logger_class", LOGGERS)
def test_a_copy_pickled_before_any_run_agrees_on_the_version(
    tmp_path: Path, store: str, logger_class: type
) -> None:
    logger = _make(logger_class, tmp_path, store)
    copy = pickle.loads(pickle.dumps(logger))
    assert copy.version == logger.version
    assert copy.log_dir == logger.log_dir
    if isinstance(logger, TrackerLogger):
        # The id is chosen when the logger is pickled, so the original and every copy
        # (a spawned worker's) write one run; choosing it creates nothing yet.
        assert logger.version is not None
        assert not Path(store).exists()
        logger.log_metrics({"here": 1.0}, step=0)
        copy.log_metrics({"there": 2.0}, step=1)
        copy.finalize("success")
        logger.finalize("success")
        assert [row["id"] for row in tracker.list_runs(store=store)] == [logger.version]
        assert {"here", "there"} <= set(_read(logger, store).paths())


@pytest.mark.parametrize("logger_class", LOGGERS)
def test_multiple_loggers_pickle_inside_a_trainer(
    tmp_path: Path, store: str, logger_class: type
) -> None:
    first = _make(logger_class, tmp_path / "one", store)
    second = _make(logger_class, tmp_path / "two", store)
    trainer = Trainer(logger=[first, second], **_quiet(tmp_path))
    restored = pickle.loads(pickle.dumps(trainer))
    assert [logger.version for logger in restored.loggers] == [first.version, second.version]
    for logger in restored.loggers:
        logger.log_metrics({"acc": 1.0}, step=0)
        logger.finalize("success")
    if isinstance(first, TrackerLogger):
        assert first.version != second.version
        for logger in (first, second):
            r = _read(logger, store)
            assert list(r["acc"].fetch_values().value) == [1.0]
            assert r.status == "finished"


# -- where things go: name, version, save_dir, log_dir ----------------------------------------


@pytest.mark.parametrize("logger_class", LOGGERS)
def test_name_version_and_dirs_match_where_checkpoints_go(
    tmp_path: Path, store: str, logger_class: type
) -> None:
    logger = _make(logger_class, tmp_path / "logs", store)
    assert logger.save_dir == str(tmp_path / "logs")
    assert isinstance(logger.name, str) and logger.name
    trainer = Trainer(
        logger=logger,
        max_steps=2,
        limit_val_batches=0,
        log_every_n_steps=1,
        **_quiet(tmp_path / "root"),
    )
    trainer.fit(BoringModel())

    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    assert logger.log_dir == os.path.join(logger.save_dir, logger.name, version)
    checkpoint = trainer.checkpoint_callback
    assert checkpoint is not None
    assert Path(checkpoint.dirpath) == Path(logger.log_dir) / "checkpoints"
    assert os.listdir(checkpoint.dirpath)
    if isinstance(logger, TrackerLogger):
        assert logger.version == _read(logger, store).id


# -- ddp_spawn: the experiment on rank 0 at setup, a stand-in elsewhere, one version ---------


class ExperimentReadyAtSetup(Callback):
    def setup(self, trainer: Any, pl_module: Any, stage: Any = None) -> None:
        if trainer.global_rank > 0:
            return
        logger = trainer.logger
        if isinstance(logger, TrackerLogger):
            assert logger._runs.run is not None
        else:
            assert logger._experiment is not None


class StandInOffRankZero(Callback):
    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        is_dummy = isinstance(trainer.logger.experiment, DummyExperiment)
        assert is_dummy != trainer.is_global_zero
        if is_dummy:
            assert pl_module.logger.experiment.anything(foo="bar") is None


class WriteVersion(Callback):
    """Each spawned rank writes the logger's version to a file the test reads."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        path = os.path.join(self.directory, f"version-{trainer.global_rank}")
        Path(path).write_text(str(trainer.logger.version))


@pytest.mark.distributed
@pytest.mark.parametrize("logger_class", LOGGERS)
def test_ddp_spawn_initialisation(tmp_path: Path, store: str, logger_class: type) -> None:
    from torch.multiprocessing.spawn import ProcessExitedException

    for attempt in range(2):
        logger = _make(logger_class, tmp_path, store)
        trainer = Trainer(
            logger=logger,
            strategy="ddp_spawn",
            devices=2,
            max_steps=1,
            limit_val_batches=0,
            callbacks=[
                ExperimentReadyAtSetup(),
                StandInOffRankZero(),
                WriteVersion(str(tmp_path)),
            ],
            **_quiet(tmp_path),
        )
        try:
            trainer.fit(BoringModel())
            break
        except ProcessExitedException as exc:
            # A spawned worker aborting at exit, after its fit ("terminate called without
            # an active exception": gloo's threads torn down at interpreter exit), happens
            # now and then on a loaded 2-core machine with Lightning's own CSV and
            # TensorBoard loggers as well. Only that is retried, once, in a fresh place.
            if attempt or "SIGABRT" not in str(exc):
                raise
            tmp_path, store = tmp_path / "again", str(tmp_path / "again" / "store")
            tmp_path.mkdir()
    ranks = {rank: (tmp_path / f"version-{rank}").read_text() for rank in (0, 1)}
    if isinstance(logger, TrackerLogger):
        # Chosen before the logger was pickled: both workers and this process agree.
        assert ranks[0] == ranks[1] == str(logger.version)
        runs = tracker.list_runs(store=store)
        assert [(row["id"], row["status"]) for row in runs] == [(logger.version, "finished")]
    else:
        # Lightning's own loggers pick their version on rank 0 (this process, which never
        # ran the fit, reads the directory again and sees the next free one).
        assert ranks[0] in ("0", "version_0")


# -- several loggers in one Trainer --------------------------------------------------------------


@pytest.mark.parametrize("logger_class", LOGGERS)
def test_multiple_loggers_in_one_trainer(tmp_path: Path, store: str, logger_class: type) -> None:
    loggers = [
        _make(_with_history(logger_class), tmp_path / "one", store),
        _make(_with_history(logger_class), tmp_path / "two", store),
        TrackerLogger(project="beside", store=store),
    ]
    model = HistoryModel()
    trainer = Trainer(
        logger=loggers,
        max_steps=2,
        limit_val_batches=0,
        log_every_n_steps=1,
        **_quiet(tmp_path),
    )
    trainer.fit(model)
    assert trainer.logger is loggers[0]
    for logger in loggers[:2]:
        assert [step for step, metrics in logger.history if "train_some_val" in metrics] == [0, 1]
    runs = {row["id"]: row for row in tracker.list_runs(store=store)}
    trackers = [logger for logger in loggers if isinstance(logger, TrackerLogger)]
    assert set(runs) == {logger.version for logger in trackers}
    for logger in trackers:
        assert runs[logger.version]["status"] == "finished"
        r = tracker.read_run(logger.version, store=store)
        assert list(r["train_some_val"].fetch_values().step) == [0, 1]
        # Each logger's own per-rank figures, once.
        assert list(r["per_rank/step_time"].fetch_values().step) == [0, 1]


# -- hyperparameters --------------------------------------------------------------------------


NUMPY_PARAMS = {
    "np_bool": np.bool_(1),
    "np_byte": np.byte(2),
    "np_intc": np.intc(3),
    "np_int": np.int_(4),
    "np_longlong": np.longlong(5),
    "np_single": np.single(6.0),
    "np_double": np.double(8.5),
    "np_csingle": np.csingle(7 + 2j),
    "np_cdouble": np.cdouble(9 + 4j),
}
# What Lightning's own sanitising makes of them: numbers as numbers, complex as text.
NUMPY_STORED = {
    "np_bool": True,
    "np_byte": 2,
    "np_intc": 3,
    "np_int": 4,
    "np_longlong": 5,
    "np_single": 6.0,
    "np_double": 8.5,
    "np_csingle": "(7+2j)",
    "np_cdouble": "(9+4j)",
}


@pytest.mark.parametrize("logger_class", LOGGERS)
@pytest.mark.parametrize("form", ["namespace", "dict"])
def test_log_hyperparams_namespace_dict_nested_and_numpy(
    tmp_path: Path, store: str, logger_class: type, form: str
) -> None:
    params: dict[str, Any] = {
        "lr": 0.01,
        "layers": [64, 32],
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "activation": torch.nn.ReLU,
        "tensor": torch.tensor(0.25),
        **NUMPY_PARAMS,
    }
    logger = _make(logger_class, tmp_path, store)
    logger.log_hyperparams(Namespace(**params) if form == "namespace" else params)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.save()
    logger.finalize("success")
    if isinstance(logger, TrackerLogger):
        r = _read(logger, store)
        assert r["config/lr"].fetch() == 0.01
        assert r["config/layers"].fetch() == [64, 32]
        assert r["config/optimizer/name"].fetch() == "sgd"
        assert r["config/optimizer/momentum"].fetch() == 0.9
        assert r["config/activation"].fetch() == "ReLU"
        assert r["config/tensor"].fetch() == 0.25
        for key, stored in NUMPY_STORED.items():
            assert r[f"config/{key}"].fetch() == stored, key
        assert r.status == "finished"


class HyperModel(BoringModel):
    def __init__(self, lr: float = 0.1, batch_size: int = 2, nested: Any = None) -> None:
        super().__init__()
        self.save_hyperparameters()


@pytest.mark.parametrize("logger_class", LOGGERS)
def test_save_hyperparameters_reach_the_logger_during_fit(
    tmp_path: Path, store: str, logger_class: type
) -> None:
    logged: list[Any] = []

    class Recording(logger_class):  # type: ignore[valid-type, misc]
        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            logged.append(params)
            super().log_hyperparams(params, *args, **kwargs)

    logger = _make(Recording, tmp_path, store)
    model = HyperModel(nested={"depth": 3, "widths": (8, 4)})
    Trainer(logger=logger, max_steps=1, limit_val_batches=0, **_quiet(tmp_path)).fit(model)
    assert logged and dict(logged[0])["lr"] == 0.1
    if isinstance(logger, TrackerLogger):
        r = _read(logger, store)
        assert r["config/lr"].fetch() == 0.1
        assert r["config/batch_size"].fetch() == 2
        assert r["config/nested/depth"].fetch() == 3
        assert r["config/nested/widths"].fetch() == [8, 4]


# -- the Tuner leaves the logger in place -------------------------------------------------------


@pytest.mark.parametrize("logger_class", LOGGERS)
@pytest.mark.parametrize("tuner_method", ["lr_find", "scale_batch_size"])
def test_tuner_leaves_the_logger_in_place(
    tmp_path: Path, store: str, logger_class: type, tuner_method: str
) -> None:
    from lightning.pytorch.tuner.tuning import Tuner

    logger = _make(logger_class, tmp_path, store)
    model = HyperModel()
    trainer = Trainer(logger=logger, max_epochs=1, **_quiet(tmp_path))
    tuner = Tuner(trainer)
    if tuner_method == "lr_find":
        tuner.lr_find(model, num_training=3)
    else:
        tuner.scale_batch_size(model, max_trials=2, steps_per_trial=1)
    assert trainer.logger is logger
    assert model.logger is logger
    if isinstance(logger, TrackerLogger):
        # The search trained with a stand-in logger: no run of its own here.
        assert len(tracker.list_runs(store=store)) <= 1


# -- after_save_checkpoint and finalize ----------------------------------------------------------


def _with_hooks(logger_class: type) -> type:
    class WithHooks(logger_class):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.saved: list[str] = []
            self.statuses: list[str] = []

        def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
            # save_top_k=1 without a monitor: the file just saved is the best one.
            self.saved.append(os.path.basename(checkpoint_callback.best_model_path))
            super().after_save_checkpoint(checkpoint_callback)

        def finalize(self, status: str) -> None:
            self.statuses.append(status)
            super().finalize(status)

    return WithHooks


@pytest.mark.parametrize("logger_class", LOGGERS)
def test_after_save_checkpoint_sees_every_save(
    tmp_path: Path, store: str, logger_class: type
) -> None:
    logger = _make(_with_hooks(logger_class), tmp_path, store)
    # save_top_k=1: each save deletes the one before it.
    checkpoint = ModelCheckpoint(
        dirpath=str(tmp_path / "c"), every_n_train_steps=1, save_top_k=1, save_last=False
    )
    trainer = Trainer(
        logger=logger,
        max_steps=3,
        limit_val_batches=0,
        callbacks=[checkpoint],
        **_quiet(tmp_path),
    )
    trainer.fit(BoringModel())
    assert logger.saved == [f"epoch=0-step={step}.ckpt" for step in (1, 2, 3)]
    assert os.listdir(tmp_path / "c") == ["epoch=0-step=3.ckpt"]
    assert logger.statuses == ["success"]
    if isinstance(logger, TrackerLogger):
        r = _read(logger, store)
        for step in (1, 2, 3):
            field = f"checkpoints/epoch=0-step={step}"
            uri = (tmp_path / "c" / f"epoch=0-step={step}.ckpt").resolve().as_uri()
            assert r[f"{field}/file"].fetch()["uri"] == uri
            # Kept for the record, and marked: the file is gone.
            assert r[f"{field}/removed"].fetch() is (step != 3), field


class Boom(Callback):
    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        raise RuntimeError("boom")


@pytest.mark.parametrize("logger_class", LOGGERS)
@pytest.mark.parametrize("outcome", ["success", "failed"])
def test_finalize_status_and_a_late_write(
    tmp_path: Path, store: str, logger_class: type, outcome: str
) -> None:
    logger = _make(_with_hooks(logger_class), tmp_path, store)
    trainer = Trainer(
        logger=logger,
        max_steps=2,
        limit_val_batches=0,
        log_every_n_steps=1,
        enable_checkpointing=False,
        callbacks=[Boom()] if outcome == "failed" else [],
        **_quiet(tmp_path),
    )
    if outcome == "failed":
        with pytest.raises(RuntimeError, match="boom"):
            trainer.fit(BoringModel())
    else:
        trainer.fit(BoringModel())
    assert logger.statuses == [outcome]
    # A write after the end (a summary, a late hyperparameter) is kept, and does not
    # leave the run looking as if it were still going.
    logger.log_hyperparams({"late": 1})
    logger.log_metrics({"summary": 0.5}, step=10)
    if isinstance(logger, TrackerLogger):
        r = _read(logger, store)
        assert r.status == ("finished" if outcome == "success" else "failed")
        assert r["config/late"].fetch() == 1
        assert list(r["summary"].fetch_values().step) == [10]
        assert len(tracker.list_runs(store=store)) == 1
