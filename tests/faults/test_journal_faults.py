"""Journal faults: a real full disk mid-append, bit flips mid-segment, torn tails, v1 segments.

Each test says exactly which points survive: everything outside the damaged record.
"""

from __future__ import annotations

import errno
import os
import pickle
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tracker
from tracker.core import journal
from tracker.core.doctor import Check, check_store, journal_backlog
from tracker.core.store import Store

from .conftest import stored_points

N_POINTS = 10_000
PER_FLUSH = 100


def fill(directory: Path) -> Path:
    """Fill the file system holding ``directory`` to the last byte; return the filler.

    Unbuffered, unlike a buffered file whose close would retry (and raise) the bytes
    that did not fit.
    """
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (1 << 16, 1):  # big blocks, then the last partial block byte by byte
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def _offline_run(store: str, n: int = N_POINTS) -> str:
    """An offline run of ``n`` points of "a", one journal record per ``PER_FLUSH``."""
    run = tracker.init_run(project="p", store=store, mode="offline", system_metrics=False)
    for i in range(n):
        run.log({"a": float(i)})
        if i % PER_FLUSH == PER_FLUSH - 1:
            run.flush()
    run.close()
    return run.id


def _segment(store: str, run_id: str) -> Path:
    segments = Store(store, create=False).segments(run_id)
    assert len(segments) == 1
    return segments[0]


def _records(segment: Path) -> list[tuple[int, int, list[Any]]]:
    """``(start, end, ops)`` of every intact record."""
    out, start = [], journal.HEADER_LEN
    for end, ops in journal.read_records(segment):
        out.append((start, end, ops))
        start = end
    return out


def _steps_of_a(ops: list[Any]) -> list[int]:
    """The steps of the points of "a" a record holds."""
    steps: list[int] = []
    for op in ops:
        if op[0] != "logs":
            continue
        for kind, keys, op_steps, *_ in op[3]:
            if "a" in keys:
                got = np.frombuffer(op_steps, np.int64).tolist() if kind == "cols" else op_steps
                steps.extend(got)
    return steps


def _check(store: str, name: str) -> Check:
    (found,) = [c for c in check_store(store) if c.name == name]
    return found


def _read_steps(store: str, run_id: str) -> list[int]:
    return tracker.read_run(run_id, store=store)["a"].fetch_values().step.tolist()


# -- (a) a real full disk ---------------------------------------------------------------


def test_enospc_mid_append_leaves_no_partial_record(
    small_disk: Callable[[str], Path],
) -> None:
    disk = small_disk("1m")
    path = disk / "journal" / "seg.jnl"
    w = journal.JournalWriter(path)
    small = [[("set", f"k{i}", "int", i, 0.0)] for i in range(3)]
    for ops in small:
        w.append(ops)
    w.sync()
    good_end = w.offset
    filler = fill(disk)
    # Larger than what is left in the file's last page: part of it does get written.
    big = [("set", "blob", "bytes", os.urandom(256 * 1024), 0.0)]
    with pytest.raises(OSError) as info:
        w.append(big)
    assert info.value.errno == errno.ENOSPC
    assert path.stat().st_size == good_end
    assert w.offset == good_end and w.path == path
    filler.unlink()
    start, end = w.append(big)
    assert (start, end) == (good_end, path.stat().st_size)
    w.close()
    assert [ops for _, ops in journal.read_records(path)] == [*small, big]
    scan = journal.scan_segment(path)
    assert (scan.records, scan.skipped, scan.torn_tail) == (4, [], None)


