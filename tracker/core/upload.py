"""``tracker sync --to URL``: upload the runs of a local store to a team server.

A run's complete history is its journal (``journal/<run>/*.jnl``; the embedded store
keeps every segment until ``tracker gc`` deletes the run): each record is sent, with its
position (segment name, end offset), through the server's applier, exactly as a writer
sends it. The server skips a record at or before the offset it has applied, so an
upload that was interrupted (killed, the network gone) is resumed by running it again,
from where the server stands, and uploading a run the server holds completely sends
nothing.

A run the store holds without a journal (its journal deleted by hand, or a store older
than journals) is uploaded from what the store holds: its row, fields, tags and series
chunks become journal operations in synthetic segments (``<attempt index, 20
digits>-0.jnl``, one per attempt, so attempts and rewinds survive), positioned by the
cumulative byte count of the batches. The same store gives the same batches, so a
rerun is skipped by the server's applied offsets as well.

Fork parents are uploaded before their children (a parent the selection leaves out
is added if the server lacks it). A run the token's project does not cover, or that a
live writer holds, is reported and left; the others go on.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from . import ops
from .errors import StoreError, one_line
from .journal import SegmentScan, read_records
from .stores.base import Store

# Journal bytes per request: small enough that an interrupted upload loses little and
# the progress bar moves, well under the server's body limit.
UPLOAD_BATCH_BYTES = 4 * 1024 * 1024
# A run's journal is sent from where the server stands, so its batches may be cut
# anywhere: $TRACKER_UPLOAD_BATCH_BYTES sets the cut (smaller for a slow link).
BATCH_BYTES_ENV = "TRACKER_UPLOAD_BATCH_BYTES"
# How long a batch that gets no answer is retried (a server restarting) before the run
# is reported as failed (a rerun resumes it).
RETRY_FOR_S = 60.0
# Points per synthesized "logs" op (a store without a journal).
_SYNTH_POINTS = 100_000


@dataclass
class RunUpload:
    """What uploading one run did (or why it could not)."""

    run_id: str
    project: str | None
    source: str  # "journal" or "store"
    total_bytes: int = 0  # bytes the server lacked when the upload began
    sent_bytes: int = 0
    batches: int = 0
    error: str | None = None
    skipped: str | None = None  # why it was left (held by a writer, ...)

    @property
    def done(self) -> bool:
        return self.error is None and self.skipped is None


@dataclass
class _Plan:
    run_id: str
    project: str | None
    parent_id: str | None
    row: dict[str, Any] | None  # the local store's row, None for a journal-only run
    segments: list[Any]


def journal_meta(store: Store, run_id: str) -> dict[str, Any] | None:
    """The "create" meta of the run's first journal record (None if unreadable)."""
    for segment in store.segments(run_id):
        try:
            for _end, record in read_records(segment, 0, SegmentScan()):
                for op in record:
                    if op[0] == ops.CREATE:
                        return dict(op[1])
                break
        except OSError:
            continue
    return None


def plan_uploads(
    local: Store, run_ids: Iterable[str] = (), project: str | None = None
) -> tuple[list[_Plan], list[str]]:
    """The runs to upload, fork parents before their children; and problems (unknown
    runs). With no ``run_ids``: every run of the store (of ``project``), journal-only
    (offline) runs included."""
    wanted = list(dict.fromkeys(run_ids))
    rows = {row["run_id"]: row for row in local.runs(order="oldest")}
    journal_only = [rid for rid in local.journal_runs() if rid not in rows and local.segments(rid)]
    plans: dict[str, _Plan] = {}
    problems: list[str] = []

    def make(rid: str) -> _Plan | None:
        row = rows.get(rid)
        segments = local.segments(rid)
        if row is not None:
            return _Plan(rid, row["project"], row["parent_id"], row, segments)
        if not segments:
            return None
        meta = journal_meta(local, rid) or {}
        return _Plan(rid, meta.get("project"), meta.get("parent_id"), None, segments)

    if wanted:
        chosen = wanted
    else:
        chosen = list(rows) + journal_only
    for rid in chosen:
        plan = make(rid)
        if plan is None:
            problems.append(f"run {rid}: not in {local.root} (no row, no journal)")
            continue
        if project is not None and plan.project != project and not wanted:
            continue
        plans[rid] = plan
    # Fork parents first; a parent not chosen comes along (the server skips it if held).
    ordered: list[_Plan] = []
    placed: set[str] = set()

    def place(plan: _Plan, seen: set[str]) -> None:
        if plan.run_id in placed or plan.run_id in seen:
            return
        seen.add(plan.run_id)
        parent = plan.parent_id
        if parent:
            pplan = plans.get(parent) or make(parent)
            if pplan is not None:
                plans.setdefault(parent, pplan)
                place(pplan, seen)
        placed.add(plan.run_id)
        ordered.append(plan)

    for plan in list(plans.values()):
        place(plan, set())
    return ordered, problems


