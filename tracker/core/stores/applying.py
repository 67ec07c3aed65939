"""Applying journaled operations to a store: what every store's applier does the same way.

``BatchApplier`` is the ``Applier`` of ``base.py`` with everything but the storage
itself: a store's applier subclasses it and implements the hooks at the end of the
class (small reads and writes inside a transaction; ``sqlite_apply.py`` is the
reference). The writer thread calls ``apply`` with each batch right after journaling
it; recovery and ``tracker sync`` call it with records read back from the journal.

A point's identity is the journal record that carried it, not its (path, step): every
point is stored, repeats of a step and steps lower than a series' last included, and a
record is applied once because the store keeps, in the same transaction as the points,
how far into each journal segment it has applied; a record at or before that offset is
skipped, however often a journal is replayed.

Each segment is one attempt (a writer session) of its run; every chunk names its
attempt. An attempt opened with ``resume_from_step=s`` records s as its rewind step:
readers then hide (but keep) the points that earlier attempts stored past s.

The per-series state cached here (series ids, last steps, counts) changes only once
the transaction that wrote it has committed: a batch rolled back by a full disk or an
I/O error leaves the cache as the store is, so the replay that retries it from the
journal writes every point again, under series ids that exist.

A record the store cannot hold (a value no check at the call caught) must not block its
run: the batch is applied again operation by operation, and each operation that fails
for a reason of its own is set aside (recorded with its error, still in the journal)
while the rest is applied.

The operations are those of ``core/ops.py``; "logs" groups are read with ``batch.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from typing import Any

import numpy as np

from .. import ops
from ..batch import group_columns
from ..errors import say_loudly
from .base import chunk_crc

log = logging.getLogger("tracker")

FLOAT_SERIES, STR_SERIES = "float", "str"
NO_STEP = -(2**63)  # the last step of a series with no points yet
# Creating at least this many series in one batch: in one call to ``_create_series``.
_MANY_SERIES = 16

# One series' state as the applier caches it: (path, rank, series id, kind, last step,
# point count), as ``_load_state`` and ``_create_series`` return them.
SeriesRow = tuple[str, int, Any, str, int, int]
# One chunk to store: (series id, first step, last step, n, steps, vals, ts, crc), and
# the update of its series: (last step, n, last value, series id).
ChunkRow = tuple[Any, int, int, int, bytes, bytes, bytes, int]
SeriesUpdate = tuple[int, int, Any, Any]


class _Series:
    __slots__ = ("id", "kind", "last_step", "count", "warned")

    def __init__(self, sid: Any, kind: str, last_step: int, count: int) -> None:
        self.id = sid
        self.kind = kind
        self.last_step = last_step
        self.count = count
        self.warned = False

    def copy(self) -> _Series:
        twin = _Series(self.id, self.kind, self.last_step, self.count)
        twin.warned = self.warned
        return twin


class _Staged(dict):
    """Series state changed by a transaction not yet committed, over what is committed.

    Lookups fall through to ``parent`` (another ``_Staged``, or the committed cache); a
    series about to change is copied in first, so a rollback only has to drop this dict.
    """

    def __init__(self, parent: Any) -> None:
        super().__init__()
        self.parent = parent

    def find(self, key: tuple[str, int]) -> _Series | None:
        s = self.get(key)
        if s is not None:
            return s
        return self.parent.find(key) if isinstance(self.parent, _Staged) else self.parent.get(key)

    def writable(self, key: tuple[str, int]) -> _Series | None:
        s = self.get(key)
        if s is None:
            found = self.find(key)
            if found is None:
                return None
            s = self[key] = found.copy()
        return s


class BatchApplier:
    """Writes the operations of one run into a store, keeping per-series state cached."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.series: dict[tuple[str, int], _Series] = {}
        self.set_aside = 0  # operations set aside by this applier
        self._new_attempts: dict[str, Any] = {}  # made by the open transaction
        self._segment: str | None = None  # segment of the batch being applied
        rows, self._fork, applied, attempts = self._load_state()
        for path, rank, sid, kind, last, count in rows:
            self.series[(path, rank)] = _Series(sid, kind, last, count)
        self._applied: dict[str, int] = dict(applied)  # segment -> end offset (committed)
        self._attempts: dict[str, Any] = dict(attempts)  # segment -> attempt id (committed)

    def applied(self, position: tuple[str, int]) -> bool:
        """Whether the record ending at ``position`` (segment, end offset) is in the store."""
        return position[1] <= self._applied.get(position[0], -1)

    # -- entry point ---------------------------------------------------------------------

    def apply(self, batch: list[Any], position: tuple[str, int] | None = None) -> int:
        """Apply the journal ops of ``batch`` in one transaction; record ``position``
        (segment, end offset).

        Returns how many operations were set aside (0 but for a record the store cannot
        hold). Raises on a failure of the store itself; nothing is then applied, and
        the cache is as before.
        """
        if position is not None and self.applied(position):
            return 0  # applied before: a record's points are stored once
        self._segment = position[0] if position is not None else None
        staged = _Staged(self.series)
        self._new_attempts = {}
        done = None
        try:
            with self._transaction() as tx:
                if position is not None:
                    # Under the store's write lock: another process (a second server on
                    # one store) may have applied this very batch since ``applied``.
                    done = self._applied_offset(tx, position[0])
                if done is None or position is None or done < position[1]:
                    done = None
                    self._apply_ops(tx, batch, staged)
                    if position is not None:
                        self._record_position(tx, *position)
        except Exception as exc:
            self._new_attempts = {}
            if self.is_transient(exc):
                raise
            return self._apply_each(batch, position)
        if done is not None:
            assert position is not None
            self._new_attempts = {}
            self._applied[position[0]] = max(done, self._applied.get(position[0], -1))
            return 0
        self._committed(staged, position)
        return 0

    def _applied_offset(self, tx: Any, segment: str) -> int | None:
        """How far the store has applied ``segment`` of this run, read inside ``tx``;
        None where a store does not check (its own transaction does, or one process
        alone applies each run)."""
        return None

    def _committed(self, staged: _Staged, position: tuple[str, int] | None) -> None:
        self.series.update(staged)
        self._attempts.update(self._new_attempts)
        self._new_attempts = {}
        if position is not None:
            self._applied[position[0]] = position[1]

    def _apply_ops(self, tx: Any, batch: list[Any], staged: _Staged) -> None:
        pieces: dict[tuple[str, int], list[Any]] = {}
        base = 0  # call positions of successive batches follow one another
        for op in batch:
            if op[0] == ops.LOGS:
                _, rank, n_calls, groups = op
                for group in groups:
                    _collect_pieces(group, rank, base, pieces)
                base += n_calls
            else:
                self._apply_other(tx, op)
        if pieces:
            self._write_pieces(tx, pieces, staged)

    def _apply_each(self, batch: list[Any], position: tuple[str, int] | None) -> int:
        """Apply ``batch`` op by op, setting aside each that fails on its own data."""
        staged = _Staged(self.series)
        aside: list[tuple[int, BaseException, Any]] = []
        self._new_attempts = {}
        with self._transaction() as tx:
            for index, op in enumerate(batch):
                mine = _Staged(staged)
                attempts_before = dict(self._new_attempts)
                try:
                    with self._savepoint(tx):
                        self._apply_ops(tx, [op], mine)
                except Exception as exc:
                    self._new_attempts = attempts_before
                    if self.is_transient(exc):
                        raise
                    aside.append((index, exc, op))
                    continue
                staged.update(mine)
            segment, offset = position if position is not None else ("", -1)
            described = [(i, ops.describe(op, exc)) for i, exc, op in aside]
            self._record_set_aside(tx, segment, offset, described, time.time())
            if position is not None:
                self._record_position(tx, *position)
        self._committed(staged, position)
        if aside:
            self.set_aside += len(aside)
            msg = (
                f"tracker: run {self.run_id}: {len(aside)} operation(s) could not be stored "
                f"and were set aside (kept in the journal; `tracker doctor` lists them): "
                f"{described[0][1]}"
            )
            say_loudly(msg, error=True, stacklevel=1)
        return len(aside)

    # -- metadata operations -------------------------------------------------------------

    def _apply_other(self, tx: Any, op: Any) -> None:
        kind = op[0]
        if kind == ops.SET:
            _, path, vkind, value, _ts = op
            self._set_field(tx, path, vkind, value)
        elif kind == ops.FILE:
            self._set_field(tx, op[1], "file", json.dumps(op[2], sort_keys=True))
        elif kind == ops.TAGS_ADD:
            self._change_tags(tx, op[1], add=True)
        elif kind == ops.TAGS_REMOVE:
            self._change_tags(tx, op[1], add=False)
        elif kind == ops.CREATE:
            meta = op[1]
            self._open_run(tx, meta, meta.get("ts", time.time()))
            if meta.get("parent_id") and self._fork is None:
                self._fork = (meta["parent_id"], meta["fork_step"])
            attempt = self._attempt(tx)
            if attempt is not None and meta.get("rewind_step") is not None:
                self._set_rewind(tx, attempt, int(meta["rewind_step"]))
        elif kind == ops.STATUS:
            _, status, ts, error = op
            self._set_status(tx, status, ts, error)
        else:
            log.warning("tracker: unknown journal operation %r ignored", kind)

    def _attempt(self, tx: Any) -> Any:
        """The attempt id of the segment being applied, made on first use."""
        segment = self._segment
        if segment is None:
            return None
        attempt = self._attempts.get(segment) or self._new_attempts.get(segment)
        if attempt is None:
            attempt = self._new_attempts[segment] = self._new_attempt(tx, segment)
        return attempt

    # -- series ----------------------------------------------------------------------------

    def _series_for(self, tx: Any, path: str, rank: int, kind: str, staged: _Staged) -> _Series:
        s = staged.writable((path, rank))
        if s is not None:
            return s
        created = self._create_series(tx, [(path, rank, kind, self._inherited(tx, path, rank))])
        _, _, sid, skind, last, count = created[0]
        s = staged[(path, rank)] = _Series(sid, skind, last, count)
        return s

    def _inherited(self, tx: Any, path: str, rank: int) -> int:
        """The last step a new series of this run starts from: a fork child holds its
        parent's points up to the fork step, and may only continue after it."""
        if self._fork is None:
            return NO_STEP  # the common case: no query
        parent, fork_step = self._fork
        return int(fork_step) if self._parent_has_series(tx, parent, path, rank) else NO_STEP

    def _create_many(
        self, tx: Any, pieces: dict[tuple[str, int], list[Any]], staged: _Staged
    ) -> None:
        """Create every series this batch starts at once, when it starts many."""
        new = [key for key in pieces if staged.find(key) is None]
        if len(new) < _MANY_SERIES:
            return  # few: _series_for's per-series path is cheaper than a full reload
        rows = []
        for path, rank in new:
            col = pieces[(path, rank)][0][1]
            kind = (
                FLOAT_SERIES
                if isinstance(col, np.ndarray) or type(col[0]) is not str
                else STR_SERIES
            )
            rows.append((path, rank, kind, self._inherited(tx, path, rank)))
        for path, rank, sid, kind, last, count in self._create_series(tx, rows):
            staged[(path, rank)] = _Series(sid, kind, last, count)

    def _write_pieces(
        self, tx: Any, pieces: dict[tuple[str, int], list[Any]], staged: _Staged
    ) -> None:
        self._create_many(tx, pieces, staged)
        chunk_rows: list[ChunkRow] = []
        series_rows: list[SeriesUpdate] = []
        for (path, rank), plist in pieces.items():
            row = self._series_points(tx, rank, path, plist, staged)
            if row is not None:
                chunk_rows.append(row[0])
                series_rows.append(row[1])
        if chunk_rows:
            self._store_chunks(tx, self._attempt(tx), chunk_rows, series_rows)

    def _series_points(
        self, tx: Any, rank: int, path: str, plist: list[Any], staged: _Staged
    ) -> tuple[ChunkRow, SeriesUpdate] | None:
        if len(plist) == 1:
            steps, col, ts, _ = plist[0]
        else:
            # Pieces from several key sets: restore the order of the calls.
            order = np.concatenate([p[3] for p in plist])
            perm = np.argsort(order, kind="stable")
            steps = np.concatenate([p[0] for p in plist])[perm]
            ts = np.concatenate([p[2] for p in plist])[perm]
            cols = [p[1] for p in plist]
            if all(isinstance(c, np.ndarray) for c in cols):
                col = np.concatenate(cols)[perm]
            else:
                flat = [v for c in cols for v in (c.tolist() if isinstance(c, np.ndarray) else c)]
                col = [flat[k] for k in perm.tolist()]
        if isinstance(col, np.ndarray):
            kind = FLOAT_SERIES
        else:
            col, kind = _column_of_objects(path, col)
            if col is None:
                return None
        s = self._series_for(tx, path, rank, kind, staged)
        if s.kind != kind:
            if not s.warned:
                s.warned = True
                warnings.warn(
                    f"tracker: series {path!r} holds {s.kind} values; {kind} points refused",
                    RuntimeWarning,
                    stacklevel=1,
                )
            return None
        n = len(steps)
        if kind == FLOAT_SERIES:
            vals = col.tobytes()
            last_value = float(col[-1])
        else:
            vals = json.dumps(col, ensure_ascii=False).encode()
            last_value = col[-1]
        # Points keep the order they were logged in; a chunk's first/last step are its
        # smallest and largest, which is what readers select chunks by.
        if n == 1:
            first_step = last_step = int(steps[0])  # one point: no reductions (100,000 series)
        else:
            first_step, last_step = int(steps.min()), int(steps.max())
        s.last_step = max(s.last_step, last_step)
        s.count += n
        steps_b, ts_b = steps.tobytes(), ts.tobytes()
        return (
            (s.id, first_step, last_step, n, steps_b, vals, ts_b, chunk_crc(steps_b, vals, ts_b)),
            (last_step, n, last_value, s.id),
        )

    # -- hooks: what a store implements ----------------------------------------------------

    def _load_state(self) -> tuple[list[SeriesRow], tuple[str, int] | None, Any, Any]:
        """What the store holds of the run when the applier is made: its series (rows),
        its fork (parent id, fork step) or None, its applied offsets (segment -> end
        offset) and its attempts (segment -> attempt id)."""
        raise NotImplementedError

    def _transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A write transaction: yields the handle the other hooks get; commits at the
        end, rolls back and raises on an exception."""
        raise NotImplementedError

    def _savepoint(self, tx: Any) -> contextlib.AbstractContextManager[None]:
        """Inside the transaction: on an exception, undo what was done since, and raise."""
        raise NotImplementedError

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a failure of the medium (disk full, I/O, a lock), not of
        the data: the batch stays in the journal, to be retried; any other failure of one
        operation is that operation's own, and it is set aside."""
        raise NotImplementedError

    def _record_position(self, tx: Any, segment: str, offset: int) -> None:
        """The run has applied ``segment`` up to ``offset``."""
        raise NotImplementedError

    def _record_set_aside(
        self, tx: Any, segment: str, offset: int, described: list[tuple[int, str]], now: float
    ) -> None:
        """Operations (index in the batch, what failed) of the record ending at
        ``offset`` of ``segment`` were set aside."""
        raise NotImplementedError

    def _set_field(self, tx: Any, path: str, kind: str, value: Any) -> None:
        raise NotImplementedError

    def _change_tags(self, tx: Any, tags: list[str], *, add: bool) -> None:
        raise NotImplementedError

    def _open_run(self, tx: Any, meta: dict[str, Any], now: float) -> None:
        """A "create" op: insert the run's row, or mark it running again (ended_at
        cleared; heartbeat, host and pid from ``meta``)."""
        raise NotImplementedError

    def _set_status(self, tx: Any, status: str, ts: float, error: str | None) -> None:
        """A "status" op: status, ended_at (ts, or None for "running"), updated_at, and
        the error unless it is None."""
        raise NotImplementedError

    def _new_attempt(self, tx: Any, segment: str) -> Any:
        """The attempt id of ``segment``, made if the store has none."""
        raise NotImplementedError

    def _set_rewind(self, tx: Any, attempt: Any, step: int) -> None:
        raise NotImplementedError

    def _parent_has_series(self, tx: Any, parent: str, path: str, rank: int) -> bool:
        raise NotImplementedError

    def _create_series(self, tx: Any, rows: list[tuple[str, int, str, int]]) -> list[SeriesRow]:
        """Create the series (path, rank, kind, last step) that do not exist yet, with no
        points; return the rows of all of them as they now are."""
        raise NotImplementedError

    def _store_chunks(
        self, tx: Any, attempt: Any, chunks: list[ChunkRow], updates: list[SeriesUpdate]
    ) -> None:
        """Insert the chunks (of ``attempt``) and update their series: last step the
        higher of the two, count plus n, last value."""
        raise NotImplementedError


def _column_of_objects(path: str, col: list[Any]) -> tuple[Any, str]:
    if all(type(v) is str for v in col):
        return col, STR_SERIES
    try:
        return np.array(col, dtype=np.float64), FLOAT_SERIES
    except (TypeError, ValueError):
        warnings.warn(
            f"tracker: series {path!r} received both str and float points in one batch; "
            "they were refused",
            RuntimeWarning,
            stacklevel=1,
        )
        return None, FLOAT_SERIES


def _collect_pieces(
    group: Any, rank: int, base: int, pieces: dict[tuple[str, int], list[Any]]
) -> None:
    keys, steps, ts, columns, order = group_columns(group)
    order = order + base
    for j, path in enumerate(keys):
        pieces.setdefault((path, rank), []).append((steps, columns[j], ts, order))
