"""The coordinator's wire when something goes wrong (no torch): an fsync that fails,
strangers on the ingest's ports, a stalled ingest, a rank's socket held by a child."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import tracker
from tracker.core.journal import read_records
from tracker.core.run import Run
from tracker.rank_utils import coordinator, wire
from tracker.rank_utils import ingest as ingest_module
from tracker.rank_utils.coordinator import _Sender, shipment
from tracker.rank_utils.ingest import STORE_ENV, IngestProcess
from tracker.rank_utils.launchers import RankInfo
from tracker.rank_utils.leader import NodeLeader

from ..conftest import python_env

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


def _points(rank: int, steps: range) -> bytes:
    return shipment([(s, time.time(), {"loss": float(rank * 100 + s)}) for s in steps], rank)


def _start(store: str, world: int, **kw: Any) -> tuple[Any, IngestProcess, dict[str, Any]]:
    run = tracker.init_run(project="faults", store=store, system_metrics=False, quiet=True)
    ingest = IngestProcess.start(store=store, run_id=run.id, world_size=world, node="w", **kw)
    address = ingest.wait_ready(30)
    assert address is not None
    return run, ingest, address


def _hello_node(address: dict[str, Any], ranks: list[int]) -> socket.socket:
    sock = wire.connect_tcp(address["hosts"], address["port"])
    sock.sendall(b"".join(wire.hello(r, "test|1", address["token"]) for r in ranks))
    return sock


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _finished_in_time(fn: Any, limit: float) -> Any:
    """``fn()``'s result, failing (instead of hanging the suite) past ``limit`` s."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    thread.join(limit)
    assert out, f"still blocked after {limit} s"
    return out[0]