def upload_runs(
    local: Store,
    remote: Any,
    run_ids: Iterable[str] = (),
    project: str | None = None,
    *,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[str, int], None] | None = None,
    batch_bytes: int | None = None,
    retry_for: float = RETRY_FOR_S,
) -> tuple[list[RunUpload], list[str]]:
    """Upload runs of ``local`` to ``remote`` (an ``HTTPStore`` opened for writing).

    ``on_start(runs, bytes)`` is called once with what is to be sent, ``on_progress(run
    id, bytes)`` after each batch. A batch that gets no answer is sent again for up to
    ``retry_for`` seconds (the server stores it once). Returns one ``RunUpload`` per
    run and the problems found while choosing them. ``batch_bytes`` (default
    $TRACKER_UPLOAD_BATCH_BYTES, else 4 MiB) is how much journal goes in one request.
    """
    if batch_bytes is None:
        try:
            batch_bytes = int(os.environ.get(BATCH_BYTES_ENV, "") or UPLOAD_BATCH_BYTES)
        except ValueError:
            raise ValueError(
                f"${BATCH_BYTES_ENV}={os.environ[BATCH_BYTES_ENV]!r}: give a number of bytes"
            ) from None
        batch_bytes = max(1, batch_bytes)
    plans, problems = plan_uploads(local, run_ids, project)
    mine = getattr(remote, "project", None)
    jobs: list[tuple[_Plan, RunUpload, dict[str, int]]] = []
    failed: set[str] = set()
    results: list[RunUpload] = []
    for plan in plans:
        up = RunUpload(plan.run_id, plan.project, "journal" if plan.segments else "store")
        results.append(up)
        if mine is not None and plan.project != mine:
            up.error = (
                f"run {plan.run_id} is of project {plan.project!r}; the token is for "
                f"project {mine!r}: not uploaded"
            )
            failed.add(plan.run_id)
            continue
        try:
            if plan.segments and local.writer_alive(plan.run_id):
                up.skipped = "a live writer holds it: sync it once it has finished"
                failed.add(plan.run_id)
                continue
            offsets = remote.applied_offsets(plan.run_id)
            if plan.segments:
                up.total_bytes = sum(
                    max(0, seg.stat().st_size - max(offsets.get(seg.name, 0), 0))
                    for seg in plan.segments
                )
            else:
                up.total_bytes = _synth_size(local, plan, offsets)
        except Exception as exc:  # noqa: BLE001 - report this run, go on with the others
            up.error = f"run {plan.run_id}: {one_line(exc)}"
            failed.add(plan.run_id)
            continue
        jobs.append((plan, up, offsets))
    if on_start is not None:
        on_start(len(jobs), sum(up.total_bytes for _p, up, _o in jobs))
    for plan, up, offsets in jobs:
        if plan.parent_id in failed:
            up.error = f"run {plan.run_id}: its fork parent {plan.parent_id} was not uploaded"
            failed.add(plan.run_id)
            continue
        try:
            _upload_one(local, remote, plan, up, offsets, on_progress, batch_bytes, retry_for)
        except Exception as exc:  # noqa: BLE001 - report this run, go on with the others
            up.error = f"run {plan.run_id}: {one_line(exc)}"
            failed.add(plan.run_id)
    return results, problems


