"""The SQLite store's applier: the hooks of ``applying.BatchApplier`` in SQL.

``SQLiteStore.applier(run_id)`` makes one per run. Run data (fields, tags, series,
chunks, attempts, a run's row as its "create" and "status" ops say) is written to the
database here and only here; the store's own methods write the rest (heartbeats,
crash marks, deletions). What applying means (identity by journal record, attempts,
set-aside records, the cache that follows commits) is ``applying.py``'s to say.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..downsample import SUMMARY_MIN_POINTS, encode_summaries
from .applying import BatchApplier, ChunkRow, SeriesRow, SeriesUpdate

if TYPE_CHECKING:
    from .sqlite import SQLiteStore

_INSERT_SERIES = (
    "INSERT INTO series(run_id, path, rank, kind, last_step, count) VALUES(?,?,?,?,?,0) "
    "ON CONFLICT(run_id, path, rank) DO NOTHING"
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the medium (disk full, I/O, locks), not of the data.

    Transient failures leave the batch in the journal, to be retried; any other failure
    of one operation is that operation's own, and it is set aside.
    """
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        if isinstance(cur, OSError | MemoryError | sqlite3.OperationalError):
            return True
        if type(cur) is sqlite3.DatabaseError:  # "malformed", "not a database": the file
            return True
        cur = cur.__cause__ or cur.__context__  # StoreError wraps the sqlite3 error
        seen += 1
    return False


