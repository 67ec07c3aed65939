"""The Horovod transport: the example script under horovodrun (gloo, CPU) gives one run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tracker

from ..conftest import ROOT, python_env

pytest.importorskip("horovod.torch", reason="horovod is not installed (scripts/build_horovod.sh)")
pytestmark = pytest.mark.distributed


def test_horovod_example_gives_one_run_with_both_ranks(store: str) -> None:
    horovodrun = shutil.which("horovodrun", path=str(Path(sys.executable).parent))
    assert horovodrun, "horovodrun is installed with horovod"
    proc = subprocess.run(
        [
            horovodrun,
            "-np",
            "2",
            "-H",
            "localhost:2",
            "--gloo",
            sys.executable,
            str(ROOT / "examples" / "horovod_train.py"),
        ],
        env=python_env(TRACKER_STORE=store, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    runs = tracker.list_runs(project="horovod-demo", store=store)
    assert len(runs) == 1
    r = tracker.read_run(runs[0]["id"], store=store)
    assert r.status == "finished"
    assert r.ranks() == [0, 1]
    for rank in (0, 1):
        loss = r["train/loss"].fetch_values(rank=rank)
        assert loss.step.tolist() == list(range(30))
        assert r[f"ranks/{rank}/local_rank"].fetch() == rank
    assert r["config/world_size"].fetch() == 2
    # The two ranks trained on different data: their losses are their own.
    assert (
        r["train/loss"].fetch_values(rank=0).value.tolist()
        != r["train/loss"].fetch_values(rank=1).value.tolist()
    )
