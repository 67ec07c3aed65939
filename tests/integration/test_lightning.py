"""Lightning TrackerLogger: the Logger contract, real fits read back from the store, resume,
several loggers in one Trainer, deleted checkpoints, writes after the end. Lightning's own
generic logger scenarios run in test_lightning_generic.py.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from argparse import Namespace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("lightning", reason="needs lightning (pip install 'tracker-dl[lightning]')")
torch = pytest.importorskip("torch", reason="needs torch")

from lightning.pytorch import Callback, Trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.demos.boring_classes import BoringModel  # noqa: E402

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
    assert r["config/extra/layers"].fetch() == [64, 32]
    assert r["config/extra/none"].fetch() is None
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
    assert r["config/sizes"].fetch() == [1, 2]
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


# -- what Lightning users do beyond one fit (the generic scenarios: test_lightning_generic) --


def test_prefix_and_default_name(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = TrackerLogger(project="all", store=store, prefix="tmp")
    logger.log_metrics({"test": 1.0}, step=0)
    logger.finalize("success")
    r = tracker.read_run(logger.version, project="all", store=store)
    assert list(r["tmp/test"].fetch_values().value) == [1.0]
    monkeypatch.setenv("TRACKER_PROJECT", "from-env")
    assert TrackerLogger(store=store).name == "from-env"
    monkeypatch.delenv("TRACKER_PROJECT")
    assert TrackerLogger(store=store).name == "default"


class NumpyModel(BoringModel):
    def __init__(self, complex_value: Any, long_value: Any, cdouble: Any) -> None:
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"])
        return out


def test_numpy_complex_and_longdouble_hyperparameters_do_not_stop_fit(
    tmp_path: Path, store: str
) -> None:
    # Lightning's own loggers keep such values (its sanitising makes complex text); a
    # hyperparameter must never stop a training.
    logger = TrackerLogger(project="lit", store=store)
    model = NumpyModel(np.complex128(1 + 2j), np.longdouble(0.25), np.cdouble(3 - 1j))
    _trainer(tmp_path, logger, limit_val_batches=0, val_check_interval=None).fit(model)
    r = tracker.read_run(logger.version, project="lit", store=store)
    assert r.status == "finished"
    assert r["config/complex_value"].fetch() == "(1+2j)"
    assert r["config/long_value"].fetch() == 0.25
    assert r["config/cdouble"].fetch() == "(3-1j)"
    assert list(r["train_loss"].fetch_values().step) == [0, 1, 2, 3]


def _two_logger_fit(
    tmp_path: Path, loggers: list[TrackerLogger], directory: str, steps: int, **fit: Any
) -> None:
    every_two = ModelCheckpoint(
        dirpath=str(tmp_path / directory), every_n_train_steps=2, save_top_k=-1
    )
    trainer = _trainer(
        tmp_path,
        loggers,
        callbacks=[every_two],
        max_steps=steps,
        limit_train_batches=steps,
        val_check_interval=None,
        limit_val_batches=0,
    )
    trainer.fit(Model(), **fit)


@pytest.mark.parametrize("projects", [("a", "b"), ("lit", "lit")], ids=["two-projects", "one"])
def test_two_loggers_in_one_trainer_each_resume_their_own_run(
    tmp_path: Path, store: str, projects: tuple[str, str]
) -> None:
    first = [
        TrackerLogger(project=p, store=store, tags=[f"logger{i}"]) for i, p in enumerate(projects)
    ]
    _two_logger_fit(tmp_path, first, "c", 4)
    # Each logger's state under its own key: resuming gives each its own run back.
    again = [
        TrackerLogger(project=p, store=store, tags=[f"logger{i}"]) for i, p in enumerate(projects)
    ]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*belongs to tracker run")
        _two_logger_fit(
            tmp_path, again, "c2", 6, ckpt_path=str(tmp_path / "c" / "epoch=0-step=2.ckpt")
        )
    assert [logger.version for logger in again] == [logger.version for logger in first]
    assert len({logger.version for logger in first}) == 2
    assert {row["id"] for row in tracker.list_runs(store=store)} == {
        logger.version for logger in first
    }
    for logger in first:
        r = tracker.read_run(logger.version, store=store)
        assert r.status == "finished"
        # Both fits' points in the one run: 4 steps, then 4 more resumed from step 2
        # (the steps a resume shows: test_resume_from_checkpoint_continues_the_same_run).
        assert len(r["train_loss"].fetch_values(include_superseded=True)) == 8
        assert len(r["per_rank/step_time"].fetch_values(include_superseded=True)) == 8


def test_checkpoint_with_the_old_shared_key_still_resumes(tmp_path: Path, store: str) -> None:
    first = [TrackerLogger(project="a", store=store), TrackerLogger(project="b", store=store)]
    _two_logger_fit(tmp_path, first, "c", 4)
    # As checkpoints were written before each logger had its own key: one entry under
    # "TrackerLogger", the last logger's (it overwrote the first's).
    path = tmp_path / "c" / "epoch=0-step=2.ckpt"
    checkpoint = torch.load(path, weights_only=False)
    callbacks = checkpoint["callbacks"]
    for key in [k for k in callbacks if str(k).startswith("TrackerLogger")]:
        del callbacks[key]
    callbacks["TrackerLogger"] = {"run_id": first[1].version, "project": "b"}
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)

    again = [TrackerLogger(project="a", store=store), TrackerLogger(project="b", store=store)]
    _two_logger_fit(tmp_path, again, "c2", 6, ckpt_path=str(old))
    # The entry names project b: b continues its run, rewound; a, whose state the old
    # checkpoint lost, starts a run of its own rather than taking b's.
    assert again[1].version == first[1].version
    assert again[0].version not in (first[0].version, first[1].version)
    r = tracker.read_run(first[1].version, store=store)
    assert len(r["train_loss"].fetch_values(include_superseded=True)) == 8
    assert r.status == "finished"
    assert tracker.read_run(again[0].version, store=store).status == "finished"

    # One logger alone, and its old checkpoint: the usual case, resumed as before.
    checkpoint["callbacks"]["TrackerLogger"] = {"run_id": first[0].version, "project": "a"}
    torch.save(checkpoint, old)
    alone = TrackerLogger(project="a", store=store)
    _two_logger_fit(tmp_path, [alone], "c3", 6, ckpt_path=str(old))
    assert alone.version == first[0].version


class Improving(Model):
    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        self.log("val_loss", 10.0 - self.global_step)  # each validation better than before


def test_checkpoints_deleted_by_save_top_k_are_marked_removed(tmp_path: Path, store: str) -> None:
    logger = TrackerLogger(project="lit", store=store)
    best_two = ModelCheckpoint(
        dirpath=str(tmp_path / "c"),
        monitor="val_loss",
        save_top_k=2,
        save_last=True,
        filename="{step}",
    )
    trainer = _trainer(tmp_path, logger, callbacks=[best_two], max_steps=8, limit_train_batches=8)
    trainer.fit(Improving())
    kept = {Path(p).name for p in best_two.best_k_models} | {"last.ckpt"}
    assert sorted(os.listdir(tmp_path / "c")) == sorted(kept)

    r = tracker.read_run(logger.version, project="lit", store=store)
    recorded = {
        path.split("/")[1]
        for path in r.paths()
        if path.startswith("checkpoints/") and path.endswith("/file")
    }
    # Every save was recorded (the validations after steps 2, 4, 6 and 8, and last), and
    # exactly the files save_top_k deleted (the worst, each time a better one came) are
    # marked; their reference stays for the record.
    assert kept == {"step=6.ckpt", "step=8.ckpt", "last.ckpt"}
    assert recorded == {"step=2", "step=4", "step=6", "step=8", "last"}
    removed = {stem for stem in recorded if r[f"checkpoints/{stem}/removed"].fetch()}
    assert removed == {"step=2", "step=4"}
    for stem in recorded:
        assert r[f"checkpoints/{stem}/file"].fetch()["size"] > 0
    assert r["checkpoints/best"].fetch() == os.path.abspath(best_two.best_model_path)


def test_a_write_after_fit_leaves_the_run_as_fit_left_it(tmp_path: Path, store: str) -> None:
    logger = TrackerLogger(project="lit", store=store)
    trainer = _trainer(tmp_path, logger)
    model = Model()
    trainer.fit(model)
    logger.log_hyperparams({"late": {"value": 1}})
    logger.log_metrics({"summary": 0.5}, step=3)
    r = tracker.read_run(logger.version, project="lit", store=store)
    assert r.status == "finished"
    assert r["config/late/value"].fetch() == 1
    assert list(r["summary"].fetch_values().step) == [3]
    # A stage after it still writes to the same run and closes it again.
    trainer.validate(model)
    logger.log_hyperparams({"later": 2})
    r = tracker.read_run(logger.version, project="lit", store=store)
    assert r.status == "finished"
    assert r["config/later"].fetch() == 2
    assert len(r["val_loss"].fetch_values()) == 3
    assert [row["id"] for row in tracker.list_runs(store=store)] == [logger.version]


# -- events ------------------------------------------------------------------------------------


class DivergingModel(Model):
    """Its loss turns NaN from step 2: what a too-high learning rate does."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().training_step(batch, batch_idx)
        if self.global_step >= 2:
            out["loss"] = out["loss"] * float("nan")
            self.log("train_loss", out["loss"])
        return out


def test_a_loss_turning_nan_is_an_event_without_user_code(tmp_path: Path, store: str) -> None:
    logger = TrackerLogger(project="lit", store=store)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, logger, max_steps=5, limit_train_batches=5).fit(DivergingModel())
    events = tracker.read_run(logger.version, store=store).events(kind="nonfinite")
    found = [(e["path"], e["step"], e["rank"]) for e in events]
    # The loss turns NaN at step 2; the weights it updated make the next validation NaN.
    assert sorted(found) == [
        ("per_rank/train_loss", 2, 0),
        ("train_loss", 2, 0),
        ("val_loss", 3, 0),
    ]
    assert any("train_loss is NaN at step 2" in str(w.message) for w in caught)
