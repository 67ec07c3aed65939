"""Ranks started by hand (RANK/WORLD_SIZE/MASTER_* only, no torchrun agent store):
init_run comes before init_process_group, and the link waits for the job's store."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tracker

from ..conftest import python_env

pytest.importorskip("torch", reason="torch is not installed")
pytestmark = pytest.mark.distributed

SCRIPT = textwrap.dedent(
    """
    import sys, torch.distributed as dist, tracker
    store, run_id = sys.argv[1], sys.argv[2] or None
    try:
        run = tracker.init_run(project="manual", store=store, run_id=run_id, system_metrics=False)
    except RuntimeError as exc:
        print("REFUSED", exc, flush=True)
        raise SystemExit(0)
    dist.init_process_group("gloo")  # after init_run: the link waits for this store
    rank = dist.get_rank()
    for step in range(5):
        run.log({"x": float(rank * 100 + step)}, step=step)
    dist.barrier()
    run.close()
    dist.destroy_process_group()
    """
)


def _launch(tmp_path: Path, store: str, run_id: str) -> list[subprocess.CompletedProcess]:
    script = tmp_path / "manual.py"
    script.write_text(SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), store, run_id],
            env=python_env(
                RANK=str(r),
                WORLD_SIZE="2",
                LOCAL_RANK=str(r),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
                TRACKER_RANK_CLOSE_TIMEOUT="20",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=180)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_init_run_before_init_process_group_without_torchrun(store: str, tmp_path: Path) -> None:
    for proc in _launch(tmp_path, store, "manual-run"):
        assert proc.returncode == 0, proc.stderr[-3000:]
    r = tracker.read_run("manual-run", store=store)
    assert r.status == "finished"
    assert r.ranks() == [0, 1]
    assert r["x"].fetch_values(rank=1).value.tolist() == [100.0 + s for s in range(5)]


def test_without_a_job_id_or_store_the_error_says_what_to_do(store: str, tmp_path: Path) -> None:
    for proc in _launch(tmp_path, store, ""):
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "REFUSED" in proc.stdout and "run_id=" in proc.stdout
