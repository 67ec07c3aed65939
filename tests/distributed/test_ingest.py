"""The writer's ingest process on its own (no torch): the protocol, durability without
duplicates, the job's token, rank 0's death, silent ranks."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

import tracker
from tracker.core.replay import replay_run
from tracker.core.stores import open_store
from tracker.rank_utils import wire
from tracker.rank_utils.coordinator import shipment
from tracker.rank_utils.ingest import IngestProcess

pytestmark = pytest.mark.distributed


def _points(rank: int, steps: range) -> bytes:
    return shipment([(s, time.time(), {"loss": float(rank * 100 + s)}) for s in steps], rank)


def _node(address: dict[str, Any], ranks: list[int], token: str | None = None) -> socket.socket:
    """A node leader's connection, as the scale benchmark's emulated nodes make."""
    sock = wire.connect_tcp(address["hosts"], address["port"])
    token = address["token"] if token is None else token
    sock.sendall(b"".join(wire.hello(r, "test|1", token) for r in ranks))
    return sock


def _start(store: str, world: int, **kw: Any) -> tuple[Any, IngestProcess, dict[str, Any]]:
    run = tracker.init_run(project="ingest", store=store, system_metrics=False, quiet=True)
    ingest = IngestProcess.start(store=store, run_id=run.id, world_size=world, node="w", **kw)
    address = ingest.wait_ready(30)
    assert address is not None
    return run, ingest, address


def test_frames_cut_from_a_stream_in_any_pieces() -> None:
    data = wire.frame(wire.DATA, 3, b"abc") + wire.frame(wire.BYE, 4) + wire.frame(wire.GONE, 5)
    reader = wire.FrameReader()
    got = [f for i in range(len(data)) for f in reader.feed(data[i : i + 1])]
    assert got == [(wire.DATA, 3, b"abc"), (wire.BYE, 4, b""), (wire.GONE, 5, b"")]
    assert reader.pending == 0


def test_ingest_makes_ranks_points_durable_once_and_reports_failed_ranks(store: str) -> None:
    run, ingest, address = _start(store, 3)
    sock = _node(address, [1, 2])
    failed = shipment([("status", "failed", time.time(), "Traceback: boom")], 2)
    sock.sendall(
        wire.frame(wire.DATA, 1, _points(1, range(5)))
        + wire.frame(wire.DATA, 2, _points(2, range(3)))
        + wire.frame(wire.BYE, 1, _points(1, range(5, 8)))
        + wire.frame(wire.BYE, 2, failed)
    )
    t0 = time.monotonic()
    report = ingest.finish(20)
    assert time.monotonic() - t0 < 5  # every rank said goodbye: no waiting out the timeout
    sock.close()
    run.close()
    assert report is not None
    assert report["missing"] == [] and report["failed"] == {"2": "Traceback: boom"}
    assert ingest.proc.returncode == 0
    r = tracker.read_run(run.id, store=store)
    assert r["loss"].fetch_values(rank=1).step.tolist() == list(range(8))
    assert r["loss"].fetch_values(rank=2).value.tolist() == [200.0, 201.0, 202.0]
    assert r["ranks/2/status"].fetch() == "failed"
    # Replaying every journal from the start stores nothing twice: each record was
    # applied with its position.
    replay_run(open_store(store), run.id, from_start=True)
    r = tracker.read_run(run.id, store=store)
    assert len(r["loss"].fetch_values(rank=1)) == 8
    assert (
        len(list((Path(store) / "journal" / run.id).glob("*.jnl"))) == 2
    )  # rank 0's, the ingest's


def test_a_connection_without_the_jobs_token_is_refused(store: str) -> None:
    run, ingest, address = _start(store, 2)
    intruder = _node(address, [1], token="not-the-token")
    intruder.sendall(wire.frame(wire.BYE, 1, _points(1, range(3))))
    report = ingest.finish(1.5)
    intruder.close()
    run.close()
    assert report is not None and report["missing"] == [1]  # its goodbye did not count
    r = tracker.read_run(run.id, store=store)
    with pytest.raises(KeyError):
        r["loss"].fetch_values(rank=1)


def test_when_rank_0_dies_the_ingest_makes_what_it_took_durable_and_exits(store: str) -> None:
    run, ingest, address = _start(store, 2)
    sock = _node(address, [1])
    sock.sendall(wire.frame(wire.DATA, 1, _points(1, range(4))))
    time.sleep(0.1)  # in the ingest's socket, not yet in a cycle of it
    t0 = time.monotonic()
    ingest.end()  # rank 0's end of the pipe closes, as when its process is killed
    assert ingest.proc.returncode == 0
    assert time.monotonic() - t0 < 5  # no orphan left behind
    sock.close()
    run.close()
    r = tracker.read_run(run.id, store=store)
    assert r["loss"].fetch_values(rank=1).step.tolist() == list(range(4))


def test_a_rank_silent_while_others_log_is_reported_once(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKER_RANK_SILENT_AFTER", "1")
    events: list[dict[str, Any]] = []
    run, ingest, address = _start(store, 3, on_event=events.append)
    sock = _node(address, [1, 2])
    sock.sendall(wire.frame(wire.DATA, 1, _points(1, range(2))))
    for step in range(12):  # rank 2 goes on for 2.4 s, rank 1 stays quiet
        sock.sendall(wire.frame(wire.DATA, 2, _points(2, range(step, step + 1))))
        time.sleep(0.2)
    ingest.finish(0)
    sock.close()
    run.close()
    silent = [e for e in events if e["kind"] == "silent_rank"]
    assert [(e["rank"], e["step"], e["host"]) for e in silent] == [(1, 1, socket.gethostname())]
    assert "has logged nothing for" in silent[0]["message"]


def test_a_store_that_blocks_never_stops_the_ingest_reading_its_ranks(store: str) -> None:
    # A database another process holds locked (or a hung server) blocks the ingest's
    # applies; the ranks' batches must still be read and journaled meanwhile, or their
    # sends would time out and the ranks would stop shipping.
    import sqlite3

    run, ingest, address = _start(store, 2)
    run.flush()
    sock = _node(address, [1])
    journals = Path(store) / "journal" / run.id
    mine = {p.name for p in journals.glob("*.jnl")}

    def journaled() -> int:
        return sum(p.stat().st_size for p in journals.glob("*.jnl") if p.name not in mine)

    def wait_past(size: int) -> int:
        deadline = time.monotonic() + 10
        while journaled() <= size and time.monotonic() < deadline:
            time.sleep(0.05)
        return journaled()

    lock = sqlite3.connect(Path(store) / "store.db", timeout=0, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        sock.sendall(wire.frame(wire.DATA, 1, _points(1, range(5))))
        first = wait_past(0)
        assert first > 0
        time.sleep(1.5)  # the ingest is now blocked applying that batch
        sock.sendall(wire.frame(wire.DATA, 1, _points(1, range(5, 10))))
        assert wait_past(first) > first  # read and journaled while the store is locked
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    sock.sendall(wire.frame(wire.BYE, 1, b""))
    report = ingest.finish(30)
    sock.close()
    run.close()
    assert report is not None and report["missing"] == []
    r = tracker.read_run(run.id, store=store)
    assert r["loss"].fetch_values(rank=1).step.tolist() == list(range(10))
