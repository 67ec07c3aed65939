"""The examples run end to end (few steps) and leave the run they promise."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tracker

from ..conftest import ROOT, python_env

pytest.importorskip("torch", reason="torch is not installed")


def test_quickstart_end_to_end(store: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--steps", "60"],
        env=python_env(TRACKER_STORE=store),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = tracker.list_runs(project="quickstart", store=store)
    assert row["status"] == "finished" and row["tags"] == ["mlp", "synthetic"]
    assert row["config"]["steps"] == 60
    r = tracker.read_run(row["id"], store=store)
    loss = r["train/loss"].fetch_values()
    assert loss.step.tolist() == list(range(60))
    assert loss.value[-10:].mean() < loss.value[:10].mean()  # it really trained
    assert len(r["eval/loss"].fetch_values()) == 3
    assert "sys/process/rss_mb" in r.paths()
    assert row["id"] in proc.stdout


@pytest.mark.distributed
def test_ddp_example_under_torchrun(store: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "examples" / "ddp_torchrun.py"),
            "--steps",
            "10",
        ],
        env=python_env(TRACKER_STORE=store, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = tracker.list_runs(project="ddp-demo", store=store)
    r = tracker.read_run(row["id"], store=store)
    assert r.ranks() == [0, 1]
    assert len(r["perf/step_s"].fetch_values(rank=1)) == 10
