"""The Hugging Face Trainer under torchrun (gloo on CPU): one run, metrics from rank 0,
per-rank step figures from every rank; ``evaluate()`` and ``predict()`` after training,
which log into that run and close it again on every rank; and two torchrun invocations
as two nodes."""

from __future__ import annotations

import socket
import subprocess
import sys
import sysconfig
import time
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


def _env(store: str, close_timeout: float = 10) -> dict[str, str]:
    return python_env(
        TRACKER_STORE=store,
        TRACKER_PROJECT="hf-ddp",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TRACKER_RANK_CLOSE_TIMEOUT=f"{close_timeout:g}",
    )


def _script_args(tmp_path: Path, *more: str) -> list[str]:
    # Without the installed .pth (a plain checkout on PYTHONPATH) the script passes the
    # callback itself; report_to=["tracker"] alone is covered where the hook is installed.
    extra = [] if _hook_installed() else ["--explicit"]
    return [str(SCRIPT), "--out", str(tmp_path / "out"), "--steps", str(STEPS), *extra, *more]


def _printed(stdout: str, tag: str) -> dict[int, list[str]]:
    """What each rank printed after ``tag`` (the script's ``TAG <rank> ...`` lines)."""
    out: dict[int, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith(tag + " "):
            _, rank, rest = line.split(" ", 2)
            out[int(rank)] = rest.split()
    return out


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
    assert r["config/training_args/report_to"].fetch() in (["tracker"], [])
    # Per-rank step figures from both ranks, through the coordinator.
    for rank in (0, 1):
        assert list(r["per_rank/step_time"].fetch_values(rank=rank).step) == list(
            range(1, STEPS + 1)
        )
        assert min(r["per_rank/samples_per_second"].fetch_values(rank=rank).value) > 0


def test_evaluate_and_predict_after_training_log_into_the_run_and_close_it_on_every_rank(
    tmp_path: Path, store: str
) -> None:
    close_timeout = 60.0
    done = subprocess.run(
        [
            *TORCHRUN,
            "--standalone",
            "--nproc_per_node=2",
            *_script_args(tmp_path, "--then", "evaluate", "predict"),
        ],
        env=_env(store, close_timeout),
        capture_output=True,
        text=True,
        timeout=300,
    )
    exited = time.time()
    assert done.returncode == 0, done.stderr[-4000:]
    # Every rank's callback closed the run it reopened: none is left open for the exit.
    assert _printed(done.stdout, "OPEN_AFTER") == {0: ["False"], 1: ["False"]}
    # Closing waited for no rank's timeout, then or at exit: from the end of training
    # to the end of the job (evaluate, predict, exit) is seconds, not the 60 s timeout.
    trained = min(float(v[0]) for v in _printed(done.stdout, "TRAINED").values())
    finished = max(float(v[0]) for v in _printed(done.stdout, "FINISHED").values())
    assert exited - trained < close_timeout / 2, (exited - trained, done.stderr[-4000:])
    assert exited - finished < close_timeout / 4, (exited - finished, done.stderr[-4000:])
    for trouble in ("did not finish within", "Connection refused", "lost contact", "cannot send"):
        assert trouble not in done.stderr, done.stderr[-4000:]

    r = _only_run(store)
    assert r.status == "finished"
    assert r.ranks() == [0, 1]
    assert list(r["train/loss"].fetch_values().step) == list(range(1, STEPS + 1))
    # evaluate() and predict() after training: in the one run, at its last step.
    assert list(r["eval/loss"].fetch_values().step) == [STEPS]
    for key in ("loss", "runtime", "samples_per_second"):
        assert list(r[f"test/{key}"].fetch_values().step) == [STEPS], key
    with pytest.raises(KeyError):
        r["test/loss"].fetch_values(rank=1)


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
