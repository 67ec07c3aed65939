"""The coordinator's shape in real torchrun jobs: sockets per rank, node leaders, the
writer's ingest process outliving a killed rank 0, a dead leader, silent ranks."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tracker

from ..conftest import python_env

pytest.importorskip("torch", reason="torch is not installed")
psutil = pytest.importorskip("psutil", reason="psutil is not installed (the test extra)")
pytestmark = pytest.mark.distributed

SCRIPT = Path(__file__).parent / "scripts" / "topology_job.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(store: str, scenario: str, nproc: int, **env: str) -> list[tuple[int, str, str]]:
    """torchrun --nnodes=2 on localhost: two agents, ``nproc`` ranks each."""
    port = _free_port()
    common = [
        *TORCHRUN,
        "--nnodes=2",
        f"--nproc_per_node={nproc}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        f"--rdzv-id={scenario}-test",
    ]
    environ = python_env(OMP_NUM_THREADS="1", TRACKER_RANK_CLOSE_TIMEOUT="10", **env)
    nodes = [
        subprocess.Popen(
            [*common, f"--node-rank={n}", str(SCRIPT), "--store", store, "--scenario", scenario],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (0, 1)
    ]
    results = []
    for node, limit in ((nodes[1], 120), (nodes[0], 20)):
        try:
            out, err = node.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            # A node whose peer agent failed waits at torchrun's exit barrier (minutes)
            # once its workers are done: what they did is in hand, stop it.
            node.kill()
            out, err = node.communicate()
        results.append((node.returncode, out, err))
    return results[::-1]


def _standalone(store: str, scenario: str, nproc: int, **env: str) -> subprocess.CompletedProcess:
    cmd = [*TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", str(SCRIPT)]
    cmd += ["--store", store, "--scenario", scenario]
    environ = python_env(OMP_NUM_THREADS="1", TRACKER_RANK_CLOSE_TIMEOUT="10", **env)
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=180)


def _run_id(out: str) -> str:
    (run_id,) = set(re.findall(r"RUN_ID \d+ ([A-Za-z0-9._-]+)", out))
    return run_id


def test_sockets_per_rank_are_constant_and_the_writer_sees_nodes_not_ranks(store: str) -> None:
    results = _two_nodes(store, "sockets", 3)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    out = "".join(o for _, o, _ in results)
    counts = {int(r): json.loads(c) for r, c in re.findall(r"SOCKETS (\d+) (.+)", out)}
    assert sorted(counts) == list(range(6))
    # Ranks 1-2 share node 0 with the ingest, ranks 3-5 are node 1 (rank 3 leads it).
    # Every count includes the script's own client of the job's store (one TCP).
    for rank in (1, 2, 4, 5):
        # One Unix connection to the ingest or the leader, and no other TCP: a full mesh
        # (the gloo side group) held one TCP connection per other rank in every rank.
        assert counts[rank]["tcp"] == 1, counts[rank]
        assert counts[rank]["unix"] == 1, counts[rank]
    # The leader: one TCP connection upstream; its node's ranks over Unix sockets (its
    # own connection both ends, one per other local rank, maybe its listener).
    assert counts[3]["tcp"] == 2, counts[3]
    assert 4 <= counts[3]["unix"] <= 5, counts[3]
    # Rank 0's training process: nothing of tracker's beyond the job's store (at most
    # one client of it besides the script's); it takes no rank's traffic.
    assert counts[0]["tcp"] <= 2, counts[0]
    assert counts[0]["unix"] == 0, counts[0]
    ingest = counts[0]["ingest"]
    assert ingest["tcp"] == 1, ingest  # one per other node, whatever its ranks
    assert 2 <= ingest["unix"] <= 3, ingest  # its own node's ranks 1 and 2 (+ listener)
    r = tracker.read_run(_run_id(out), store=store)
    assert r.status == "finished"
    assert r.ranks() == list(range(6))
    for rank in range(6):
        assert r["loss"].fetch_values(rank=rank).value.tolist() == [
            rank * 10.0 + s for s in range(5)
        ]


def test_ingest_outlives_a_sigkilled_rank_0_and_makes_what_it_took_durable(store: str) -> None:
    proc = _standalone(store, "kill_writer", 2)
    assert proc.returncode != 0  # rank 0 was killed
    pid = int(re.search(r"INGEST_PID (\d+)", proc.stdout).group(1))  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the ingest was left behind"
        time.sleep(0.1)
    r = tracker.read_run(_run_id(proc.stdout), store=store)
    # Only the ingest ever held rank 1's points: they are in the run.
    assert r["loss"].fetch_values(rank=1).step.tolist() == list(range(10))
    assert r.status != "running"


def test_a_dead_leader_does_not_hold_close(store: str) -> None:
    t0 = time.monotonic()
    results = _two_nodes(store, "leader_killed", 2)
    elapsed = time.monotonic() - t0
    out = "".join(o for _, o, _ in results)
    r = tracker.read_run(_run_id(out), store=store)
    assert r.status == "failed"  # closed, not running or crashed, and failed by the loss
    assert r["ranks/2/status"].fetch() == "lost"  # the leader itself
    for rank in range(4):  # everything sent before the leader died, its node's too
        assert r["loss"].fetch_values(rank=rank).step.tolist() == list(range(6))
    assert elapsed < 90, elapsed
    for line in out.splitlines():
        if line.startswith("CLOSE_SECONDS 0 "):
            assert float(line.split()[2]) <= 12.0  # TRACKER_RANK_CLOSE_TIMEOUT=10


def test_a_rank_that_stops_logging_becomes_a_silent_rank_event_and_its_points_are_watched(
    store: str,
) -> None:
    proc = _standalone(store, "silent", 2, TRACKER_RANK_SILENT_AFTER="2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = tracker.read_run(_run_id(proc.stdout), store=store)
    events = [json.loads(v) for v in r["sys/events"].fetch_values().value]
    silent = [e for e in events if e["kind"] == "silent_rank"]
    assert len(silent) == 1, events  # once per silence
    (event,) = silent
    assert event["rank"] == 1
    assert event["host"] == socket.gethostname()
    assert event["step"] == 2  # its last step
    assert event["level"] == "warning"
    assert "rank 1 (host" in event["message"]
    # The other ranks' points are watched in the ingest: rank 1's NaN and its point past
    # the rule rank 0 registered become events too.
    found = {(e["kind"], e["rank"], e["path"], e["step"]) for e in events}
    assert ("nonfinite", 1, "loss", 1) in found, events
    assert ("threshold", 1, "loss", 2) in found, events


def test_a_run_opened_again_while_open_keeps_one_ingest_for_both_openings(store: str) -> None:
    proc = _standalone(store, "reopen", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "INGESTS 1 True" in proc.stdout, proc.stdout
    assert "did not finish" not in proc.stderr, proc.stderr[-3000:]
    r = tracker.read_run(_run_id(proc.stdout), store=store)
    assert r.status == "finished"
    assert r["loss"].fetch_values(rank=1).value.tolist() == [10.0, 11.0]