def _upload_one(
    local: Store,
    remote: Any,
    plan: _Plan,
    up: RunUpload,
    offsets: dict[str, int],
    on_progress: Callable[[str, int], None] | None,
    batch_bytes: int,
    retry_for: float,
) -> None:
    applier = remote.applier(plan.run_id)

    def send(batch: list[Any], position: tuple[str, int], size: int) -> None:
        deadline = time.monotonic() + retry_for
        delay = 0.25
        while True:
            try:
                applier.apply(batch, position)
                break
            except StoreError as exc:
                # No answer (a server restarting, a network blip): the batch is resent,
                # which the server stores once whatever it got. A refusal is final.
                if getattr(exc, "status", None) != 0 or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        up.sent_bytes += size
        up.batches += 1
        if on_progress is not None:
            on_progress(plan.run_id, size)

    if plan.segments:
        for segment in plan.segments:
            start = max(offsets.get(segment.name, 0), 0)
            batch: list[Any] = []
            size = 0
            previous = end = start
            for end_offset, record in read_records(segment, start, SegmentScan()):
                size += end_offset - previous
                previous = end = end_offset
                batch.extend(record)
                if size >= batch_bytes:
                    send(batch, (segment.name, end), size)
                    batch, size = [], 0
            if batch:
                send(batch, (segment.name, end), size)
            tail = segment.stat().st_size - previous
            if tail > 0 and on_progress is not None:
                on_progress(plan.run_id, tail)  # a torn tail or header: nothing to send
    else:
        # Always the same cut: a rerun recognises what it sent by these positions.
        for segment_name, end, batch, size in _synthesized(local, plan, UPLOAD_BATCH_BYTES):
            if end <= offsets.get(segment_name, -1):
                continue
            send(batch, (segment_name, end), size)
    _finish(local, remote, plan)
    _compare_points(local, remote, plan)


def _compare_points(local: Store, remote: Any, plan: _Plan) -> None:
    """Raise if the server holds other point counts than the local store: a journal that
    lacks part of the run (a segment deleted by hand) must not pass for an upload."""
    if plan.row is None:
        return  # a journal-only run: the journal is all there is
    mine = {(s.path, s.rank): s.points for s in local.series_list(plan.run_id)}
    there = {(s.path, s.rank): s.points for s in remote.series_list(plan.run_id)}
    if mine == there:
        return
    differ = sorted(k for k in mine.keys() | there.keys() if mine.get(k) != there.get(k))
    listed = ", ".join(
        f"{path!r} rank {rank}: {there.get((path, rank), 0)} of {mine.get((path, rank), 0)}"
        for path, rank in differ[:5]
    )
    raise UploadMismatch(
        f"uploaded from its journal, but the server's points differ from the local "
        f"store's in {len(differ)} series ({listed}): the journal lacks part of the run"
    )


class UploadMismatch(Exception):
    """What the server holds of an uploaded run differs from the local store."""


def _finish(local: Store, remote: Any, plan: _Plan) -> None:
    """What the journal does not carry: the last heartbeat, and the crash of a run that
    never closed (no live writer holds it: ``upload_runs`` checked), recorded as local
    recovery records it."""
    there = remote.run(plan.run_id)
    if there is None:
        return
    row = local.run(plan.run_id)
    if row is not None and row["heartbeat"] is not None and there["heartbeat"] != row["heartbeat"]:
        remote.heartbeat(plan.run_id, row["heartbeat"])
    if there["status"] == "running":
        remote.mark_crashed(plan.run_id, time.time())


# -- a run without a journal: operations made from what the store holds -----------------


def _synth_segment(index: int) -> str:
    return f"{index:020d}-0.jnl"


def _synth_size(local: Store, plan: _Plan, offsets: dict[str, int]) -> int:
    total = 0
    for name, end, _batch, size in _synthesized(local, plan, UPLOAD_BATCH_BYTES):
        if end > offsets.get(name, -1):
            total += size
    return total


