"""Lightning steps without silent loss: real Trainers, every value Lightning hands the logger
read back from the store, and which of them the default view shows.

The cases Lightning produces: ``validate()`` twice at one global step, a second ``fit``
through the same logger (a new Trainer, the same one trained further, a run the user gave),
``lr_find`` before ``fit``, and resuming from a checkpoint after training went further
(checkpoints saved on a train-step count, on validation, at the end of an epoch).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning", reason="needs lightning (pip install 'tracker-dl[lightning]')")
torch = pytest.importorskip("torch", reason="needs torch")

from lightning.pytorch import Trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.demos.boring_classes import BoringModel  # noqa: E402

import tracker  # noqa: E402
from tracker.integrations._common import GROUP_TAG_PREFIX, PREVIOUS_RUN_FIELD  # noqa: E402
from tracker.integrations.lightning import TrackerLogger  # noqa: E402

from .test_lightning import _trainer as _lightning_trainer  # noqa: E402

Point = tuple[int, float]


class Model(BoringModel):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().training_step(batch, batch_idx)
        # Step and epoch values: Lightning logs the epoch's at the epoch's last step.
        self.log("train_loss", out["loss"], on_step=True, on_epoch=True)
        return out

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().validation_step(batch, batch_idx)
        self.log("val_loss", out["x"])
        return out


class Recording(TrackerLogger):
    """Remembers every value Lightning handed over, as Lightning gave it, in call order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logged: list[tuple[int, str, float]] = []

    def log_metrics(self, metrics: Any, step: Any = None) -> None:
        super().log_metrics(metrics, step)
        self.logged.extend((int(step), key, float(value)) for key, value in metrics.items())

    def mark(self) -> int:
        return len(self.logged)

    def points(
        self, start: int = 0, end: int | None = None, offset: int = 0
    ) -> dict[str, list[Point]]:
        """{key: [(step + offset, value), ...]} for the calls in ``[start, end)``."""
        out: dict[str, list[Point]] = {}
        for step, key, value in self.logged[start:end]:
            out.setdefault(key, []).append((step + offset, value))
        return out


def _trainer(tmp_path: Path, logger: Any, **kwargs: Any) -> Trainer:
    # test_lightning's Trainer, without checkpoints unless a test asks for them.
    kwargs.setdefault("enable_checkpointing", False)
    return _lightning_trainer(tmp_path, logger, **kwargs)


def _read(run_id: str | None, store: str, path: str, **options: Any) -> list[Point]:
    # Lightning hands over Python floats (from float32 tensors): stored exactly.
    assert run_id is not None
    values = tracker.read_run(run_id, store=store)[path].fetch_values(**options)
    return [(int(s), float(v)) for s, v in zip(values.step, values.value, strict=True)]


def _by_step(points: list[Point]) -> list[Point]:
    """As reads order them: by step, and within a step in the order written."""
    return sorted(points, key=lambda point: point[0])


def _assert_run_holds(run_id: str | None, store: str, expected: dict[str, list[Point]]) -> None:
    for key, points in expected.items():
        assert _read(run_id, store, key) == _by_step(points), key


@contextmanager
def _no_lower_step_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*lower than its last step")
        yield


# -- one training, evaluated twice ------------------------------------------------------------


def test_validate_twice_at_one_step_keeps_both_points(tmp_path: Path, store: str) -> None:
    logger = Recording(project="lit", store=store)
    trainer = _trainer(tmp_path, logger)
    model = Model()
    trainer.fit(model)
    trained = logger.mark()
    trainer.validate(model)
    trainer.validate(model)

    # Both evaluations at Lightning's step 4 (its batch count), in the training's run.
    evaluations = logger.points(trained)["val_loss"]
    assert [step for step, _ in evaluations] == [4, 4]
    assert evaluations[0][1] != evaluations[1][1]  # fresh random validation data each time
    assert [row["id"] for row in tracker.list_runs(store=store)] == [logger.version]
    _assert_run_holds(logger.version, store, logger.points())
    val = _read(logger.version, store, "val_loss")
    assert [step for step, _ in val] == [1, 3, 4, 4]
    assert val[2:] == evaluations  # both, in the order they ran
    # One point per step, when asked for: the later evaluation.
    assert _read(logger.version, store, "val_loss", per_step="last")[-1] == evaluations[-1]
    assert tracker.read_run(logger.version, store=store).status == "finished"


def test_validate_before_fit_writes_to_the_training_run(tmp_path: Path, store: str) -> None:
    logger = Recording(project="lit", store=store)
    trainer = _trainer(tmp_path, logger)
    model = Model()
    trainer.validate(model)  # a baseline before training: closed by finalize, then reopened
    trainer.fit(model)
    assert [row["id"] for row in tracker.list_runs(store=store)] == [logger.version]
    _assert_run_holds(logger.version, store, logger.points())
    assert [step for step, _ in _read(logger.version, store, "val_loss")] == [0, 1, 3]


