"""The PostgreSQL store's applier: the hooks of ``applying.BatchApplier`` in SQL.

``PostgresStore.applier(run_id)`` makes one per run. What applying means (identity by
journal record, attempts, set-aside records, the cache that follows commits) is
``applying.py``'s to say; what is PostgreSQL's:

- **One run at a time.** Every batch's transaction first takes a transaction-level
  advisory lock of its run (``pg_advisory_xact_lock(namespace, hashtext(run_id))``), so
  that two server processes applying batches of one run take turns, while batches of
  different runs go on side by side. Under the lock it reads the run's applied offset
  of the batch's segment again: a batch another process applied since this applier
  last looked is skipped there, inside the transaction (``apply`` returns 0), and the
  cache learns the offset. Chunk ids (a sequence) therefore rise in commit order
  within a series, as readers need.
- **Chunks go in by binary COPY** (a multi-row INSERT for a batch of a few series),
  and the series they belong to are updated by one UPDATE over ``unnest``ed arrays: two
  statements for a batch of any number of series. About 7 million points/s for a batch
  of 100 series x 1,000 points (a loopback server, fsync on); a batch costs ~1 ms of
  round trips and commit whatever its size, so tiny batches (10 points) get ~10,000/s.
- **Batches that overlap.** Without their start offset (the protocol passes only the
  end) a batch is recognised as applied only whole. ``apply(..., start=offset)`` (an
  optional argument beyond the protocol) also refuses, storing nothing, a batch another
  process applied part of; callers whose concurrent appliers may cut one journal into
  different batches should pass it (replaying the journal then applies each record once).
- **Transient or not.** A psycopg error of SQLSTATE class 22 (data exception) or 23
  (integrity), or one the driver raises before sending (a value it cannot adapt, a NUL
  in a text), is the operation's own: it is set aside. Any other (connection lost,
  serialization failure, deadlock, disk full, admin shutdown) is the medium's: the batch
  stays in the journal, to be retried.

The per-series cache may lag what other processes did to the run (series they made,
counts): it is never used to write absolute values. New series are inserted with ON
CONFLICT DO NOTHING and read back; counts and last steps are updated relative to the
row (``count = count + n``, ``GREATEST``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg

from ..downsample import SUMMARY_MIN_POINTS, encode_summaries
from ..errors import StoreError
from .applying import BatchApplier, ChunkRow, SeriesRow, SeriesUpdate
from .postgres import field_columns
from .postgres_schema import RUN_LOCK_NAMESPACE

if TYPE_CHECKING:
    from .postgres import PostgresStore

_SERIES_COLUMNS = "path, rank, series_id, kind, last_step, count"
_COPY_CHUNKS = (
    "COPY chunks(series_id, first_step, last_step, n, steps, vals, ts, crc, attempt, summary) "
    "FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = [
    "int8", "int8", "int8", "int4", "bytea", "bytea", "bytea", "int8", "int8", "bytea"
]  # fmt: skip
_UPDATE_SERIES = (
    "UPDATE series s SET last_step = GREATEST(s.last_step, u.last_step), "
    "count = s.count + u.n, last_fval = u.fval, last_tval = u.tval "
    "FROM unnest(%s::int8[], %s::int8[], %s::float8[], %s::text[], %s::int8[]) "
    "AS u(last_step, n, fval, tval, sid) WHERE s.series_id = u.sid"
)
# At most this many chunks go in by multi-row VALUES instead of COPY (cheaper for few).
_FEW_CHUNKS = 4


class AlreadyApplied(Exception):
    """Raised inside a batch's transaction: another process stored this batch already."""

    def __init__(self, offset: int, *, partly: bool = False) -> None:
        super().__init__(offset)
        self.offset = offset
        self.partly = partly  # only part of the batch: the rest is not


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the medium, not of the data (see above)."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        if isinstance(cur, AlreadyApplied | OSError | MemoryError):
            return True
        if isinstance(cur, psycopg.Error):
            state = cur.sqlstate or ""
            if state[:2] in ("22", "23"):
                return False
            if not state and isinstance(cur, psycopg.DataError | psycopg.ProgrammingError):
                return False  # the driver refused a value before sending it
            return True
        if isinstance(cur, StoreError) and cur.__cause__ is None and cur.__context__ is None:
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


