"""The rank coordinator under real torchrun (gloo on CPU): one run per job."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tracker

from ..conftest import python_env

torch = pytest.importorskip("torch", reason="torch is not installed")
pytestmark = pytest.mark.distributed

SCRIPT = Path(__file__).parent / "scripts" / "ranks_job.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    store: str,
    scenario: str,
    nproc: int,
    *extra: str,
    timeout: float = 180,
    env_extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    cmd = [
        *TORCHRUN,
        "--standalone",
        f"--nproc_per_node={nproc}",
        *extra,
        str(SCRIPT),
        "--store",
        store,
        "--scenario",
        scenario,
    ]
    env = python_env(OMP_NUM_THREADS="1", TRACKER_RANK_CLOSE_TIMEOUT="10", **(env_extra or {}))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _run_ids(out: str) -> set[str]:
    return set(re.findall(r"RUN_ID \d+ ([A-Za-z0-9._-]+)", out))


@pytest.mark.parametrize("init_first", ["torch", "tracker"])
def test_one_run_with_every_rank(store: str, init_first: str) -> None:
    proc = (
        torchrun(store, "basic", 3, env_extra=None)
        if init_first == "torch"
        else subprocess.run(
            [
                *TORCHRUN,
                "--standalone",
                "--nproc_per_node=3",
                str(SCRIPT),
                "--store",
                store,
                "--scenario",
                "basic",
                "--init-first",
                "tracker",
            ],
            env=python_env(OMP_NUM_THREADS="1"),
            capture_output=True,
            text=True,
            timeout=180,
        )
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = _run_ids(proc.stdout)
    assert len(ids) == 1  # every rank agreed on one run id
    runs = tracker.list_runs(project="dist", store=store)
    assert [r["id"] for r in runs] == list(ids)
    r = tracker.read_run(runs[0]["id"], store=store)
    assert r.status == "finished"
    assert r.ranks() == [0, 1, 2]
    for rank in range(3):
        loss = r["train/loss"].fetch_values(rank=rank)
        assert loss.step.tolist() == list(range(20))
        assert loss.value[0] == 1.0 + rank
        assert r["train/sum"].fetch_values(rank=rank).value.tolist() == [3.0] * 20
        assert r[f"ranks/{rank}/local_rank"].fetch() == rank
        assert r[f"ranks/{rank}/node_rank"].fetch() == 0
        # Each rank samples its own host and process.
        assert len(r["sys/process/rss_mb"].fetch_values(rank=rank)) >= 1
    assert r["eval/score"].fetch() == 0.0  # the writer's own value at the plain path
    assert r["ranks/2/eval/score"].fetch() == 2.0
    mean = r["train/loss"].fetch_values(aggregate="mean")
    assert mean.value[0] == pytest.approx((1.0 + 2.0 + 3.0) / 3)
    assert r["job/world_size"].fetch() == 3


def test_uneven_ranks_finish_with_all_points(store: str) -> None:
    t0 = time.monotonic()
    proc = torchrun(store, "uneven", 3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - t0 < 120
    (run_id,) = _run_ids(proc.stdout)
    r = tracker.read_run(run_id, store=store)
    assert r.status == "finished"
    assert len(r["loss"].fetch_values(rank=0)) == 30
    assert len(r["loss"].fetch_values(rank=1)) == 90
    assert len(r["only/rank1"].fetch_values(rank=1)) == 90
    with pytest.raises(KeyError):
        r["loss"].fetch_values(rank=2)
    assert r["ranks/2/host"].fetch()  # rank 2 logged nothing but joined the run


def test_killed_rank_does_not_hold_close(store: str) -> None:
    t0 = time.monotonic()
    proc = torchrun(store, "kill", 3, timeout=240)
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0  # torchrun reports the killed worker
    (run_id,) = _run_ids(proc.stdout)
    r = tracker.read_run(run_id, store=store)
    assert r.status in ("terminated", "failed")  # closed, not left running or crashed
    # Rank 1 died only once ranks 0 and 2 had logged every step (a hand-off through
    # torchrun's store, not a race with torchrun's SIGTERM).
    for rank in (0, 2):
        assert r["loss"].fetch_values(rank=rank).step.tolist() == list(range(10))
    assert r["loss"].fetch_values(rank=1).step.tolist() == list(range(6))  # flushed before death
    # Rank 0's close (by its own call or by torchrun's SIGTERM) ended well within the
    # bound set by TRACKER_RANK_CLOSE_TIMEOUT=10 plus start-up.
    assert elapsed < 120, elapsed
    for line in proc.stdout.splitlines():
        if line.startswith("CLOSE_SECONDS 0 "):
            assert float(line.split()[2]) <= 12.0


def test_exception_on_last_rank_fails_the_run_with_its_traceback(store: str) -> None:
    proc = torchrun(store, "raise", 4, timeout=240)
    assert proc.returncode != 0
    (run_id,) = _run_ids(proc.stdout)
    r = tracker.read_run(run_id, store=store)
    assert r.status == "failed"
    assert r["ranks/3/status"].fetch() == "failed"
    assert "RuntimeError: rank 3 broke on purpose" in r["ranks/3/traceback"].fetch()
    assert len(r["loss"].fetch_values(rank=3)) == 5


def test_elastic_restart_continues_the_same_run_without_duplicates(store: str) -> None:
    proc = torchrun(store, "elastic", 2, "--max-restarts=1", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = _run_ids(proc.stdout)
    assert len(ids) == 1  # both attempts, every rank: one run
    r = tracker.read_run(ids.pop(), store=store)
    assert r.status == "finished"
    assert r["attempts"].fetch() == 1
    for rank in (0, 1):
        # The restart rewound to the checkpoint's step 4: the first attempt's later
        # points are superseded (kept), so the default view has each step once.
        loss = r["loss"].fetch_values(rank=rank)
        assert loss.step.tolist() == list(range(10))
        assert loss.value.tolist() == [float(s) + 100 * rank for s in range(10)]
    # Every rank logged steps 0-5 before rank 1 failed (rank 0 then waited to be
    # stopped); each rank's step 5 of that attempt is kept.
    for rank in (0, 1):
        everything = r["loss"].fetch_values(rank=rank, include_superseded=True)
        assert everything.step.tolist() == [0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]
    assert len(tracker.list_runs(project="dist", store=store)) == 1


def test_two_nodes_on_localhost_make_one_run(store: str) -> None:
    port = _free_port()
    common = [
        *TORCHRUN,
        "--nnodes=2",
        "--nproc_per_node=2",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        "--rdzv-id=two-nodes-test",
    ]
    env = python_env(OMP_NUM_THREADS="1", TRACKER_RANK_CLOSE_TIMEOUT="20")
    nodes = [
        subprocess.Popen(
            [*common, f"--node-rank={n}", str(SCRIPT), "--store", store, "--scenario", "multinode"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (0, 1)
    ]
    outs = [n.communicate(timeout=240) for n in nodes]
    for node, (_, err) in zip(nodes, outs, strict=True):
        assert node.returncode == 0, err[-3000:]
    ids = set().union(*(_run_ids(out) for out, _ in outs))
    assert len(ids) == 1
    r = tracker.read_run(ids.pop(), store=store)
    assert r.ranks() == [0, 1, 2, 3]
    assert [r[f"ranks/{k}/node_rank"].fetch() for k in range(4)] == [0, 0, 1, 1]
    assert [r[f"ranks/{k}/local_rank"].fetch() for k in range(4)] == [0, 1, 0, 1]
    for k in range(4):
        assert r["loss"].fetch_values(rank=k).value.tolist() == [
            float(k * 10 + s) for s in range(10)
        ]