# -- a second training through the same logger --------------------------------------------------


def test_second_fit_with_a_new_trainer_gets_a_linked_run(tmp_path: Path, store: str) -> None:
    logger = Recording(project="lit", store=store, save_dir=str(tmp_path / "ckpt"))
    _trainer(tmp_path, logger).fit(Model())
    first, first_end = logger.version, logger.mark()
    with _no_lower_step_warning():
        trainer = _trainer(tmp_path, logger, enable_checkpointing=True)
        model = Model()
        trainer.fit(model)
        second_end = logger.mark()
        trainer.validate(model)  # evaluates the second training: its run
    second = logger.version

    assert first != second
    runs = {row["id"]: row for row in tracker.list_runs(store=store)}
    assert set(runs) == {first, second}
    assert all(row["status"] == "finished" for row in runs.values())
    # Each run complete: every value of its own training, at Lightning's own steps.
    _assert_run_holds(first, store, logger.points(0, first_end))
    _assert_run_holds(second, store, logger.points(first_end))
    for run_id in (first, second):
        assert [s for s, _ in _read(run_id, store, "train_loss_step")] == [0, 1, 2, 3]
        assert [s for s, _ in _read(run_id, store, "per_rank/step_time")] == [0, 1, 2, 3]
        assert tracker.read_run(run_id, store=store)["config/lr"].fetch() == 0.1
    assert [s for s, _ in _read(second, store, "val_loss")] == [1, 3, 4]
    assert logger.points(second_end)["val_loss"][0][0] == 4
    # Linked: one group, named after the first run; the second names the run before it.
    for run_id in (first, second):
        assert GROUP_TAG_PREFIX + first in tracker.read_run(run_id, store=store).tags
    assert tracker.read_run(second, store=store)[PREVIOUS_RUN_FIELD].fetch() == first
    assert PREVIOUS_RUN_FIELD not in tracker.read_run(first, store=store).paths()
    # The new Trainer's checkpoints belong to the second run, in its own directory.
    checkpoint = trainer.checkpoint_callback
    assert checkpoint is not None
    assert Path(checkpoint.dirpath) == tmp_path / "ckpt" / "lit" / second / "checkpoints"
    assert tracker.read_run(second, store=store)["checkpoints/best"].fetch() == os.path.abspath(
        checkpoint.best_model_path
    )


def test_the_same_trainer_trained_further_gets_a_linked_run(tmp_path: Path, store: str) -> None:
    logger = Recording(project="lit", store=store)
    trainer = _trainer(tmp_path, logger)
    model = Model()
    trainer.fit(model)
    first, first_end = logger.version, logger.mark()
    trainer.fit_loop.epoch_loop.max_steps = 8
    with _no_lower_step_warning():
        trainer.fit(model)
    second = logger.version

    assert first != second
    _assert_run_holds(first, store, logger.points(0, first_end))
    _assert_run_holds(second, store, logger.points(first_end))
    # The Trainer's own step goes on: the second run starts where the first stopped.
    assert [s for s, _ in _read(second, store, "train_loss_step")] == [4, 5, 6, 7]
    assert [s for s, _ in _read(second, store, "per_rank/step_time")] == [4, 5, 6, 7]
    assert tracker.read_run(second, store=store)[PREVIOUS_RUN_FIELD].fetch() == first


@pytest.mark.parametrize("same_trainer", [False, True], ids=["new-trainer", "same-trainer"])
def test_second_fit_into_a_given_run_continues_after_its_last_step(
    tmp_path: Path, store: str, same_trainer: bool
) -> None:
    run = tracker.init_run(project="lit", store=store)
    logger = Recording(run=run)
    trainer = _trainer(tmp_path, logger)
    model = Model()
    trainer.fit(model)
    first_end = logger.mark()
    with _no_lower_step_warning():
        if same_trainer:
            trainer.fit_loop.epoch_loop.max_steps = 8
        else:
            trainer, model = _trainer(tmp_path, logger), Model()
        trainer.fit(model)
        run.flush()  # lower steps are also caught on the writer thread: let it see them
    run.close()

    assert [row["id"] for row in tracker.list_runs(store=store)] == [run.id]
    # A new Trainer counts from 0 again: its steps are moved past the run's last one. The
    # same Trainer already goes on from its own step, and is kept as it is.
    offset = 0 if same_trainer else 4
    expected = logger.points(0, first_end)
    for key, points in logger.points(first_end, offset=offset).items():
        expected.setdefault(key, []).extend(points)
    _assert_run_holds(run.id, store, expected)
    assert [s for s, _ in _read(run.id, store, "train_loss_step")] == list(range(8))
    assert [s for s, _ in _read(run.id, store, "val_loss")] == [1, 3, 5, 7]
    assert [s for s, _ in _read(run.id, store, "per_rank/step_time")] == list(range(8))
    assert PREVIOUS_RUN_FIELD not in tracker.read_run(run.id, store=store).paths()