class PostgresApplier(BatchApplier):
    """Writes the operations of one run into a ``PostgresStore``."""

    _run_seen: bool  # the run's row existed when last looked (set by ``_load_state``)

    def __init__(self, store: PostgresStore, run_id: str) -> None:
        self.store = store
        self._position: tuple[str, int] | None = None  # of the batch being applied
        self._start: int | None = None  # where that batch starts, if the caller said
        super().__init__(run_id)

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def apply(
        self, batch: list[Any], position: tuple[str, int] | None = None, *, start: int | None = None
    ) -> int:
        """``BatchApplier.apply``, safe against another process applying the same run.

        ``start`` (optional, beyond the protocol) is the segment offset the batch's first
        record starts at: given, a batch that another process applied only part of
        (its applied offset lies strictly inside the batch) raises a StoreError and
        stores nothing, where without it only a batch wholly applied already is
        recognised (the batch's end at or before the applied offset). Callers whose
        batches are single records, or whose processes apply the same batches (the
        same boundaries), need no ``start``."""
        if position is not None and self.applied(position):
            return 0
        self._position = position
        self._start = start
        try:
            return super().apply(batch, position)
        except AlreadyApplied as done:
            assert position is not None
            self._applied[position[0]] = max(done.offset, self._applied.get(position[0], -1))
            if not done.partly:
                return 0
            raise StoreError(
                f"cannot apply a batch of run {self.run_id} to {self.store.location}: "
                f"another process applied its segment {position[0]} up to offset "
                f"{done.offset}, inside this batch ({start}-{position[1]}); nothing of it "
                "was stored: replay the journal (records are then applied once each)"
            ) from None
        finally:
            self._position = None
            self._start = None

    def _inherited(self, tx: psycopg.Connection[Any], path: str, rank: int) -> int:
        # A run another process created after this applier loaded its state may be a
        # fork child: look once, when the first series is made.
        if self._fork is None and not self._run_seen:
            row = tx.execute(
                "SELECT parent_id, fork_step FROM runs WHERE run_id=%s", (self.run_id,)
            ).fetchone()
            if row is not None:
                self._run_seen = True
                if row[0]:
                    self._fork = (row[0], row[1])
        return super()._inherited(tx, path, rank)

    def _load_state(self) -> tuple[list[SeriesRow], tuple[str, int] | None, Any, Any]:
        read, rid = self.store._read, self.run_id
        series = read(f"SELECT {_SERIES_COLUMNS} FROM series WHERE run_id=%s", (rid,))
        row = read("SELECT parent_id, fork_step FROM runs WHERE run_id=%s", (rid,))
        fork = (row[0][0], row[0][1]) if row and row[0][0] else None
        self._run_seen = bool(row)  # its parent, if any, is known then
        attempts = read("SELECT segment, attempt FROM attempts WHERE run_id=%s", (rid,))
        return series, fork, self.store.applied_offsets(rid), attempts

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self.store.write() as tx:
            tx.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (RUN_LOCK_NAMESPACE, self.run_id)
            )
            if self._position is not None:
                segment, offset = self._position
                row = tx.execute(
                    "SELECT end_offset FROM applied WHERE run_id=%s AND segment=%s",
                    (self.run_id, segment),
                ).fetchone()
                if row is not None and offset <= row[0]:
                    raise AlreadyApplied(int(row[0]))
                if row is not None and self._start is not None and self._start < row[0]:
                    raise AlreadyApplied(int(row[0]), partly=True)
            yield tx

    @contextlib.contextmanager
    def _savepoint(self, tx: psycopg.Connection[Any]) -> Iterator[None]:
        with tx.transaction():
            yield

    def _record_position(self, tx: psycopg.Connection[Any], segment: str, offset: int) -> None:
        tx.execute(
            "INSERT INTO applied(run_id, segment, end_offset) VALUES(%s,%s,%s) "
            "ON CONFLICT (run_id, segment) DO UPDATE SET end_offset=EXCLUDED.end_offset",
            (self.run_id, segment, offset),
        )

    def _record_set_aside(
        self,
        tx: psycopg.Connection[Any],
        segment: str,
        offset: int,
        described: list[tuple[int, str]],
        now: float,
    ) -> None:
        if not described:
            return
        with tx.cursor() as cur:
            cur.executemany(
                "INSERT INTO set_aside(run_id, segment, end_offset, op_index, error, created_at) "
                "VALUES(%s,%s,%s,%s,%s,%s) ON CONFLICT (run_id, segment, end_offset, op_index) "
                "DO UPDATE SET error=EXCLUDED.error, created_at=EXCLUDED.created_at",
                [(self.run_id, segment, offset, i, text, now) for i, text in described],
            )

    def _set_field(self, tx: psycopg.Connection[Any], path: str, kind: str, value: Any) -> None:
        tx.execute(
            "INSERT INTO fields(run_id, path, kind, ival, fval, tval) VALUES(%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (run_id, path) DO UPDATE SET kind=EXCLUDED.kind, ival=EXCLUDED.ival, "
            "fval=EXCLUDED.fval, tval=EXCLUDED.tval",
            (self.run_id, path, kind, *field_columns(value)),
        )

    def _change_tags(self, tx: psycopg.Connection[Any], tags: list[str], *, add: bool) -> None:
        if not tags:
            return
        if add:
            tx.execute(
                "INSERT INTO tags(run_id, tag) SELECT %s, unnest(%s::text[]) "
                "ON CONFLICT DO NOTHING",
                (self.run_id, list(tags)),
            )
        else:
            tx.execute(
                "DELETE FROM tags WHERE run_id=%s AND tag = ANY(%s)", (self.run_id, list(tags))
            )

    def _open_run(self, tx: psycopg.Connection[Any], meta: dict[str, Any], now: float) -> None:
        tx.execute(
            "INSERT INTO runs(run_id, project, name, status, created_at, updated_at, "
            "heartbeat, host, pid, parent_id, fork_step) "
            "VALUES(%s,%s,%s,'running',%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT(run_id) DO UPDATE SET status='running', ended_at=NULL, "
            "updated_at=EXCLUDED.updated_at, heartbeat=EXCLUDED.heartbeat, "
            "host=EXCLUDED.host, pid=EXCLUDED.pid",
            (
                self.run_id,
                meta["project"],
                meta.get("name"),
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
        self, tx: psycopg.Connection[Any], status: str, ts: float, error: str | None
    ) -> None:
        tx.execute(
            "UPDATE runs SET status=%s, ended_at=%s, updated_at=%s, "
            "error=COALESCE(%s, error) WHERE run_id=%s",
            (status, ts if status != "running" else None, ts, error, self.run_id),
        )

    def _new_attempt(self, tx: psycopg.Connection[Any], segment: str) -> Any:
        row = tx.execute(
            "INSERT INTO attempts(run_id, segment) VALUES(%s,%s) "
            "ON CONFLICT (run_id, segment) DO NOTHING RETURNING attempt",
            (self.run_id, segment),
        ).fetchone()
        if row is None:
            row = tx.execute(
                "SELECT attempt FROM attempts WHERE run_id=%s AND segment=%s",
                (self.run_id, segment),
            ).fetchone()
        assert row is not None
        return row[0]

    def _set_rewind(self, tx: psycopg.Connection[Any], attempt: Any, step: int) -> None:
        tx.execute("UPDATE attempts SET rewind_step=%s WHERE attempt=%s", (step, attempt))

    def _parent_has_series(
        self, tx: psycopg.Connection[Any], parent: str, path: str, rank: int
    ) -> bool:
        row = tx.execute(
            "SELECT 1 FROM series WHERE run_id=%s AND path=%s AND rank=%s", (parent, path, rank)
        ).fetchone()
        return row is not None

    def _create_series(
        self, tx: psycopg.Connection[Any], rows: list[tuple[str, int, str, int]]
    ) -> list[SeriesRow]:
        rid = self.run_id
        paths = [r[0] for r in rows]
        ranks = [r[1] for r in rows]
        kinds = [r[2] for r in rows]
        lasts = [r[3] for r in rows]
        # One statement for any number; the ORDER BY keeps the row locks in one order
        # (two processes creating series of one run cannot deadlock: they take turns
        # anyway, under the run's lock).
        tx.execute(
            "INSERT INTO series(run_id, path, rank, kind, last_step, count) "
            "SELECT %s, p, r, k, l, 0 FROM unnest(%s::text[], %s::int4[], %s::text[], "
            "%s::int8[]) AS u(p, r, k, l) ORDER BY p, r "
            "ON CONFLICT (run_id, path, rank) DO NOTHING",
            (rid, paths, ranks, kinds, lasts),
        )
        found = tx.execute(
            f"SELECT {_SERIES_COLUMNS} FROM series WHERE run_id=%s AND (path, rank) IN "
            "(SELECT * FROM unnest(%s::text[], %s::int4[]))",
            (rid, paths, ranks),
        ).fetchall()
        return [(p, r, sid, k, int(last), int(count)) for p, r, sid, k, last, count in found]

    def _store_chunks(
        self,
        tx: psycopg.Connection[Any],
        attempt: Any,
        chunks: list[ChunkRow],
        updates: list[SeriesUpdate],
    ) -> None:
        attempt = None if attempt is None else int(attempt)
        # A large float chunk carries its summary (a str series' last value is a str).
        large = [
            i
            for i, (row, update) in enumerate(zip(chunks, updates, strict=True))
            if row[3] >= SUMMARY_MIN_POINTS and not isinstance(update[2], str)
        ]
        summaries: list[bytes | None] = [None] * len(chunks)
        for i, body in zip(
            large, encode_summaries([(chunks[i][4], chunks[i][5]) for i in large]), strict=True
        ):
            summaries[i] = body
        if len(chunks) <= _FEW_CHUNKS:
            values = ",".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"] * len(chunks))
            args: list[Any] = []
            for row, summary in zip(chunks, summaries, strict=True):
                args.extend(row)
                args.append(attempt)
                args.append(summary)
            tx.execute(
                "INSERT INTO chunks(series_id, first_step, last_step, n, steps, vals, ts, crc, "
                f"attempt, summary) VALUES {values}",
                args,
            )
        else:
            with tx.cursor() as cur, cur.copy(_COPY_CHUNKS) as copy:
                copy.set_types(_COPY_TYPES)
                for row, summary in zip(chunks, summaries, strict=True):
                    copy.write_row((*row, attempt, summary))
        last_steps: list[int] = []
        counts: list[int] = []
        fvals: list[float | None] = []
        tvals: list[str | None] = []
        sids: list[Any] = []
        for last_step, n, last_value, sid in updates:
            last_steps.append(last_step)
            counts.append(n)
            if isinstance(last_value, str):
                fvals.append(None)
                tvals.append(last_value)
            else:
                fvals.append(None if last_value is None else float(last_value))
                tvals.append(None)
            sids.append(sid)
        tx.execute(_UPDATE_SERIES, (last_steps, counts, fvals, tvals, sids))
