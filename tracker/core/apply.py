"""Applying journaled operations to the store: the only code that writes run data.

The writer thread calls ``RunApplier.apply`` with each batch right after journaling
it; recovery and ``tracker sync`` call it with records read back from the journal.

A point's identity is the journal record that carried it, not its (path, step): every
point is stored, repeats of a step and steps lower than a series' last included, and a
record is applied once because the store keeps, in the same transaction as the points,
how far into each journal segment it has applied (the ``applied`` table); a record at
or before that offset is skipped, however often a journal is replayed.

Each segment is one attempt (a writer session) of its run, listed in ``attempts``; every
chunk names its attempt. An attempt opened with ``resume_from_step=s`` records s as its
``rewind_step``: readers then hide (but keep) the points that earlier attempts stored
past s.

The per-series state cached here (series ids, last steps, counts) changes only once
the transaction that wrote it has committed: a batch rolled back by a full disk or an
I/O error leaves the cache as the store is, so the replay that retries it from the
journal writes every point again, under series ids that exist.

A record the store cannot hold (a value no check at the call caught) must not block its
run: the batch is applied again operation by operation, and each operation that fails
for a reason of its own is set aside (listed in the ``set_aside`` table with the error,
still in the journal) while the rest is applied.

Operations (tuples of builtin values; see ``core.run`` for who makes them):

    ("logs", rank, n_calls, groups)           log calls as columns (see batch.py)
    ("set", path, kind, value, ts)            a single value
    ("file", path, info)                      a file reference (dict of uri/size/hash)
    ("tags+", [tags]) / ("tags-", [tags])
    ("create", {run metadata})                first op of every journal segment
    ("status", status, ts, error_text)
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import warnings
from typing import Any

import numpy as np

from .store import Store, chunk_crc

log = logging.getLogger("tracker")

FLOAT_SERIES, STR_SERIES = "float", "str"
_NO_STEP = -(2**63)


class _Series:
    __slots__ = ("id", "kind", "last_step", "count", "warned")

    def __init__(self, sid: int, kind: str, last_step: int, count: int) -> None:
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


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the medium (disk full, I/O, locks), not of the data.

    Transient failures leave the batch in the journal, to be retried; any other failure
    of one operation is that operation's own, and it is set aside.
    """
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError | MemoryError | sqlite3.OperationalError):
            return True
        if type(exc) is sqlite3.DatabaseError:  # "malformed", "not a database": the file
            return True
        exc = exc.__cause__ or exc.__context__  # StoreError wraps the sqlite3 error
        seen += 1
    return False