def test_lr_find_then_fit_is_one_training(tmp_path: Path, store: str) -> None:
    from lightning.pytorch.tuner.tuning import Tuner

    logger = Recording(project="lit", store=store)
    trainer = _trainer(tmp_path, logger, max_steps=-1, max_epochs=1)
    model = Model()
    # The Tuner runs a fit of its own, training with a stand-in logger: no training here.
    Tuner(trainer).lr_find(model, num_training=3)
    trainer.fit(model)

    assert [row["id"] for row in tracker.list_runs(store=store)] == [logger.version]
    _assert_run_holds(logger.version, store, logger.points())
    # Per-rank figures of the real fit only, not of the search.
    assert [s for s, _ in _read(logger.version, store, "per_rank/step_time")] == [0, 1, 2, 3]


# -- resuming from a checkpoint after training went further -------------------------------------

CHECKPOINTS = {
    # saved in on_train_batch_end of the batch at step 1, before its metrics are logged
    "train-steps": (dict(every_n_train_steps=2), "epoch=0-step=2.ckpt"),
    # saved at the end of the validation after the batch at step 1
    "validation": (dict(monitor="val_loss", filename="{step}"), "step=2.ckpt"),
    # saved at the end of the first epoch (3 batches), before the epoch's own metrics
    "epoch-end": (dict(filename="{step}"), "step=3.ckpt"),
}


@pytest.mark.parametrize("same_logger", [False, True], ids=["new-logger", "same-logger"])
@pytest.mark.parametrize("kind", sorted(CHECKPOINTS))
def test_resume_rewinds_to_the_checkpoint(
    tmp_path: Path, store: str, kind: str, same_logger: bool
) -> None:
    options, name = CHECKPOINTS[kind]
    validation = {"val_check_interval": None} if kind == "epoch-end" else {}

    def trainer_for(logger: Recording, directory: str) -> Trainer:
        checkpoint = ModelCheckpoint(dirpath=str(tmp_path / directory), save_top_k=-1, **options)
        return _trainer(
            tmp_path,
            logger,
            max_steps=8,
            limit_train_batches=3,
            callbacks=[checkpoint],
            enable_checkpointing=True,
            **validation,
        )

    first = Recording(project="lit", store=store)
    trainer_for(first, "c1").fit(Model())  # trains on past the checkpoint: 8 steps
    ckpt_path = str(tmp_path / "c1" / name)
    global_step = torch.load(ckpt_path, weights_only=False)["global_step"]
    assert f"step={global_step}" in name

    # A fresh process builds a fresh logger; the same process may go on with the same one.
    second = first if same_logger else Recording(project="lit", store=store)
    resumed_from = second.mark()
    with _no_lower_step_warning():
        trainer_for(second, "c2").fit(Model(), ckpt_path=ckpt_path)
        second.run.flush()
    assert second.version == first.version
    assert [row["id"] for row in tracker.list_runs(store=store)] == [first.version]

    abandoned = first.points(0, None if not same_logger else resumed_from)
    resumed = second.points(resumed_from)
    assert min(step for points in resumed.values() for step, _ in points) >= global_step
    for key in abandoned.keys() | resumed.keys():
        old, new = abandoned.get(key, []), resumed.get(key, [])
        # Everything stays readable: the abandoned branch, then the resumed one.
        everything = _read(first.version, store, key, include_superseded=True)
        assert everything == _by_step(old + new), key
        # The default view: the abandoned branch up to the step before the checkpoint's,
        # then the resumed branch.
        kept = [(step, value) for step, value in old if step < global_step]
        shown = _read(first.version, store, key)
        assert shown == _by_step(kept + new), key
        if key != "epoch":  # logged with both train and validation values at one step
            steps = [step for step, _ in shown]
            assert len(steps) == len(set(steps)), key
    # The per-rank figures too: Lightning's step 0-7, each once, the resumed branch's last.
    figures = _read(first.version, store, "per_rank/step_time")
    assert [step for step, _ in figures] == list(range(8))
    every_figure = _read(first.version, store, "per_rank/step_time", include_superseded=True)
    assert [step for step, _ in every_figure] == sorted([*range(8), *range(global_step, 8)])
