"""Bringing the store up to date from journals: crash recovery and ``tracker sync``."""

from __future__ import annotations

import logging
import time
import warnings

from .apply import RunApplier, recorded_offsets
from .journal import SegmentScan, read_records
from .store import Store

log = logging.getLogger("tracker")

# Ops per transaction while replaying: large enough to be fast, small enough that a
# replay of a long journal does not hold the store's write lock for long.
_REPLAY_BATCH = 200_000


def replay_run(
    store: Store, run_id: str, *, from_start: bool = False, applier: RunApplier | None = None
) -> int:
    """Apply every journal record of ``run_id`` the store has not applied; return ops applied.

    With ``from_start`` every segment is read from its beginning, and each record the
    store already holds (at or before its recorded offset) is skipped: a record's points
    are stored once however often a journal is replayed.
    """
    applier = applier or RunApplier(store, run_id)
    scans: list[SegmentScan] = []
    try:
        total = _replay(
            store,
            run_id,
            applier,
            {} if from_start else recorded_offsets(store, run_id),
            scans,
        )
    finally:
        # Even if applying failed part way: what was skipped before that is gone.
        for scan in scans:
            if scan.corrupt:
                _warn_skipped(run_id, scan)
    return total


def _warn_skipped(run_id: str, scan: SegmentScan) -> None:
    # A torn tail is what any crash leaves and loses nothing that was acknowledged; a
    # damaged region with intact records after it lost points, and the user must know.
    name = scan.path.name if scan.path is not None else "?"
    where = ", ".join(f"{n} bytes at offset {off}" for off, n in scan.skipped[:5])
    msg = (
        f"tracker: run {run_id}: journal segment {name} has corrupt records that were "
        f"skipped ({scan.skipped_bytes} bytes: {where}); the points in them are lost, "
        "the records after them were applied"
    )
    log.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _replay(
    store: Store,
    run_id: str,
    applier: RunApplier,
    offsets: dict[str, int],
    scans: list[SegmentScan] | None = None,
) -> int:
    """Apply the intact records after ``offsets``; resyncs past damaged ones, whose
    scan statistics are appended to ``scans``."""
    total = 0
    for segment in store.segments(run_id):
        start = offsets.get(segment.name, 0)
        batch: list = []
        end = None
        scan = SegmentScan()
        if scans is not None:
            scans.append(scan)  # filled in as the records are read
        for end_offset, ops in read_records(segment, start, scan):
            if applier.applied((segment.name, end_offset)):
                continue  # in the store already: identity is the record, not the step
            batch.extend(ops)
            end = end_offset
            if len(batch) >= _REPLAY_BATCH:
                applier.apply(batch, (segment.name, end))
                total += len(batch)
                batch = []
        if batch:
            applier.apply(batch, (segment.name, end))
            total += len(batch)
    return total


def recover_run(store: Store, run_id: str) -> bool:
    """If no writer holds ``run_id``: apply what the store misses, mark it crashed if it
    never closed, and return True. Return False when a live writer holds it."""
    with store.exclusive_if_idle(run_id) as idle:
        if not idle:
            return False
        replay_run(store, run_id)
        with store.write() as conn:
            conn.execute(
                "UPDATE runs SET status='crashed', ended_at=COALESCE(heartbeat, ?) "
                "WHERE run_id=? AND status='running'",
                (time.time(), run_id),
            )
        return True


def recover_stale_runs(store: Store, project: str | None = None) -> list[str]:
    """Recover every run that reads as running but has no live writer; return their ids."""
    conn = store.connection()
    if project is None:
        rows = conn.execute("SELECT run_id FROM runs WHERE status='running'").fetchall()
    else:
        rows = conn.execute(
            "SELECT run_id FROM runs WHERE status='running' AND project=?", (project,)
        ).fetchall()
    recovered = [rid for (rid,) in rows if recover_run(store, rid)]
    return recovered


def sync_store(store: Store) -> list[str]:
    """Apply every journal in the store (offline runs, crashed writers); return run ids."""
    done = []
    if store.journal_root.is_dir():
        for directory in sorted(store.journal_root.iterdir()):
            if directory.is_dir() and any(directory.glob("*.jnl")):
                with store.exclusive_if_idle(directory.name) as idle:
                    pass
                if idle:
                    recover_run(store, directory.name)
                else:
                    replay_run(store, directory.name)
                done.append(directory.name)
    return done
