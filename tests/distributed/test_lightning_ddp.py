"""Lightning strategy="ddp", two CPU processes (gloo): one run, Lightning's metrics from
rank 0, per-rank figures from both ranks, and no hang on keys only one rank logs; then a
second fit (a linked run) and a resume from a checkpoint (a rewind) in one job. And
strategy="ddp_spawn", where the process that calls ``fit`` never trains: it must still
know the run its spawned workers wrote, for ``trainer.test()`` and the next ``fit``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tracker

from ..conftest import python_env

pytest.importorskip("lightning", reason="needs lightning (pip install 'tracker-dl[lightning]')")
pytest.importorskip("torch", reason="needs torch")
pytestmark = pytest.mark.distributed

from lightning.pytorch import Callback, Trainer  # noqa: E402
from lightning.pytorch.demos.boring_classes import BoringModel  # noqa: E402

from tracker.integrations._common import GROUP_TAG_PREFIX, PREVIOUS_RUN_FIELD  # noqa: E402
from tracker.integrations.lightning import TrackerLogger  # noqa: E402

SCRIPT = Path(__file__).parent / "scripts" / "lightning_ddp_job.py"
STEPS = 4


def test_ddp_one_run_with_per_rank_figures(tmp_path: Path, store: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--store",
            store,
            "--root",
            str(tmp_path),
            "--steps",
            str(STEPS),
        ],
        env=python_env(OMP_NUM_THREADS="1", TRACKER_RANK_CLOSE_TIMEOUT="10"),
        capture_output=True,
        text=True,
        timeout=180,  # a hang on mismatched keys would end here, as a failure
    )
    assert done.returncode == 0, done.stderr[-4000:]
    versions = set(re.findall(r"RUN_ID \d+ ([A-Za-z0-9._-]+)", done.stdout))
    assert len(versions) == 1, done.stdout  # logger.version agrees on both ranks

    runs = tracker.list_runs(project="lit-ddp", store=store)
    assert [row["id"] for row in runs] == list(versions)
    r = tracker.read_run(runs[0]["id"], project="lit-ddp", store=store)
    assert r.status == "finished"
    assert r.ranks() == [0, 1]
    # Lightning's own metrics, exactly as Lightning logs them: from rank 0 only.
    assert list(r["train_loss"].fetch_values().step) == list(range(STEPS))
    with pytest.raises(KeyError):
        r["train_loss"].fetch_values(rank=1)
    assert "only_on_rank0" in r.paths() and "only_on_rank1" not in r.paths()
    # Per-rank figures from every rank, gathered by the coordinator.
    for rank in (0, 1):
        for key in ("per_rank/step_time", "per_rank/samples_per_second", "per_rank/train_loss"):
            assert list(r[key].fetch_values(rank=rank).step) == list(range(STEPS)), (key, rank)
    # Each rank's own un-reduced loss: the two shards give different values, and rank 0's
    # equals what Lightning logged.
    own = {k: list(r["per_rank/train_loss"].fetch_values(rank=k).value) for k in (0, 1)}
    assert own[0] != own[1]
    assert own[0] == pytest.approx(list(r["train_loss"].fetch_values().value))


# Three trainings in one ddp job (Lightning re-runs this script for rank 1): a first fit
# that checkpoints, a second fit through the same logger (a new run, linked), and a fresh
# logger resuming the first fit's step-2 checkpoint, training further than it did.
THREE_FITS = """
import argparse, os
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from tracker.integrations.lightning import TrackerLogger


class Model(BoringModel):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"])
        return out


def fit(logger, root, steps, checkpoint=None, ckpt_path=None):
    trainer = Trainer(
        logger=logger, strategy="ddp", accelerator="cpu", devices=2, max_steps=steps,
        limit_val_batches=0, log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=checkpoint is not None,
        callbacks=[checkpoint] if checkpoint is not None else [], default_root_dir=root,
    )
    trainer.fit(Model(), ckpt_path=ckpt_path)
    return trainer.global_rank