def test_a_tail_that_cannot_be_cut_moves_the_writer_to_a_new_segment(
    small_disk: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = small_disk("1m")
    directory = disk / "journal"
    path = directory / f"{1:020d}-{os.getpid()}.jnl"
    w = journal.JournalWriter(path)
    first = [("set", "k", "int", 1, 0.0)]
    w.append(first)
    good_end = w.offset
    filler = fill(disk)
    big = [("set", "blob", "bytes", os.urandom(256 * 1024), 0.0)]

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(journal.os, "ftruncate", no_truncate)
    with pytest.raises(OSError) as info:
        w.append(big)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    partial = path.stat().st_size - good_end
    assert partial > 0  # the half-written record stays in the old segment...
    filler.unlink()
    start, end = w.append(big)
    w.close()
    # ...and the retry went to a new segment beside it, which sorts after it.
    assert w.path != path and w.path.parent == directory
    assert sorted(directory.glob("*.jnl")) == [path, w.path]
    assert w.path.name.endswith(f"-{os.getpid()}.jnl")
    assert (start, end) == (journal.HEADER_LEN, w.path.stat().st_size)
    assert [ops for _, ops in journal.read_records(path)] == [first]
    assert journal.scan_segment(path).torn_tail == (good_end, partial)
    assert [ops for _, ops in journal.read_records(w.path)] == [big]


def test_a_run_on_a_full_disk_keeps_every_point_and_no_partial_record(
    small_disk: Callable[[str], Path],
) -> None:
    store = str(small_disk("4m") / "store")
    run = tracker.init_run(project="p", store=store, mode="offline", system_metrics=False)
    for i in range(1000):
        run.log({"a": float(i)})
    run.flush()
    filler = fill(Path(store))
    # The writer thread may try (and warn) before flush() does: both inside the block.
    with pytest.warns(RuntimeWarning, match="No space left"):
        for i in range(1000, 2000):
            run.log({"a": float(i), "pad": "x" * 200})  # more than the last page holds
        with pytest.raises(tracker.WriterError, match="No space left"):
            run.flush()
    filler.unlink()
    for i in range(2000, 3000):
        run.log({"a": float(i)})
    run.flush()
    run.close()
    scan = journal.scan_segment(_segment(store, run.id))
    assert (scan.skipped, scan.torn_tail) == ([], None)
    assert _read_steps(store, run.id) == list(range(3000))
    assert stored_points(store, "a") == 3000
    assert _check(store, "journals readable").ok


# -- (b) bit flips in the middle of a segment -----------------------------------------


def test_two_flipped_bytes_mid_segment_lose_only_their_record(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    run_id = _offline_run(store)
    segment = _segment(store, run_id)
    records = _records(segment)
    with_points = [r for r in records if _steps_of_a(r[2])]
    assert len(with_points) == N_POINTS // PER_FLUSH
    start, end, ops = with_points[len(with_points) // 2]
    lost = _steps_of_a(ops)
    assert len(lost) == PER_FLUSH
    data = bytearray(segment.read_bytes())
    middle = (start + end) // 2
    data[middle] ^= 0xFF
    data[middle + 1] ^= 0x5A
    segment.write_bytes(bytes(data))

    # Before replay: the doctor names the segment, the offset and the bytes lost, and
    # counts every intact record after the damage as not yet applied.
    st = Store(store, create=False)
    assert journal_backlog(st) == {run_id: len(data) - journal.HEADER_LEN - (end - start)}
    readable = _check(store, "journals readable")
    assert not readable.ok
    assert segment.name in readable.detail
    assert f"{end - start} bytes at offset {start}" in readable.detail

    with pytest.warns(RuntimeWarning, match=rf"run {run_id}: .*{segment.name}.*{end - start}"):
        steps = _read_steps(store, run_id)
    assert steps == [s for s in range(N_POINTS) if s not in set(lost)]
    assert stored_points(store, "a") == N_POINTS - PER_FLUSH
    assert _check(store, "journals applied").ok
    assert not _check(store, "journals readable").ok  # the loss stays on record


def test_sync_replays_past_a_flipped_record(tmp_path: Path) -> None:
    from tracker.core.replay import sync_store

    store = str(tmp_path / "store")
    run_id = _offline_run(store, 2000)
    segment = _segment(store, run_id)
    start, end, ops = [r for r in _records(segment) if _steps_of_a(r[2])][3]
    data = bytearray(segment.read_bytes())
    data[start + 2] ^= 0x10  # in the sync marker: the reader must find the next one
    data[start + 6] ^= 0x01  # and in the length, which the checksum covers
    segment.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="corrupt records"):
        assert sync_store(Store(store)) == [run_id]
    assert stored_points(store, "a") == 2000 - len(_steps_of_a(ops))


# -- (c) a torn tail ---------------------------------------------------------------------


def test_a_torn_tail_passes_the_doctor_and_everything_before_it_reads(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    run_id = _offline_run(store, 2000)
    segment = _segment(store, run_id)
    records = _records(segment)
    start, end, ops = [r for r in records if _steps_of_a(r[2])][-1]
    kept = [s for r in records if r[1] <= start for s in _steps_of_a(r[2])]
    assert len(kept) == 2000 - PER_FLUSH
    # A crash while that record was being written: the file ends inside it.
    with open(segment, "r+b") as f:
        f.truncate((start + end) // 2)
    readable = _check(store, "journals readable")
    assert readable.ok
    assert "torn record" in readable.detail and segment.name in readable.detail
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*corrupt records.*")
        assert _read_steps(store, run_id) == kept
    assert stored_points(store, "a") == len(kept)
    assert _check(store, "journals readable").ok


# -- (d) version-1 segments --------------------------------------------------------------


def _rewrite_as_v1(segment: Path) -> list[tuple[int, int]]:
    """Rewrite a segment in the old framing; return each record's (start, end)."""
    out, spans = [journal.MAGIC_V1], []
    pos = journal.HEADER_LEN
    for _, _, ops in _records(segment):
        payload = pickle.dumps(ops, protocol=5)
        record = struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
        out.append(record)
        spans.append((pos, pos + len(record)))
        pos += len(record)
    segment.write_bytes(b"".join(out))
    return spans


def test_version_1_segments_still_replay(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    run_id = _offline_run(store, 2000)
    segment = _segment(store, run_id)
    spans = _rewrite_as_v1(segment)
    assert segment.read_bytes()[: journal.HEADER_LEN] == b"TRKJ\x01\n"
    assert [end for end, _ in journal.read_records(segment)] == [e for _, e in spans]
    assert _read_steps(store, run_id) == list(range(2000))
    assert tracker.read_run(run_id, store=store).status == "finished"
    assert _check(store, "journals readable").ok


def test_a_version_1_segment_still_ends_at_its_first_bad_record(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    run_id = _offline_run(store, 1000)
    segment = _segment(store, run_id)
    spans = _rewrite_as_v1(segment)
    start, end = spans[4]  # the 4th record of points (the 1st holds the run's creation)
    data = bytearray(segment.read_bytes())
    data[(start + end) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    scan = journal.scan_segment(segment)
    assert (scan.version, scan.records, scan.skipped) == (1, 4, [])
    assert scan.torn_tail == (start, len(data) - start)
    assert _read_steps(store, run_id) == list(range(3 * PER_FLUSH))