class SQLiteApplier(BatchApplier):
    """Writes the operations of one run into a ``SQLiteStore``."""

    def __init__(self, store: SQLiteStore, run_id: str) -> None:
        self.store = store
        super().__init__(run_id)

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def _load_state(self) -> tuple[list[SeriesRow], tuple[str, int] | None, Any, Any]:
        read, rid = self.store._read, self.run_id
        series = read(
            "SELECT path, rank, series_id, kind, last_step, count FROM series WHERE run_id=?",
            (rid,),
        )
        row = read("SELECT parent_id, fork_step FROM runs WHERE run_id=?", (rid,))
        fork = (row[0][0], row[0][1]) if row and row[0][0] else None
        attempts = read("SELECT segment, attempt FROM attempts WHERE run_id=?", (rid,))
        return series, fork, self.store.applied_offsets(rid), attempts

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self.store.write()

    @contextlib.contextmanager
    def _savepoint(self, tx: sqlite3.Connection) -> Iterator[None]:
        tx.execute("SAVEPOINT op")
        try:
            yield
        except BaseException:
            tx.execute("ROLLBACK TO op")
            tx.execute("RELEASE op")
            raise
        tx.execute("RELEASE op")

    def _applied_offset(self, tx: sqlite3.Connection, segment: str) -> int | None:
        row = tx.execute(
            "SELECT offset FROM applied WHERE run_id=? AND segment=?", (self.run_id, segment)
        ).fetchone()
        return None if row is None else int(row[0])

    def _record_position(self, tx: sqlite3.Connection, segment: str, offset: int) -> None:
        tx.execute(
            "INSERT OR REPLACE INTO applied(run_id, segment, offset) VALUES(?,?,?)",
            (self.run_id, segment, offset),
        )

    def _record_set_aside(
        self,
        tx: sqlite3.Connection,
        segment: str,
        offset: int,
        described: list[tuple[int, str]],
        now: float,
    ) -> None:
        tx.executemany(
            "INSERT OR REPLACE INTO set_aside(run_id, segment, offset, op_index, error, "
            "created_at) VALUES(?,?,?,?,?,?)",
            [(self.run_id, segment, offset, i, text, now) for i, text in described],
        )

    def _set_field(self, tx: sqlite3.Connection, path: str, kind: str, value: Any) -> None:
        tx.execute(
            "INSERT OR REPLACE INTO fields(run_id, path, kind, value) VALUES(?,?,?,?)",
            (self.run_id, path, kind, value),
        )

    def _change_tags(self, tx: sqlite3.Connection, tags: list[str], *, add: bool) -> None:
        sql = (
            "INSERT OR IGNORE INTO tags(run_id, tag) VALUES(?,?)"
            if add
            else "DELETE FROM tags WHERE run_id=? AND tag=?"
        )
        tx.executemany(sql, [(self.run_id, t) for t in tags])

    def _open_run(self, tx: sqlite3.Connection, meta: dict[str, Any], now: float) -> None:
        tx.execute(
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

    def _set_status(
        self, tx: sqlite3.Connection, status: str, ts: float, error: str | None
    ) -> None:
        tx.execute(
            "UPDATE runs SET status=?, ended_at=?, updated_at=?, "
            "error=COALESCE(?, error) WHERE run_id=?",
            (status, ts if status != "running" else None, ts, error, self.run_id),
        )

    def _new_attempt(self, tx: sqlite3.Connection, segment: str) -> Any:
        tx.execute(
            "INSERT INTO attempts(run_id, segment) VALUES(?,?) "
            "ON CONFLICT(run_id, segment) DO NOTHING",
            (self.run_id, segment),
        )
        (attempt,) = tx.execute(
            "SELECT attempt FROM attempts WHERE run_id=? AND segment=?", (self.run_id, segment)
        ).fetchone()
        return attempt

    def _set_rewind(self, tx: sqlite3.Connection, attempt: Any, step: int) -> None:
        tx.execute("UPDATE attempts SET rewind_step=? WHERE attempt=?", (step, attempt))

    def _parent_has_series(self, tx: sqlite3.Connection, parent: str, path: str, rank: int) -> bool:
        row = tx.execute(
            "SELECT 1 FROM series WHERE run_id=? AND path=? AND rank=?", (parent, path, rank)
        ).fetchone()
        return row is not None

    def _create_series(
        self, tx: sqlite3.Connection, rows: list[tuple[str, int, str, int]]
    ) -> list[SeriesRow]:
        rid = self.run_id
        tx.executemany(_INSERT_SERIES, [(rid, *row) for row in rows])
        if len(rows) == 1:
            path, rank = rows[0][:2]
            found = tx.execute(
                "SELECT path, rank, series_id, kind, last_step, count FROM series "
                "WHERE run_id=? AND path=? AND rank=?",
                (rid, path, rank),
            ).fetchall()
            return found
        # Many: one read of the run's series beats a query each.
        wanted = {(path, rank) for path, rank, *_ in rows}
        every = tx.execute(
            "SELECT path, rank, series_id, kind, last_step, count FROM series WHERE run_id=?",
            (rid,),
        )
        return [row for row in every if (row[0], row[1]) in wanted]

    def _store_chunks(
        self,
        tx: sqlite3.Connection,
        attempt: Any,
        chunks: list[ChunkRow],
        updates: list[SeriesUpdate],
    ) -> None:
        sql = (
            "INSERT INTO chunks(series_id, first_step, last_step, n, steps, vals, ts, crc, "
            f"attempt) VALUES(?,?,?,?,?,?,?,?,{'NULL' if attempt is None else int(attempt)})"
        )
        # A large float chunk gets its summary (a str series' last value is a str).
        is_large = [
            row[3] >= SUMMARY_MIN_POINTS and not isinstance(update[2], str)
            for row, update in zip(chunks, updates, strict=True)
        ]
        if not any(is_large):
            tx.executemany(sql, chunks)
        else:
            self._store_summarized(tx, attempt, chunks, is_large, sql)
        tx.executemany(
            "UPDATE series SET last_step=MAX(last_step, ?), count=count+?, last_value=? "
            "WHERE series_id=?",
            updates,
        )

    def _store_summarized(
        self,
        tx: sqlite3.Connection,
        attempt: Any,
        chunks: list[ChunkRow],
        is_large: list[bool],
        sql: str,
    ) -> None:
        small = [row for row, big in zip(chunks, is_large, strict=True) if not big]
        if small:
            tx.executemany(sql, small)
        large = [row for row, big in zip(chunks, is_large, strict=True) if big]
        # Their rowids chosen here, after the largest (read under the write lock), so that
        # their summaries can name them without a statement each; rowids still rise in
        # write order, as readers need.
        (before,) = tx.execute("SELECT COALESCE(MAX(rowid), 0) FROM chunks").fetchone()
        tx.executemany(
            "INSERT INTO chunks(rowid, series_id, first_step, last_step, n, steps, vals, ts, crc, "
            f"attempt) VALUES(?,?,?,?,?,?,?,?,?,{'NULL' if attempt is None else int(attempt)})",
            [(before + 1 + i, *row) for i, row in enumerate(large)],
        )
        bodies = encode_summaries([(row[4], row[5]) for row in large])
        tx.executemany(
            "INSERT OR REPLACE INTO summaries(chunk, series_id, first_step, last_step, n, "
            "attempt, body) VALUES(?,?,?,?,?,?,?)",
            [
                (before + 1 + i, *row[:4], attempt, body)
                for i, (row, body) in enumerate(zip(large, bodies, strict=True))
            ],
        )
