"""A full disk, for real: a small tmpfs under the store, filled to the last byte.

What must hold: nothing already logged is lost while the disk is full, memory stays
bounded, the user hears about it at flush/close with counts, and once space is back
every point that was held lands in the store, each exactly once.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracker
from tracker.core.doctor import check_store, journal_backlog
from tracker.core.replay import sync_store
from tracker.core.store import Store

from .conftest import fill, stored_points


def _store_on(disk: Path, tmp_path: Path, journal_elsewhere: bool) -> str:
    """A store directory on ``disk``; its journals on the big disk if asked."""
    store = disk / "store"
    Store(store)  # creates store.db and journal/
    if journal_elsewhere:
        journal = tmp_path / "journal"
        journal.mkdir()
        os.rmdir(store / "journal")
        os.symlink(journal, store / "journal")
    return str(store)


@contextlib.contextmanager
def _tracker_warnings_expected() -> Iterator[None]:
    # The writer warns (once per cause) that it cannot write: that is the point here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _durable_then_full(store: str, disk: Path, steps: int) -> tuple[tracker.Run, Path]:
    """A run with ``steps`` steps made durable, then its disk filled; (run, filler)."""
    run = tracker.init_run(project="p", store=store, system_metrics=False)
    _log(run, 0, steps)
    run.flush()
    return run, fill(disk)


def _log(run: tracker.Run, start: int, stop: int) -> None:
    for step in range(start, stop):
        run.log({"a": float(step), "b": -float(step)}, step=step)


def test_store_full_mid_run_then_freed_loses_nothing(small_disk, tmp_path: Path) -> None:
    disk = small_disk("16m")
    store = _store_on(disk, tmp_path, journal_elsewhere=True)
    run, filler = _durable_then_full(store, disk, 5000)
    with _tracker_warnings_expected():
        # Enough points that the store needs new pages while the disk is full.
        for block in range(4):
            _log(run, 5000 + block * 4000, 5000 + (block + 1) * 4000)
            with pytest.raises(tracker.WriterError, match="journal, which holds every point"):
                run.flush()
    filler.unlink()
    _log(run, 21_000, 25_000)
    run.flush()  # the store caught up from the journal: no error any more
    run.close()
    r = tracker.read_run(run.id, store=store)
    a = r["a"].fetch_values()
    assert a.step.tolist() == list(range(25_000))
    assert a.value.tolist() == [float(s) for s in range(25_000)]
    assert len(r["b"].fetch_values()) == 25_000
    assert r.status == "finished"
    assert stored_points(store) == 50_000


def test_store_full_at_close_keeps_the_journal_and_sync_applies_it(
    small_disk, tmp_path: Path
) -> None:
    disk = small_disk("16m")
    store = _store_on(disk, tmp_path, journal_elsewhere=True)
    run, filler = _durable_then_full(store, disk, 1000)
    _log(run, 1000, 41_000)
    with _tracker_warnings_expected():
        with pytest.raises(tracker.WriterError, match="safe in its journal"):
            run.close()
    filler.unlink()
    # The store lags: doctor says so, and sync brings it up to date.
    assert run.id in journal_backlog(Store(store))
    checks = {c.name: c for c in check_store(store)}
    assert not checks["journals applied"].ok
    assert run.id in sync_store(Store(store))
    assert stored_points(store) == 82_000
    r = tracker.read_run(run.id, store=store)
    assert r["a"].fetch_values().step.tolist() == list(range(41_000))
    assert r.status == "finished"
    assert journal_backlog(Store(store)) == {}


def test_journal_full_holds_points_in_bounded_memory_and_counts_drops(
    small_disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKER_MAX_UNWRITTEN_POINTS", "60000")
    disk = small_disk("16m")
    store = str(disk / "store")
    run, filler = _durable_then_full(store, disk, 1000)
    with _tracker_warnings_expected():
        _log(run, 1000, 21_000)  # 40,000 points: held in memory
        with pytest.raises(tracker.WriterError, match="40000 point"):
            run.flush()
        writer = run._writer
        assert writer._pending_points == 40_000
        _log(run, 21_000, 41_000)  # 40,000 more: 20,000 fit, the rest is dropped
        with pytest.raises(tracker.WriterError, match="were dropped") as info:
            run.flush()
        assert writer._pending_points <= 60_000
        dropped = writer._dropped_points
        assert dropped >= 20_000
        assert str(dropped) in str(info.value)
        assert len(writer.queue) == 0  # the queue is drained into the bounded hold
    filler.unlink()
    with _tracker_warnings_expected():
        with pytest.raises(tracker.WriterError, match="were dropped"):
            run.close()  # the drops are reported to the end
    r = tracker.read_run(run.id, store=store)
    steps = r["a"].fetch_values().step
    # Everything held was written once the disk had room, in order and exactly once.
    assert len(steps) == 41_000 - dropped // 2
    assert steps.tolist() == sorted(set(steps.tolist()))
    assert steps[:21_000].tolist() == list(range(21_000))


def test_journal_full_at_close_says_what_is_lost(small_disk) -> None:
    disk = small_disk("16m")
    store = str(disk / "store")
    run, filler = _durable_then_full(store, disk, 1000)
    _log(run, 1000, 6000)
    with _tracker_warnings_expected():
        with pytest.raises(tracker.WriterError, match=r"10000 point\(s\) .* are lost"):
            run.close()
    filler.unlink()
    # What was durable before the disk filled is all there, and the run reads as crashed
    # (its end was never recorded), never as finished.
    r = tracker.read_run(run.id, store=store)
    assert r["a"].fetch_values().step.tolist() == list(range(1000))
    assert r.status == "crashed"