# Fails the first fsync of a journal segment, as a full or failing disk does.
FAIL_FIRST_FSYNC = """
import os, stat, sys
real = os.fsync
failed = []
def fsync(fd):
    if not failed and stat.S_ISREG(os.fstat(fd).st_mode):
        failed.append(fd)
        raise OSError(5, "Input/output error (injected)")
    return real(fd)
os.fsync = fsync
from tracker.rank_utils.ingest import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_failed_fsync_is_retried_without_journaling_the_batch_twice(store: str) -> None:
    run = tracker.init_run(project="faults", store=store, system_metrics=False, quiet=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", FAIL_FIRST_FSYNC, "--run-id", run.id, "--world-size", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=python_env(**{STORE_ENV: store}),
        start_new_session=True,
    )
    ingest = IngestProcess(proc, None, None)
    address = ingest.wait_ready(30)
    assert address is not None
    sock = _hello_node(address, [1])
    sock.sendall(wire.frame(wire.DATA, 1, _points(1, range(5))))
    time.sleep(1.2)  # a cycle whose fsync fails, and its retry
    sock.sendall(wire.frame(wire.BYE, 1, _points(1, range(5, 7))))
    report = ingest.finish(10)
    sock.close()
    run.close()
    assert report is not None and report["missing"] == []
    (segment,) = (Path(store) / "journal" / run.id).glob(f"*-{proc.pid}.jnl")
    steps = [
        step
        for _end, batch in read_records(segment)
        for op in batch
        if op[0] == "logs"
        for step in _steps(op)
    ]
    assert sorted(steps) == list(range(7)), steps  # each point journaled once
    assert b"could not make its journal durable" in proc.stderr.read()  # type: ignore[union-attr]
    r = tracker.read_run(run.id, store=store)
    assert r["loss"].fetch_values(rank=1).step.tolist() == list(range(7))


def _steps(op: Any) -> list[int]:
    import numpy as np

    out: list[int] = []
    for group in op[3]:
        if group[0] == "cols":
            out += np.frombuffer(group[2], dtype=np.int64).tolist()
        else:
            out += [int(s) for s in group[2]]
    return out


def test_a_stranger_announcing_a_huge_frame_is_dropped_before_it_is_buffered(store: str) -> None:
    run, ingest, address = _start(store, 2)
    pid = ingest.proc.pid
    before = _rss_kb(pid)
    stranger = socket.create_connection(("127.0.0.1", address["port"]))
    # No HELLO: a header announcing a 1 GiB frame, then its first 64 MiB.
    stranger.sendall(wire.HEADER.pack(1 << 30, wire.DATA, 1))
    stranger.settimeout(5)
    chunk = b"\0" * (1 << 20)
    with pytest.raises(OSError):
        for _ in range(64):
            stranger.sendall(chunk)
        stranger.recv(1)  # the ingest hung up
        raise OSError("not dropped")
    stranger.close()
    assert _rss_kb(pid) - before < 16 << 10  # KiB: nothing of it was held
    # A HELLO too large to be one, and a first frame other than HELLO, go the same way.
    for opening in (
        wire.HEADER.pack(wire.MAX_HELLO + 1, wire.HELLO, 1) + b"{" * 100,
        wire.frame(wire.DATA, 1, _points(1, range(3))),
    ):
        sock = socket.create_connection(("127.0.0.1", address["port"]))
        sock.settimeout(5)
        sock.sendall(opening)
        assert sock.recv(1) == b""
        sock.close()
    # The job's ranks are welcome as before, their HELLO and data in one write.
    sock = wire.connect_tcp(address["hosts"], address["port"])
    sock.sendall(
        wire.hello(1, "test|1", address["token"]) + wire.frame(wire.BYE, 1, _points(1, range(3)))
    )
    report = ingest.finish(10)
    sock.close()
    run.close()
    assert report is not None and report["missing"] == []
    assert tracker.read_run(run.id, store=store)["loss"].fetch_values(rank=1).step.tolist() == [
        0,
        1,
        2,
    ]


def test_out_of_file_descriptors_the_ingest_rests_instead_of_spinning(store: str) -> None:
    run, ingest, address = _start(store, 2)
    pid = ingest.proc.pid
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (fds + 4, hard))
    idle = [socket.create_connection(("127.0.0.1", address["port"])) for _ in range(30)]
    time.sleep(0.5)
    cpu = _cpu_s(pid)
    time.sleep(2.0)
    used = _cpu_s(pid) - cpu
    for sock in idle:
        sock.close()
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, hard))
    ingest.finish(0)
    run.close()
    assert used < 0.6, used  # a spinning accept loop takes the whole 2 s


def test_the_store_location_is_not_on_the_ingests_command_line(store: str) -> None:
    run, ingest, _ = _start(store, 2)
    cmdline = Path(f"/proc/{ingest.proc.pid}/cmdline").read_bytes()
    ingest.finish(0)
    run.close()
    assert store.encode() not in cmdline
    assert b"store" not in cmdline


def test_an_ingest_that_stops_reading_does_not_hold_rank_0s_close(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "CLOSE_GRACE_S", 1.0)
    run, ingest, _ = _start(store, 2)
    os.kill(ingest.proc.pid, signal.SIGSTOP)
    try:
        # Far more than its stdin pipe holds: beats that find it full are dropped.
        def beats() -> None:
            for i in range(5000):
                ingest._send(f"beat {json.dumps([i, 'x' * 60])}\n", keep=False)

        _finished_in_time(beats, 10)
        t0 = time.monotonic()
        with pytest.warns(RuntimeWarning, match="has not finished"):
            _finished_in_time(lambda: ingest.finish(1.0), 20)
        assert time.monotonic() - t0 < 1.0 + 1.0 + 3.0
    finally:
        os.kill(ingest.proc.pid, signal.SIGCONT)
    ingest.proc.wait(20)  # resumed, it finds the end of its stdin and exits
    run.close()


def test_a_rank_whose_child_holds_its_socket_does_not_delay_its_leaders_close(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKER_RANK_CLOSE_TIMEOUT", "10")
    run, ingest, address = _start(store, 3)
    upstream = wire.connect_tcp(address["hosts"], address["port"])
    leader = NodeLeader(upstream, address["token"], ranks=2)
    info = RankInfo(1, 0, 3, 2, 1, None, "test")
    sender = _Sender(wire.connect_local(leader.name), info, "test|1", address, leader)
    other = _Sender(
        wire.connect_local(leader.name),
        RankInfo(2, 1, 3, 2, 1, None, "test"),
        "test|1",
        address,
        None,
    )
    # A forked DataLoader worker: a child process that holds rank 1's socket open.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(sender.sock.fileno(),)
    )
    try:
        other.send(coordinator.transport.BYE, _points(2, range(2)))
        t0 = time.monotonic()
        sender.send(coordinator.transport.BYE, _points(1, range(3)))  # waits on the leader
        elapsed = time.monotonic() - t0
    finally:
        child.kill()
        child.wait()
    report = ingest.finish(10)
    run.close()
    assert elapsed < 3.0, elapsed
    assert report is not None and report["missing"] == []
    r = tracker.read_run(run.id, store=store)
    assert r["loss"].fetch_values(rank=1).step.tolist() == [0, 1, 2]


def test_a_stalled_ingest_does_not_hold_a_ranks_flush_or_close(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = pytest.importorskip("torch.distributed")
    monkeypatch.setenv("TRACKER_RANK_CLOSE_TIMEOUT", "2")
    run, ingest, address = _start(store, 2)
    # Rank 1 on the ingest's node: its job's store is an in-process one.
    info = RankInfo(1, 1, 2, 2, 0, None, "test")
    link = coordinator._SocketLink(info, run.id, dist.HashStore())
    link.store.set(link.prefix + "ingest", json.dumps({**address, "node": wire.node_key(0)}))
    shipper = coordinator.Shipper(info, link, flush_interval=0.1)
    rank = Run(
        run_id=run.id,
        project="faults",
        name=None,
        writer=shipper,
        rank=1,
        world_size=2,
        is_writer=False,
    )
    rank.log({"loss": 1.0}, step=0)
    rank.flush()
    assert shipper._connected
    os.kill(ingest.proc.pid, signal.SIGSTOP)
    try:
        # Far more than the socket buffers hold: sends that block, then time out.
        rank._assign_many({"blob": "x" * (48 << 20)})
        t0 = time.monotonic()
        with pytest.warns(RuntimeWarning, match="cannot send to rank 0"):
            _finished_in_time(rank.flush, 30)
            _finished_in_time(shipper._thread.join, 30)
        flushed = time.monotonic() - t0
        for step in range(1, 1001):
            rank.log({"loss": float(step)}, step=step)
        assert len(shipper.queue) <= 1 and shipper.dropped >= 1000  # dropped, counted
        t0 = time.monotonic()
        _finished_in_time(rank.close, 30)
        closed = time.monotonic() - t0
    finally:
        os.kill(ingest.proc.pid, signal.SIGCONT)
    ingest.finish(0)
    run.close()
    # Each send waits 2 s (the close timeout): one to the ingest's Unix socket, then
    # one over TCP straight to it; then the rank stops shipping.
    assert flushed < 2 * 2 + 6, flushed
    assert closed < 2 + 3, closed


def test_loopback_is_tried_only_for_a_listener_on_this_very_host() -> None:
    here = socket.gethostname()
    hosts = ["10.0.0.5", "node-a", "127.0.0.1"]
    assert wire.hosts_for({"hosts": hosts, "node": f"{here}|0"}) == hosts
    # Another host's ingest: loopback there would reach whatever listens here.
    assert wire.hosts_for({"hosts": hosts, "node": f"{here}-other|0"}) == ["10.0.0.5", "node-a"]


def test_numbered_frames_that_never_arrive_are_counted_as_lost_batches(store: str) -> None:
    run, ingest, address = _start(store, 2)
    sender = 0x1234

    def numbered(kind: int, seq: int, steps: range) -> bytes:
        return wire.frame(kind, 1, wire.SEQ.pack(sender, seq) + _points(1, steps))

    sock = wire.connect_tcp(address["hosts"], address["port"])
    sock.sendall(wire.hello(1, "test|1", address["token"], f"{sender:x}"))
    # Frames 1 and 2 went to a leader that died; 2 turns up late by another path.
    sock.sendall(numbered(wire.DATA_N, 0, range(0, 2)) + numbered(wire.DATA_N, 3, range(6, 8)))
    sock.sendall(numbered(wire.DATA_N, 2, range(4, 6)) + numbered(wire.BYE_N, 4, range(8, 9)))
    report = ingest.finish(10)
    sock.close()
    run.close()
    assert report is not None and report["missing"] == [] and report["lost_batches"] == {"1": 1}
    r = tracker.read_run(run.id, store=store)
    assert r["ranks/1/lost_batches"].fetch() == 1
    assert r["loss"].fetch_values(rank=1).step.tolist() == [0, 1, 4, 5, 6, 7, 8]


def test_a_leader_drops_a_local_stranger_before_it_is_buffered(store: str) -> None:
    run, ingest, address = _start(store, 2)
    leader = NodeLeader(wire.connect_tcp(address["hosts"], address["port"]), address["token"])
    for opening in (
        wire.HEADER.pack(1 << 30, wire.DATA, 1),  # no HELLO: a 1 GiB frame announced
        wire.hello(1, "test|1", "not-the-token"),
    ):
        sock = wire.connect_local(leader.name)
        sock.settimeout(5)
        sock.sendall(opening)
        assert sock.recv(1) == b""  # the leader hung up
        sock.close()
    leader.finish(0)
    report = ingest.finish(0)
    run.close()
    assert report is not None and report["missing"] == [1]  # nothing reached the ingest


def test_a_rank_that_never_learns_where_to_send_warns_and_drops_what_it_logs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dist = pytest.importorskip("torch.distributed")
    monkeypatch.setattr(coordinator, "DEFAULT_CONNECT_TIMEOUT_S", 0.5)
    info = RankInfo(1, 1, 2, 2, 0, None, "test")
    shipper = coordinator.Shipper(info, coordinator._SocketLink(info, "nowhere", dist.HashStore()))
    rank = Run(run_id="nowhere", project="faults", name=None, writer=shipper, rank=1, world_size=2)
    with pytest.warns(RuntimeWarning, match="did not publish where to send"):
        _finished_in_time(shipper._thread.join, 10)
    for step in range(100):
        rank.log({"loss": float(step)}, step=step)
    assert len(shipper.queue) <= 1 and shipper.dropped >= 99
    _finished_in_time(rank.close, 5)