def _synthesized(
    local: Store, plan: _Plan, batch_bytes: int
) -> Iterator[tuple[str, int, list[Any], int]]:
    """(segment, end offset, ops, bytes) of the run as the store holds it: one
    synthetic segment per attempt, offsets the cumulative pickled size of its batches."""
    rid = plan.run_id
    row = plan.row
    assert row is not None
    attempts = local.attempts(rid) or [(None, None)]
    index_of = {a: i for i, (a, _rewind) in enumerate(attempts)}
    created = row["created_at"]
    base_meta = {
        "project": row["project"],
        "name": row["name"],
        "ts": created,
        "host": row["host"],
        "pid": row["pid"],
    }
    if row["parent_id"]:
        base_meta["parent_id"] = row["parent_id"]
        base_meta["fork_step"] = row["fork_step"]
    # Chunks per attempt, in write order (chunk ids rise in write order).
    per_attempt: dict[int, list[tuple[str, int, str, Any]]] = {}
    for s in local.series_list(rid):
        found = local.series_chunks(rid, s.path, s.rank)
        if found is None:
            continue
        kind, chunks = found
        for c in sorted(chunks, key=lambda c: c.chunk_id):
            per_attempt.setdefault(index_of.get(c.attempt, 0), []).append((s.path, s.rank, kind, c))
    for index, (_attempt, rewind) in enumerate(attempts):
        name = _synth_segment(index)
        meta = dict(base_meta)
        if rewind is not None:
            meta["rewind_step"] = int(rewind)
        first: list[Any] = [(ops.CREATE, meta)]
        if index == 0:
            first += _field_ops(local, rid, created)
            tags = local.tags(rid)
            if tags:
                first.append((ops.TAGS_ADD, list(tags)))
        pieces = [first]
        for path, rank, kind, c in per_attempt.get(index, []):
            pieces.extend(_chunk_ops(path, rank, kind, c))
        if index == len(attempts) - 1 and row["status"] not in ("running", "crashed"):
            ts = row["ended_at"] if row["ended_at"] is not None else row["updated_at"]
            pieces.append([(ops.STATUS, row["status"], ts or created, row["error"])])
        offset = 6  # where a segment's records start (its header's length)
        batch: list[Any] = []
        size = 0
        for piece in pieces:
            n = len(pickle.dumps(piece, protocol=5))
            batch.extend(piece)
            size += n
            if size >= batch_bytes:
                offset += size
                yield name, offset, batch, size
                batch, size = [], 0
        if batch:
            offset += size
            yield name, offset, batch, size


def _field_ops(local: Store, rid: str, ts: float) -> list[Any]:
    out: list[Any] = []
    for path, kind, value in local.fields(rid):
        if kind == "file":
            try:
                out.append((ops.FILE, path, json.loads(value)))
            except (TypeError, ValueError):
                continue
            continue
        if kind == "bool":
            value = bool(value)
        elif kind in ("float", "datetime") and value is None:
            value = math.nan
        elif kind == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        out.append((ops.SET, path, kind, value, ts))
    return out


def _chunk_ops(path: str, rank: int, kind: str, c: Any) -> list[list[Any]]:
    """One chunk as "logs" ops (one key per group), in pieces of ``_SYNTH_POINTS``."""
    out: list[list[Any]] = []
    n = c.n
    if kind == "str":
        values = json.loads(c.vals)
    for lo in range(0, max(n, 1), _SYNTH_POINTS):
        hi = min(n, lo + _SYNTH_POINTS)
        if hi <= lo:
            break
        k = hi - lo
        steps = bytes(c.steps[8 * lo : 8 * hi])
        ts = bytes(c.ts[8 * lo : 8 * hi])
        if kind == "str":
            import numpy as np

            group: tuple[Any, ...] = (
                ops.ROWS,
                [path],
                np.frombuffer(steps, dtype=np.int64).tolist(),
                np.frombuffer(ts, dtype=np.float64).tolist(),
                [[v] for v in values[lo:hi]],
                None,
            )
        else:
            group = (ops.COLS, [path], steps, ts, bytes(c.vals[8 * lo : 8 * hi]), None)
        out.append([(ops.LOGS, rank, k, [group])])
    return out
