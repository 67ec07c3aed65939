"""Lightning strategy="ddp", two CPU processes (gloo): one run, Lightning's metrics from
rank 0, per-rank figures from both ranks, and no hang on keys only one rank logs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import tracker

from ..conftest import python_env

pytest.importorskip("lightning", reason="needs lightning (pip install 'tracker[lightning]')")
pytest.importorskip("torch", reason="needs torch")
pytestmark = pytest.mark.distributed

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
