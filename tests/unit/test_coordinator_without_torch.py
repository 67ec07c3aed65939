"""A multi-process job whose processes have no torch (say, SLURM running a JAX or plain
script): rank 0 still records its run, the others get a no-op run, and both are told."""

from __future__ import annotations

import subprocess
import sys

import tracker

from ..conftest import python_env

SCRIPT = """
import sys, warnings
sys.modules["torch"] = None  # as if torch were not installed
import tracker
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    run = tracker.init_run(project="no-torch", store=sys.argv[1], system_metrics=False)
print("WARNED", any("torch is not installed" in str(w.message) for w in caught))
print("RANK", run.rank, run.world_size, run.is_writer)
run.log({"x": 1.0})
run.close()
"""


def _rank(rank: int, store: str) -> str:
    env = python_env(
        SLURM_JOB_ID="77",
        SLURM_STEP_ID="0",
        SLURM_PROCID=str(rank),
        SLURM_LOCALID=str(rank),
        SLURM_NTASKS="2",
        SLURM_STEP_NUM_TASKS="2",
        SLURM_NODEID="0",
        SLURM_STEP_TASKS_PER_NODE="2",
        SLURM_JOB_NAME="train",
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, store], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_rank_zero_records_and_the_others_are_told(store: str) -> None:
    out1 = _rank(1, store)
    assert "WARNED True" in out1 and "RANK 1 2 False" in out1
    out0 = _rank(0, store)
    assert "WARNED True" in out0 and "RANK 0 2 True" in out0
    (row,) = tracker.list_runs(project="no-torch", store=store)
    r = tracker.read_run(row["id"], store=store)
    assert r.ranks() == [0]
    assert r["x"].fetch_values().value.tolist() == [1.0]
    assert r["job/world_size"].fetch() == 2
