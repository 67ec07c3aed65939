"""Bringing the store up to date from journals: crash recovery and ``tracker sync``.

Recovery is always an explicit call: ``recover_run`` (raises), ``recover_if_possible``
and ``recover_stale`` (warn and go on, for readers), ``sync_runs`` and ``sync_store``
(every journal of a store). The read API calls them when it opens a run or lists runs,
never when a property is read.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Collection

from .errors import one_line, say_loudly
from .journal import SegmentScan, read_records
from .stores.base import Applier, Store

log = logging.getLogger("tracker")

# Ops per transaction while replaying: large enough to be fast, small enough that a
# replay of a long journal does not hold the store's write lock for long.
_REPLAY_BATCH = 200_000


def replay_run(
    store: Store,
    run_id: str,
    *,
    from_start: bool = False,
    applier: Applier | None = None,
    segments: Collection[str] | None = None,
    record_by_record: bool = False,
) -> int:
    """Apply every journal record of ``run_id`` the store has not applied; return ops applied.

    With ``from_start`` every segment is read from its beginning, and each record the
    store already holds (at or before its recorded offset) is skipped: a record's points
    are stored once however often a journal is replayed.

    Records are applied in batches, each recorded as applied up to its last record; that
    is exact only while no other process applies the same segment. ``segments`` limits
    the replay to those segment names (a live writer catches up its own segment only:
    beside it, a distributed run's ingest process applies its own), and
    ``record_by_record`` applies one record per batch, which is exact even when another
    process applies the segment at the same time (``tracker sync`` of a live run).
    """
    applier = applier or store.applier(run_id)
    scans: list[SegmentScan] = []
    try:
        total = _replay(
            store,
            run_id,
            applier,
            {} if from_start else store.applied_offsets(run_id),
            scans,
            segments=segments,
            batch_records=1 if record_by_record else _REPLAY_BATCH,
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
    where = scan.where_skipped()
    msg = (
        f"tracker: run {run_id}: journal segment {name} has corrupt records that were "
        f"skipped ({scan.skipped_bytes} bytes: {where}); the points in them are lost, "
        "the records after them were applied"
    )
    say_loudly(msg, error=False, stacklevel=3)


def _replay(
    store: Store,
    run_id: str,
    applier: Applier,
    offsets: dict[str, int],
    scans: list[SegmentScan] | None = None,
    *,
    segments: Collection[str] | None = None,
    batch_records: int = 0,
) -> int:
    """Apply the intact records after ``offsets``; resyncs past damaged ones, whose
    scan statistics are appended to ``scans``."""
    total = 0
    batch_records = batch_records or _REPLAY_BATCH
    # A store that sends batches over a network bounds their bytes too (a server's client).
    max_bytes = getattr(store, "replay_batch_bytes", None) or float("inf")
    for segment in store.segments(run_id):
        if segments is not None and segment.name not in segments:
            continue
        start = offsets.get(segment.name, 0)
        batch: list = []
        end = start  # end offset of the last record in batch (set with every record)
        previous = start  # end offset of the last record read
        size = 0  # journal bytes of the records in batch
        records = 0  # records in batch
        scan = SegmentScan()
        if scans is not None:
            scans.append(scan)  # filled in as the records are read
        for end_offset, ops in read_records(segment, start, scan):
            record_bytes, previous = end_offset - previous, end_offset
            if applier.applied((segment.name, end_offset)):
                continue  # in the store already: identity is the record, not the step
            batch.extend(ops)
            end = end_offset
            size += record_bytes
            records += 1
            if len(batch) >= _REPLAY_BATCH or size >= max_bytes or records >= batch_records:
                applier.apply(batch, (segment.name, end))
                total += len(batch)
                batch = []
                size = 0
                records = 0
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
        store.mark_crashed(run_id, time.time())
        return True


def recover_if_possible(store: Store, run_id: str) -> bool | None:
    """``recover_run`` where the store can be written: True if the run had no live writer
    (it is now up to date, and recorded as crashed if it never closed), False if a live
    writer holds it, None if the store is read-only or recovery failed (warned): the run
    then reads as it is stored."""
    if not store.can_write:
        return None
    try:
        if store.writer_alive(run_id):
            return False  # before opening the writable handle: live runs are read often
        return recover_run(store.for_writing(), run_id)
    except Exception as exc:  # noqa: BLE001 - whatever broke, reading goes on without it
        warnings.warn(
            f"tracker: run {run_id} in {store.root} could not be recovered, it reads as "
            f"stored: {one_line(exc)}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def recover_stale(store: Store, project: str | None = None) -> list[str]:
    """Recover each run that reads as running and has no live writer; return their ids.

    One run that cannot be recovered is warned about (``recover_if_possible``) and does
    not keep the others from it; a read-only store recovers nothing.
    """
    if not store.can_write:
        return []
    running = store.runs(project=project, statuses=["running"])
    return [row["run_id"] for row in running if recover_if_possible(store, row["run_id"])]


def sync_runs(store: Store) -> list[tuple[str, str | None]]:
    """Apply every journal the store has not applied, run by run.

    Returns (run id, None) for each run synced and (run id, error) for each that could
    not be; one failure does not stop the others. A run whose writer is gone is
    recovered (and recorded as crashed if it never closed), one with a live writer has
    its backlog replayed.
    """
    done: list[tuple[str, str | None]] = []
    for run_id in store.journal_runs():
        try:
            if not store.segments(run_id):
                continue
            _sync_run(store, run_id)
        except Exception as exc:  # noqa: BLE001 - report this run, go on with the others
            done.append((run_id, one_line(exc)))
        else:
            done.append((run_id, None))
    return done


def sync_store(store: Store) -> list[str]:
    """Apply every journal in the store (offline runs, crashed writers); return run ids.

    Like ``sync_runs``, but the first run that cannot be synced raises.
    """
    done = []
    for run_id in store.journal_runs():
        if store.segments(run_id):
            _sync_run(store, run_id)
            done.append(run_id)
    return done


def _sync_run(store: Store, run_id: str) -> None:
    with store.exclusive_if_idle(run_id) as idle:
        pass
    if idle:
        recover_run(store, run_id)
    else:
        # Its live writers apply as they go: record by record, nothing is stored twice.
        replay_run(store, run_id, record_by_record=True)


def journal_backlog(store: Store) -> dict[str, int]:
    """Bytes of intact journal records the store has not applied, per run (0s left out).

    Counts every intact record after the applied offset, also those after a damaged
    region (replay resyncs past it and applies them). Runs held by a live writer are
    left out: their writer applies as it goes.
    """
    behind: dict[str, int] = {}
    for run_id in store.journal_runs():
        if store.writer_alive(run_id):
            continue
        offsets = store.applied_offsets(run_id)
        total = 0
        for segment in store.segments(run_id):
            scan = SegmentScan()
            for _end, _ops in read_records(segment, offsets.get(segment.name, 0), scan):
                pass
            total += scan.intact_bytes
        if total:
            behind[run_id] = total
    return behind
