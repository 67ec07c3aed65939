"""The Hugging Face Trainer under torchrun (gloo on CPU): one run, metrics from rank 0,
per-rank step figures from every rank; and two torchrun invocations as two nodes."""

from __future__ import annotations

import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import tracker

from ..conftest import python_env

pytest.importorskip(
    "transformers", reason="needs transformers (pip install 'tracker-dl[transformers]')"
)
pytest.importorskip(
    "accelerate", reason="needs accelerate (pip install 'tracker-dl[transformers]')"
)
pytest.importorskip("torch", reason="needs torch")
pytestmark = pytest.mark.distributed

SCRIPT = Path(__file__).parent / "scripts" / "hf_ddp_job.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hook_installed() -> bool:
    return any(
        (Path(sysconfig.get_paths()[key]) / "tracker_hf_hook.pth").exists()
        for key in ("purelib", "platlib")
    )


def _env(store: str) -> dict[str, str]:
    return python_env(
        TRACKER_STORE=store,
        TRACKER_PROJECT="hf-ddp",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TRACKER_RANK_CLOSE_TIMEOUT="10",
    )


def _script_args(tmp_path: Path) -> list[str]:
    # Without the installed .pth (a plain checkout on PYTHONPATH) the script passes the
    # callback itself; report_to=["tracker"] alone is covered where the hook is installed.
    extra = [] if _hook_installed() else ["--explicit"]
    return [str(SCRIPT), "--out", str(tmp_path / "out"), "--steps", str(STEPS), *extra]


def _only_run(store: str) -> tracker.core.reader.RunReader:  # type: ignore[name-defined]
    runs = tracker.list_runs(project="hf-ddp", store=store)
    assert len(runs) == 1, runs
    return tracker.read_run(runs[0]["id"], project="hf-ddp", store=store)


def test_torchrun_two_processes_one_run(tmp_path: Path, store: str) -> None:
    done = subprocess.run(
        [*TORCHRUN, "--standalone", "--nproc_per_node=2", *_script_args(tmp_path)],
        env=_env(store),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("TRACKER_CALLBACKS") == 2
    r = _only_run(store)
    assert r.status == "finished"
    assert r.ranks() == [0, 1]
    # The Trainer's metrics come from rank 0 only.
    assert list(r["train/loss"].fetch_values().step) == list(range(1, STEPS + 1))
    with pytest.raises(KeyError):
        r["train/loss"].fetch_values(rank=1)
    assert r["config/training_args/report_to"].fetch() in ("[tracker]", "[]")
    # Per-rank step figures from both ranks, through the coordinator.
    for rank in (0, 1):
        assert list(r["per_rank/step_time"].fetch_values(rank=rank).step) == list(
            range(1, STEPS + 1)
        )
        assert min(r["per_rank/samples_per_second"].fetch_values(rank=rank).value) > 0


def test_two_nodes_on_localhost_one_run_with_every_node_rank(tmp_path: Path, store: str) -> None:
    port = str(_free_port())
    nodes = [
        subprocess.Popen(
            [
                *TORCHRUN,
                "--nnodes=2",
                f"--node_rank={node}",
                "--nproc_per_node=2",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                *_script_args(tmp_path / f"node{node}"),
            ],
            env=_env(store),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = []
    try:
        for proc in nodes:
            outputs.append(proc.communicate(timeout=300))
    finally:
        for proc in nodes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, err) in zip(nodes, outputs, strict=True):
        assert proc.returncode == 0, err[-4000:]
    r = _only_run(store)
    assert r.status == "finished"
    assert r.ranks() == [0, 1, 2, 3]
    assert r["job/world_size"].fetch() == 4
    for rank in range(4):
        assert r[f"ranks/{rank}/node_rank"].fetch() == rank // 2
        assert r[f"ranks/{rank}/local_rank"].fetch() == rank % 2
        assert len(r["per_rank/step_time"].fetch_values(rank=rank)) == STEPS