class RunApplier:
    """Writes the operations of one run into the store, keeping per-series state cached."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.series: dict[tuple[str, int], _Series] = {}
        self.quiet = False  # kept for callers; replays no longer warn about anything
        self.set_aside = 0  # operations set aside by this applier
        self._applied: dict[str, int] = {}  # segment -> end offset applied (committed)
        self._attempts: dict[str, int] = {}  # segment -> attempt id (committed)
        self._new_attempts: dict[str, int] = {}  # made by the open transaction
        self._segment: str | None = None  # segment of the batch being applied
        self._load()

    def _load(self) -> None:
        conn = self.store.connection()
        rows = conn.execute(
            "SELECT path, rank, series_id, kind, last_step, count FROM series WHERE run_id=?",
            (self.run_id,),
        ).fetchall()
        for path, rank, sid, kind, last, count in rows:
            self.series[(path, rank)] = _Series(sid, kind, last, count)
        # A fork child continues after the fork step of its parent's series.
        row = conn.execute(
            "SELECT parent_id, fork_step FROM runs WHERE run_id=?", (self.run_id,)
        ).fetchone()
        self._fork = (row[0], row[1]) if row and row[0] else None
        self._applied = dict(
            conn.execute("SELECT segment, offset FROM applied WHERE run_id=?", (self.run_id,))
        )
        self._attempts = dict(
            conn.execute("SELECT segment, attempt FROM attempts WHERE run_id=?", (self.run_id,))
        )

    def applied(self, position: tuple[str, int]) -> bool:
        """Whether the record ending at ``position`` (segment, end offset) is in the store."""
        return position[1] <= self._applied.get(position[0], -1)

    # -- entry point ---------------------------------------------------------------------

    def apply(self, ops: list[Any], position: tuple[str, int] | None = None) -> int:
        """Apply columnized ``ops`` in one transaction; record ``position`` (segment, end).

        Returns how many operations were set aside (0 but for a record the store cannot
        hold). Raises on a failure of the store itself; nothing is then applied, and
        the cache is as before.
        """
        if position is not None and self.applied(position):
            return 0  # applied before: a record's points are stored once
        self._segment = position[0] if position is not None else None
        staged = _Staged(self.series)
        self._new_attempts = {}
        try:
            with self.store.write() as conn:
                self._apply_ops(conn, ops, staged)
                self._record_position(conn, position)
        except Exception as exc:
            self._new_attempts = {}
            if is_transient(exc):
                raise
            return self._apply_each(ops, position, exc)
        self._committed(staged, position)
        return 0

    def _committed(self, staged: _Staged, position: tuple[str, int] | None) -> None:
        self.series.update(staged)
        self._attempts.update(self._new_attempts)
        self._new_attempts = {}
        if position is not None:
            self._applied[position[0]] = position[1]

    def _apply_ops(self, conn: sqlite3.Connection, ops: list[Any], staged: _Staged) -> None:
        pieces: dict[tuple[str, int], list[Any]] = {}
        base = 0  # call positions of successive batches follow one another
        for op in ops:
            if op[0] == "logs":
                _, rank, n_calls, groups = op
                for group in groups:
                    _collect_pieces(group, rank, base, pieces)
                base += n_calls
            else:
                self._apply_other(conn, op)
        if pieces:
            self._write_pieces(conn, pieces, staged)

    def _record_position(self, conn: sqlite3.Connection, position: tuple[str, int] | None) -> None:
        if position is not None:
            conn.execute(
                "INSERT OR REPLACE INTO applied(run_id, segment, offset) VALUES(?,?,?)",
                (self.run_id, position[0], position[1]),
            )

    def _apply_each(
        self, ops: list[Any], position: tuple[str, int] | None, first: BaseException
    ) -> int:
        """Apply ``ops`` one by one, setting aside each that fails on its own data."""
        staged = _Staged(self.series)
        aside: list[tuple[int, BaseException, Any]] = []
        self._new_attempts = {}
        with self.store.write() as conn:
            for index, op in enumerate(ops):
                mine = _Staged(staged)
                attempts_before = dict(self._new_attempts)
                conn.execute("SAVEPOINT op")
                try:
                    self._apply_ops(conn, [op], mine)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    self._new_attempts = attempts_before
                    if is_transient(exc):
                        raise
                    aside.append((index, exc, op))
                    continue
                conn.execute("RELEASE op")
                staged.update(mine)
            segment, offset = position if position is not None else ("", -1)
            now = time.time()
            conn.executemany(
                "INSERT OR REPLACE INTO set_aside(run_id, segment, offset, op_index, error, "
                "created_at) VALUES(?,?,?,?,?,?)",
                [
                    (self.run_id, segment, offset, i, _describe(op, exc), now)
                    for i, exc, op in aside
                ],
            )
            self._record_position(conn, position)
        self._committed(staged, position)
        if aside:
            self.set_aside += len(aside)
            i, exc, op = aside[0]
            msg = (
                f"tracker: run {self.run_id}: {len(aside)} operation(s) could not be stored "
                f"and were set aside (kept in the journal; `tracker doctor` lists them): "
                f"{_describe(op, exc)}"
            )
            log.error(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=1)
        return len(aside)

    # -- metadata operations -------------------------------------------------------------

    def _apply_other(self, conn: sqlite3.Connection, op: Any) -> None:
        kind = op[0]
        rid = self.run_id
        if kind == "set":
            _, path, vkind, value, _ts = op
            conn.execute(
                "INSERT OR REPLACE INTO fields(run_id, path, kind, value) VALUES(?,?,?,?)",
                (rid, path, vkind, value),
            )
        elif kind == "file":
            conn.execute(
                "INSERT OR REPLACE INTO fields(run_id, path, kind, value) VALUES(?,?,?,?)",
                (rid, op[1], "file", json.dumps(op[2], sort_keys=True)),
            )
        elif kind == "tags+":
            conn.executemany(
                "INSERT OR IGNORE INTO tags(run_id, tag) VALUES(?,?)", [(rid, t) for t in op[1]]
            )
        elif kind == "tags-":
            conn.executemany("DELETE FROM tags WHERE run_id=? AND tag=?", [(rid, t) for t in op[1]])
        elif kind == "create":
            self._create(conn, op[1])
        elif kind == "status":
            _, status, ts, error = op
            conn.execute(
                "UPDATE runs SET status=?, ended_at=?, updated_at=?, "
                "error=COALESCE(?, error) WHERE run_id=?",
                (status, ts if status != "running" else None, ts, error, rid),
            )
        else:
            log.warning("tracker: unknown journal operation %r ignored", kind)

    def _create(self, conn: sqlite3.Connection, meta: dict[str, Any]) -> None:
        now = meta.get("ts", time.time())
        conn.execute(
            "INSERT INTO runs(run_id, project, name, status, created_at, updated_at, "
            "heartbeat, host, pid, parent_id, fork_step) VALUES(?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(run_id) DO UPDATE SET status='running', ended_at=NULL, "
            "updated_at=excluded.updated_at, heartbeat=excluded.heartbeat, "
            "host=excluded.host, pid=excluded.pid",
            (
                self.run_id,
                meta["project"],
                meta.get("name"),
                "running",
                now,
                now,
                now,
                meta.get("host"),
                meta.get("pid"),
                meta.get("parent_id"),
                meta.get("fork_step"),
            ),
        )
        if meta.get("parent_id") and self._fork is None:
            self._fork = (meta["parent_id"], meta["fork_step"])
        attempt = self._attempt(conn)
        if attempt is not None and meta.get("rewind_step") is not None:
            conn.execute(
                "UPDATE attempts SET rewind_step=? WHERE attempt=?",
                (int(meta["rewind_step"]), attempt),
            )

    def _attempt(self, conn: sqlite3.Connection) -> int | None:
        """The attempt id of the segment being applied, made on first use."""
        segment = self._segment
        if segment is None:
            return None
        attempt = self._attempts.get(segment) or self._new_attempts.get(segment)
        if attempt is None:
            conn.execute(
                "INSERT INTO attempts(run_id, segment) VALUES(?,?) "
                "ON CONFLICT(run_id, segment) DO NOTHING",
                (self.run_id, segment),
            )
            (attempt,) = conn.execute(
                "SELECT attempt FROM attempts WHERE run_id=? AND segment=?",
                (self.run_id, segment),
            ).fetchone()
            self._new_attempts[segment] = attempt
        return attempt

    # -- series ----------------------------------------------------------------------------

    def _series_for(
        self, conn: sqlite3.Connection, path: str, rank: int, kind: str, staged: _Staged
    ) -> _Series:
        s = staged.writable((path, rank))
        if s is not None:
            return s
        conn.execute(
            "INSERT INTO series(run_id, path, rank, kind, last_step, count) VALUES(?,?,?,?,?,0) "
            "ON CONFLICT(run_id, path, rank) DO NOTHING",
            (self.run_id, path, rank, kind, self._inherited_last_step(conn, path, rank)),
        )
        sid, skind, last, count = conn.execute(
            "SELECT series_id, kind, last_step, count FROM series "
            "WHERE run_id=? AND path=? AND rank=?",
            (self.run_id, path, rank),
        ).fetchone()
        s = staged[(path, rank)] = _Series(sid, skind, last, count)
        return s

    def _inherited_last_step(self, conn: sqlite3.Connection, path: str, rank: int) -> int:
        if self._fork is None:
            return _NO_STEP  # the common case: no query
        parent, fork_step = self._fork
        row = conn.execute(
            "SELECT 1 FROM series WHERE run_id=? AND path=? AND rank=?", (parent, path, rank)
        ).fetchone()
        # The child holds the parent's points up to fork_step; it may only continue after.
        return int(fork_step) if row is not None else _NO_STEP

    def _create_series(
        self, conn: sqlite3.Connection, pieces: dict[tuple[str, int], list[Any]], staged: _Staged
    ) -> None:
        """Create every series this batch starts, in two statements instead of two each."""
        new = [key for key in pieces if staged.find(key) is None]
        if len(new) < 16:
            return  # few: _series_for's per-series path is cheaper than a full reload
        rows = []
        for path, rank in new:
            col = pieces[(path, rank)][0][1]
            kind = (
                FLOAT_SERIES
                if isinstance(col, np.ndarray) or type(col[0]) is not str
                else STR_SERIES
            )
            rows.append(
                (self.run_id, path, rank, kind, self._inherited_last_step(conn, path, rank))
            )
        conn.executemany(
            "INSERT INTO series(run_id, path, rank, kind, last_step, count) VALUES(?,?,?,?,?,0) "
            "ON CONFLICT(run_id, path, rank) DO NOTHING",
            rows,
        )
        wanted = set(new)
        for path, rank, sid, kind, last, count in conn.execute(
            "SELECT path, rank, series_id, kind, last_step, count FROM series WHERE run_id=?",
            (self.run_id,),
        ):
            if (path, rank) in wanted:
                staged[(path, rank)] = _Series(sid, kind, last, count)

    def _write_pieces(
        self, conn: sqlite3.Connection, pieces: dict[tuple[str, int], list[Any]], staged: _Staged
    ) -> None:
        self._create_series(conn, pieces, staged)
        chunk_rows = []
        series_rows = []
        for (path, rank), plist in pieces.items():
            row = self._series_points(conn, rank, path, plist, staged)
            if row is not None:
                chunk_rows.append(row[0])
                series_rows.append(row[1])
        if chunk_rows:
            attempt = self._attempt(conn)
            conn.executemany(
                "INSERT INTO chunks(series_id, first_step, last_step, n, steps, vals, ts, crc, "
                f"attempt) VALUES(?,?,?,?,?,?,?,?,{'NULL' if attempt is None else int(attempt)})",
                chunk_rows,
            )
            conn.executemany(
                "UPDATE series SET last_step=MAX(last_step, ?), count=count+?, last_value=? "
                "WHERE series_id=?",
                series_rows,
            )

    def _series_points(
        self, conn: sqlite3.Connection, rank: int, path: str, plist: list[Any], staged: _Staged
    ) -> tuple[tuple, tuple] | None:
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
        s = self._series_for(conn, path, rank, kind, staged)
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


def _describe(op: Any, exc: BaseException) -> str:
    """One line naming an operation that could not be applied, and why."""
    tag = op[0] if isinstance(op, tuple | list) and op else type(op).__name__
    what = str(tag)
    if tag == "logs" and len(op) > 3:
        keys = sorted({k for group in op[3] for k in group[1]})
        what = f"log of {', '.join(map(repr, keys[:5]))}{' ...' if len(keys) > 5 else ''}"
    elif tag in ("set", "file") and len(op) > 1:
        what = f"{tag} {op[1]!r}"
    return f"{what}: {type(exc).__name__}: {str(exc)[:300]}"


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


def recorded_offsets(store: Store, run_id: str) -> dict[str, int]:
    rows = (
        store.connection()
        .execute("SELECT segment, offset FROM applied WHERE run_id=?", (run_id,))
        .fetchall()
    )
    return dict(rows)


def _collect_pieces(
    group: Any, rank: int, base: int, pieces: dict[tuple[str, int], list[Any]]
) -> None:
    if group[0] == "cols":
        _, keys, steps_b, ts_b, vals_b, order_b = group
        steps = np.frombuffer(steps_b, dtype=np.int64)
        ts = np.frombuffer(ts_b, dtype=np.float64)
        columns: Any = np.frombuffer(vals_b, dtype=np.float64).reshape(len(steps), len(keys)).T
        order = np.arange(len(steps)) if order_b is None else np.frombuffer(order_b, np.int64)
    else:
        _, keys, steps_l, ts_l, rows, order_l = group
        steps = np.array(steps_l, dtype=np.int64)
        ts = np.array(ts_l, dtype=np.float64)
        columns = [[r[j] for r in rows] for j in range(len(keys))]
        order = np.arange(len(steps)) if order_l is None else np.array(order_l, np.int64)
    order = order + base
    for j, path in enumerate(keys):
        pieces.setdefault((path, rank), []).append((steps, columns[j], ts, order))
