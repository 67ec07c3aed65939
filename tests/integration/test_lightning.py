"""Lightning TrackerLogger: the Logger contract, real fits read back from the store, resume,
and the scenarios of Lightning's own generic logger test (tests_pytorch/loggers/test_all.py).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning", reason="needs lightning (pip install 'tracker-dl[lightning]')")
torch = pytest.importorskip("torch", reason="needs torch")

from lightning.pytorch import Callback, Trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.demos.boring_classes import BoringModel  # noqa: E402
from lightning.pytorch.loggers.logger import DummyExperiment  # noqa: E402

import tracker  # noqa: E402
from tracker.integrations.lightning import TrackerLogger  # noqa: E402


class Model(BoringModel):
    def __init__(self, lr: float = 0.1, optimizer: Any = "sgd", extra: Any = None) -> None:
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"])
        return out

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().validation_step(batch, batch_idx)
        self.log("val_loss", out["x"])
        return out


def _trainer(tmp_path: Path, logger: Any, **kwargs: Any) -> Trainer:
    options: dict[str, Any] = dict(
        logger=logger,
        max_steps=4,
        limit_train_batches=4,
        limit_val_batches=1,
        val_check_interval=2,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path / "root"),
        accelerator="cpu",
        devices=1,
    )
    options.update(kwargs)
    return Trainer(**options)


def _sha256(path: str) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- the Logger contract --------------------------------------------------------------------


def test_fit_records_metrics_hparams_checkpoints_and_closes(tmp_path: Path, store: str) -> None:
    logger = TrackerLogger(project="lit", store=store, save_dir=str(tmp_path / "ckpt"))
    checkpoint = ModelCheckpoint(monitor="val_loss", save_top_k=2, every_n_train_steps=2)
    trainer = _trainer(tmp_path, logger, callbacks=[checkpoint])
    model = Model(
        optimizer=torch.optim.SGD,
        extra={"nested": {"depth": 3}, "layers": [64, 32], "none": None},
    )
    trainer.fit(model)

    r = tracker.read_run(logger.version, project="lit", store=store)
    assert r.status == "finished"
    assert list(r["train_loss"].fetch_values().step) == [0, 1, 2, 3]
    assert len(r["val_loss"].fetch_values()) == 2
    # Nested, non-primitive and None hyperparameters are stored, readable.
    assert r["config/lr"].fetch() == 0.1
    assert r["config/optimizer"].fetch() == "SGD"
    assert r["config/extra/nested/depth"].fetch() == 3
    assert r["config/extra/layers"].fetch() == "[64, 32]"
    assert r["config/extra/none"].fetch() == "None"
    assert r["model/parameters"].fetch() == sum(p.numel() for p in model.parameters())
    # Each checkpoint: a reference with path, size and hash; the file stays where it was.
    assert checkpoint.best_k_models
    for path, score in checkpoint.best_k_models.items():
        stem = Path(path).stem
        ref = r[f"checkpoints/{stem}/file"].fetch()
        assert ref["uri"] == Path(path).resolve().as_uri()
        assert ref["size"] == os.path.getsize(path)
        assert ref["hash"] == _sha256(path)
        assert r[f"checkpoints/{stem}/score"].fetch() == pytest.approx(float(score))
        assert r[f"checkpoints/{stem}/monitor"].fetch() == "val_loss"
    assert r["checkpoints/best"].fetch() == os.path.abspath(checkpoint.best_model_path)
    # Checkpoints live under save_dir/name/version, as Lightning builds it from the logger.
    assert Path(checkpoint.dirpath) == tmp_path / "ckpt" / "lit" / logger.version / "checkpoints"
    # Per-rank figures come from the callback the logger added by itself.
    assert list(r["per_rank/step_time"].fetch_values().step) == [0, 1, 2, 3]
    assert len(r["per_rank/samples_per_second"].fetch_values()) == 4
    losses = r["per_rank/train_loss"].fetch_values()
    assert list(losses.value) == pytest.approx(list(r["train_loss"].fetch_values().value))


def test_name_and_version_create_no_run(store: str) -> None:
    logger = TrackerLogger(project="lit", store=store)
    assert logger.name == "lit"
    assert logger.version is None
    assert logger.log_dir is None
    named = TrackerLogger(project="lit", run_id="fixed-id", store=store, save_dir="/tmp/x")
    assert named.version == "fixed-id"
    assert named.log_dir == os.path.join("/tmp/x", "lit", "fixed-id")
    # Pickling before any run exists ships nothing but settings.
    assert pickle.loads(pickle.dumps(named)).version == "fixed-id"
    assert not Path(store).exists(), "reading name/version must not create a run"


def test_hyperparams_from_namespace_and_metrics_with_step(store: str) -> None:
    logger = TrackerLogger(project="lit", store=store, prefix="fold1")
    logger.log_hyperparams(Namespace(lr=0.01, act=torch.nn.ReLU, sizes=(1, 2)))
    logger.log_metrics({"loss": 1.5, "acc": torch.tensor(0.25)}, step=7)
    logger.log_metrics({"loss": 1.0}, step=9)
    logger.finalize("success")
    r = tracker.read_run(logger.version, project="lit", store=store)
    assert r["config/lr"].fetch() == 0.01
    assert r["config/act"].fetch() == "ReLU"
    assert r["config/sizes"].fetch() == "[1, 2]"
    assert list(r["fold1/loss"].fetch_values().step) == [7, 9]
    assert list(r["fold1/acc"].fetch_values().value) == [0.25]


def test_existing_run_is_used_and_left_open(tmp_path: Path, store: str) -> None:
    run = tracker.init_run(project="lit", store=store)
    logger = TrackerLogger(run=run)
    assert logger.version == run.id and logger.name == "lit"
    assert logger.experiment is run
    _trainer(tmp_path, logger).fit(Model())
    run.log({"after_fit": 1.0}, step=0)  # still open: finalize only flushed it
    run.close()
    r = tracker.read_run(run.id, project="lit", store=store)
    assert r.status == "finished"
    assert len(r["train_loss"].fetch_values()) == 4
    assert len(r["after_fit"].fetch_values()) == 1


def test_failed_fit_closes_run_as_failed(tmp_path: Path, store: str) -> None:
    class Boom(Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == 2:
                raise RuntimeError("boom")

    logger = TrackerLogger(project="lit", store=store)
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path, logger, callbacks=[Boom()]).fit(Model())
    runs = tracker.list_runs(store=store)
    assert [row["status"] for row in runs] == ["failed"]


def test_resume_from_checkpoint_continues_the_same_run(tmp_path: Path, store: str) -> None:
    every_two = ModelCheckpoint(every_n_train_steps=2, save_top_k=-1, dirpath=str(tmp_path / "c"))
    first = TrackerLogger(project="lit", store=store)
    _trainer(
        tmp_path, first, callbacks=[every_two], val_check_interval=None, limit_val_batches=0
    ).fit(Model())
    at_step_2 = str(tmp_path / "c" / "epoch=0-step=2.ckpt")
    assert os.path.exists(at_step_2)

    # A fresh process would build a fresh logger: nothing tells it the id but the checkpoint.
    class Recording(TrackerLogger):
        steps: list[int] = []

        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            super().log_metrics(metrics, step)
            if "train_loss" in metrics:
                self.steps.append(step)

    second = Recording(project="lit", store=store)
    again = ModelCheckpoint(every_n_train_steps=2, save_top_k=-1, dirpath=str(tmp_path / "c2"))
    trainer = _trainer(
        tmp_path,
        second,
        callbacks=[again],
        max_steps=6,
        limit_train_batches=6,
        val_check_interval=None,
        limit_val_batches=0,
    )
    with warnings.catch_warnings():
        # A rewound run takes the resumed steps as new: no lower-step warning.
        warnings.filterwarnings("error", message=".*lower than its last step")
        trainer.fit(Model(), ckpt_path=at_step_2)

    assert second.version == first.version
    runs = tracker.list_runs(store=store)
    assert [row["id"] for row in runs] == [first.version]
    series = tracker.read_run(first.version, project="lit", store=store)["train_loss"]
    # The resumed fit starts at the checkpoint's global step; the run was rewound to the
    # step before it, so the default view holds each step once: 0-1 from the first fit,
    # 2-5 from the resumed one. The first fit's own 2 and 3 are kept, superseded.
    assert second.steps == [2, 3, 4, 5]
    assert list(series.fetch_values().step) == [0, 1, 2, 3, 4, 5]
    assert list(series.fetch_values(include_superseded=True).step) == [0, 1, 2, 2, 3, 3, 4, 5]


def test_works_with_the_pytorch_lightning_package(tmp_path: Path, store: str) -> None:
    pl = pytest.importorskip("pytorch_lightning", reason="needs pytorch_lightning")
    from pytorch_lightning.demos.boring_classes import BoringModel as PLBoringModel

    class PLModel(PLBoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            out = super().training_step(batch, batch_idx)
            self.log("train_loss", out["loss"])
            return out

    logger = TrackerLogger(project="pl", store=store)
    trainer = pl.Trainer(
        logger=logger,
        max_steps=3,
        limit_val_batches=0,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(PLModel())
    r = tracker.read_run(logger.version, project="pl", store=store)
    assert r.status == "finished"
    assert list(r["train_loss"].fetch_values().step) == [0, 1, 2]
    assert len(r["per_rank/step_time"].fetch_values()) == 3


# -- Lightning's generic logger scenarios (tests_pytorch/loggers/test_all.py) ----------------


def test_all_fit_then_test_history(tmp_path: Path, store: str) -> None:
    class CustomModel(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = self.step(batch)
            self.log("train_some_val", loss)
            return {"loss": loss}

        def on_validation_epoch_end(self) -> None:
            self.log_dict({"early_stop_on": torch.tensor(1), "val_loss": torch.tensor(0.5)})

        def on_test_epoch_end(self) -> None:
            self.log("test_loss", torch.tensor(2))

    class StoreHistoryLogger(TrackerLogger):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.history: list[tuple[int, dict[str, float]]] = []

        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            super().log_metrics(metrics, step)
            self.history.append((step, metrics))

    logger = StoreHistoryLogger(project="all", store=store, save_dir=str(tmp_path))
    trainer = Trainer(
        max_epochs=1,
        logger=logger,
        limit_train_batches=1,
        limit_val_batches=1,
        log_every_n_steps=1,
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
    )
    trainer.fit(CustomModel())
    trainer.test()

    assert [(s, sorted(m)) for s, m in logger.history] == [
        (0, ["epoch", "train_some_val"]),
        (0, ["early_stop_on", "epoch", "val_loss"]),
        (1, ["epoch", "test_loss"]),
    ]
    # The same figures, read back: trainer.test() continued the run fit closed.
    assert len(tracker.list_runs(store=store)) == 1
    r = tracker.read_run(logger.version, project="all", store=store)
    assert r.status == "finished"
    assert list(r["test_loss"].fetch_values().step) == [1]
    assert list(r["val_loss"].fetch_values().value) == [0.5]


def test_all_pickle_round_trip(tmp_path: Path, store: str) -> None:
    logger = TrackerLogger(project="all", store=store, save_dir=str(tmp_path))
    _ = logger.experiment  # the live run must not be pickled
    logger.log_metrics({"a": 1})
    logger.save()
    pickle.dumps(logger)
    trainer = Trainer(max_epochs=1, logger=logger, default_root_dir=str(tmp_path))

    trainer2 = pickle.loads(pickle.dumps(trainer))
    trainer2.logger.log_metrics({"acc": 1.0})
    assert trainer2.logger.name == logger.name
    assert trainer2.logger.save_dir == logger.save_dir
    assert trainer2.logger.version == logger.version
    trainer2.logger.finalize("success")
    logger.finalize("success")
    r = tracker.read_run(logger.version, project="all", store=store)
    assert {"a", "acc"} <= set(r.paths())


def test_all_logger_reset_by_tuner(tmp_path: Path, store: str) -> None:
    from lightning.pytorch.tuner.tuning import Tuner

    class CustomModel(BoringModel):
        def __init__(self, lr: float = 0.1, batch_size: int = 1) -> None:
            super().__init__()
            self.save_hyperparameters()

    model = CustomModel()
    logger = TrackerLogger(project="all", store=store)
    trainer = Trainer(
        default_root_dir=str(tmp_path), max_epochs=1, logger=logger, enable_progress_bar=False
    )
    Tuner(trainer).lr_find(model, num_training=3)
    assert trainer.logger is logger
    assert model.logger is logger


def test_all_prefix_and_default_name(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = TrackerLogger(project="all", store=store, prefix="tmp")
    logger.log_metrics({"test": 1.0}, step=0)
    logger.finalize("success")
    r = tracker.read_run(logger.version, project="all", store=store)
    assert list(r["tmp/test"].fetch_values().value) == [1.0]
    monkeypatch.setenv("TRACKER_PROJECT", "from-env")
    assert TrackerLogger(store=store).name == "from-env"
    monkeypatch.delenv("TRACKER_PROJECT")
    assert TrackerLogger(store=store).name == "default"


class LazyInitExperimentCheck(Callback):
    def setup(self, trainer: Any, pl_module: Any, stage: Any = None) -> None:
        if trainer.global_rank > 0:
            return
        assert trainer.logger._runs.run is not None


class RankZeroLoggerCheck(Callback):
    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        is_dummy = isinstance(trainer.logger.experiment, DummyExperiment)
        if trainer.is_global_zero:
            assert not is_dummy
        else:
            assert is_dummy
            assert pl_module.logger.experiment.something(foo="bar") is None


@pytest.mark.distributed
def test_all_logger_initialization_ddp_spawn(tmp_path: Path, store: str) -> None:
    """Two spawned CPU processes: experiment ready at setup, a dummy on rank 1, one run."""
    logger = TrackerLogger(project="all", store=store, save_dir=str(tmp_path))
    trainer = Trainer(
        logger=logger,
        default_root_dir=str(tmp_path),
        strategy="ddp_spawn",
        accelerator="cpu",
        devices=2,
        max_steps=1,
        callbacks=[LazyInitExperimentCheck(), RankZeroLoggerCheck()],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    runs = tracker.list_runs(store=store)
    assert len(runs) == 1 and runs[0]["status"] == "finished"