parser = argparse.ArgumentParser()
parser.add_argument("--store", required=True)
parser.add_argument("--root", required=True)
args = parser.parse_args()
torch.manual_seed(0)
logger = TrackerLogger(project="lit-ddp", store=args.store)
saves = ModelCheckpoint(
    dirpath=os.path.join(args.root, "c"), every_n_train_steps=2, save_top_k=-1
)
rank = fit(logger, args.root, 4, checkpoint=saves)
os.write(1, f"FIRST {rank} {logger.version}\\n".encode())
fit(logger, args.root, 4)
os.write(1, f"SECOND {rank} {logger.version}\\n".encode())
resumed = TrackerLogger(project="lit-ddp", store=args.store)
fit(resumed, args.root, 6, ckpt_path=os.path.join(args.root, "c", "epoch=0-step=2.ckpt"))
os.write(1, f"RESUMED {rank} {resumed.version}\\n".encode())
"""


def test_ddp_second_fit_and_resume(tmp_path: Path, store: str) -> None:
    script = tmp_path / "three_fits.py"
    script.write_text(THREE_FITS)
    done = subprocess.run(
        [sys.executable, str(script), "--store", store, "--root", str(tmp_path / "root")],
        env=python_env(OMP_NUM_THREADS="1", TRACKER_RANK_CLOSE_TIMEOUT="10"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "lower than its last step" not in done.stderr
    ids = {}
    for phase in ("FIRST", "SECOND", "RESUMED"):
        found = set(re.findall(rf"{phase} (\d) ([A-Za-z0-9._-]+)", done.stdout))
        assert {rank for rank, _ in found} == {"0", "1"}, done.stdout
        assert len({run_id for _, run_id in found}) == 1, done.stdout  # the ranks agree
        ids[phase] = found.pop()[1]
    first, second = ids["FIRST"], ids["SECOND"]
    assert ids["RESUMED"] == first != second

    runs = {row["id"]: row for row in tracker.list_runs(project="lit-ddp", store=store)}
    assert set(runs) == {first, second}
    assert all(row["status"] == "finished" for row in runs.values())
    figures = ("per_rank/step_time", "per_rank/samples_per_second", "per_rank/train_loss")

    # The second fit: a run of its own, linked to the first, with both ranks' figures.
    r = tracker.read_run(second, project="lit-ddp", store=store)
    assert r["lineage/previous_run"].fetch() == first
    assert f"group:{first}" in r.tags
    assert r.ranks() == [0, 1]
    assert list(r["train_loss"].fetch_values().step) == [0, 1, 2, 3]
    for rank in (0, 1):
        for key in figures:
            assert list(r[key].fetch_values(rank=rank).step) == [0, 1, 2, 3], (key, rank)

    # The first run, rewound to the checkpoint and trained further: each step once by
    # default, the abandoned steps 2-3 kept (on every rank).
    r = tracker.read_run(first, project="lit-ddp", store=store)
    both = [0, 1, 2, 2, 3, 3, 4, 5]
    assert list(r["train_loss"].fetch_values().step) == list(range(6))
    assert list(r["train_loss"].fetch_values(include_superseded=True).step) == both
    for rank in (0, 1):
        for key in figures:
            assert list(r[key].fetch_values(rank=rank).step) == list(range(6)), (key, rank)
            everything = r[key].fetch_values(rank=rank, include_superseded=True)
            assert list(everything.step) == both, (key, rank)


class SpawnModel(BoringModel):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"])
        return out

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().test_step(batch, batch_idx)
        self.log("test_loss", out["y"], sync_dist=True)
        return out


class WriteVersion(Callback):
    """Each spawned rank writes the logger's version to a file, per stage."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _write(self, trainer: Any, stage: str) -> None:
        name = f"{stage}-{trainer.global_rank}"
        Path(self.directory, name).write_text(str(trainer.logger.version))

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._write(trainer, "fit")

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._write(trainer, "test")


def _spawn_trainer(logger: TrackerLogger, directory: Path) -> Trainer:
    directory.mkdir()
    return Trainer(
        logger=logger,
        strategy="ddp_spawn",
        accelerator="cpu",
        devices=2,
        max_steps=2,
        limit_val_batches=0,
        limit_test_batches=2,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(directory),
        callbacks=[WriteVersion(str(directory))],
    )


def _versions(directory: Path, stage: str) -> set[str]:
    return {(directory / f"{stage}-{rank}").read_text() for rank in (0, 1)}


def test_ddp_spawn_fit_then_test_and_a_second_fit(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    logger = TrackerLogger(project="lit-spawn", store=store)
    model = SpawnModel()
    trainer = _spawn_trainer(logger, tmp_path / "first")
    trainer.fit(model)
    first = logger.version
    # This process never trained, yet knows the run: the id was chosen before the
    # workers got their copies of the logger.
    assert first is not None
    assert _versions(tmp_path / "first", "fit") == {first}

    trainer.test(model)  # spawns again: into the run the fit wrote
    assert _versions(tmp_path / "first", "test") == {first}
    assert [row["id"] for row in tracker.list_runs(store=store)] == [first]
    r = tracker.read_run(first, project="lit-spawn", store=store)
    assert r.status == "finished"
    assert list(r["train_loss"].fetch_values().step) == [0, 1]
    # At Lightning's step: under spawn this process's Trainer never counted the workers'
    # steps, so the test stage logs at 0.
    assert len(r["test_loss"].fetch_values()) == 1
    assert r.ranks() == [0, 1]

    # A second fit through the same logger (Lightning needs a new Trainer for it under
    # spawn): a new training, so a run of its own, linked to the first, as without spawn.
    _spawn_trainer(logger, tmp_path / "second").fit(SpawnModel())
    second = logger.version
    assert second not in (None, first)
    assert _versions(tmp_path / "second", "fit") == {second}
    runs = {row["id"]: row["status"] for row in tracker.list_runs(store=store)}
    assert runs == {first: "finished", second: "finished"}
    r2 = tracker.read_run(second, project="lit-spawn", store=store)
    assert r2[PREVIOUS_RUN_FIELD].fetch() == first
    assert GROUP_TAG_PREFIX + first in r2.tags
    assert list(r2["train_loss"].fetch_values().step) == [0, 1]

    # Written here after the workers closed the run: kept, and the run stays finished.
    logger.log_hyperparams({"after": 1})
    r2 = tracker.read_run(second, project="lit-spawn", store=store)
    assert r2["config/after"].fetch() == 1
    assert r2.status == "finished"
