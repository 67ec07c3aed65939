"""The embedded store: one directory holding a SQLite database (WAL mode) and journals.

Layout of a store directory::

    store.db                      runs, tags, fields, series and their chunks
    journal/<run-id>/<seg>.jnl    journal segments and writer locks (``journals.py``)

Series points are stored in chunks (``base.py`` gives the format): one row holds a run
of points of one series (one rank's values of one path). Writing one row per series per
batch is what makes a million points a second possible in SQLite; reading a series is
a concatenation of its chunks.

Every write transaction starts with BEGIN IMMEDIATE: a deferred transaction that later
upgrades to a writer can fail at once with "database is locked" when another process
writes, whatever the busy timeout. Readers never block writers (WAL).

Readers open the store read-only (``SQLiteStore(root, create=False, readonly=True)``):
no schema writes, no switch to WAL mode, so that an archived store on a read-only mount,
or one owned by another user, reads as it is. Every failure of the store surfaces as a
``StoreError`` naming the path and what to do about it, never a bare sqlite3 error.

This module and ``sqlite_apply.py`` (the applier) hold all of tracker's SQL.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..downsample import ChunkSummary
from ..errors import StoreError, TrackerError
from .base import (
    RUN_COLUMNS,
    Check,
    Chunk,
    SeriesInfo,
    TokenRecord,
    resolve_store_path,
    store_error,
)
from .journals import JournalFiles

if TYPE_CHECKING:
    from .sqlite_apply import SQLiteApplier

SCHEMA_VERSION = 3
DB_NAME = "store.db"
BUSY_TIMEOUT_S = 60.0


def _last_point_time(conn: sqlite3.Connection, run_id: str) -> float | None:
    """The latest timestamp among the last chunks of a run's series (None: no points)."""
    rows = conn.execute(
        "SELECT ts FROM chunks WHERE rowid IN (SELECT MAX(c.rowid) FROM chunks c "
        "JOIN series s ON c.series_id = s.series_id WHERE s.run_id=? GROUP BY c.series_id)",
        (run_id,),
    )
    last = None
    for (blob,) in rows:
        ts = np.frombuffer(blob, dtype=np.float64)
        ts = ts[~np.isnan(ts)]
        if len(ts) and (last is None or ts.max() > last):
            last = float(ts.max())
    return last


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs(
    run_id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    name TEXT,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL,
    ended_at REAL,
    heartbeat REAL,
    host TEXT,
    pid INTEGER,
    parent_id TEXT,
    fork_step INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_project ON runs(project, created_at);
CREATE TABLE IF NOT EXISTS tags(
    run_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY(run_id, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_tag ON tags(tag);
CREATE TABLE IF NOT EXISTS fields(
    run_id TEXT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL, value,
    PRIMARY KEY(run_id, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series(
    series_id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    path TEXT NOT NULL,
    rank INTEGER NOT NULL,
    kind TEXT NOT NULL,
    last_step INTEGER NOT NULL,
    count INTEGER NOT NULL,
    last_value,
    UNIQUE(run_id, path, rank)
);
CREATE TABLE IF NOT EXISTS chunks(
    series_id INTEGER NOT NULL,
    first_step INTEGER NOT NULL,
    last_step INTEGER NOT NULL,
    n INTEGER NOT NULL,
    steps BLOB NOT NULL,
    vals BLOB NOT NULL,
    ts BLOB NOT NULL,
    crc INTEGER,
    attempt INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_by_series ON chunks(series_id, first_step);
CREATE TABLE IF NOT EXISTS summaries(
    chunk INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    first_step INTEGER NOT NULL,
    last_step INTEGER NOT NULL,
    n INTEGER NOT NULL,
    attempt INTEGER,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS set_aside(
    run_id TEXT NOT NULL, segment TEXT NOT NULL, offset INTEGER NOT NULL,
    op_index INTEGER NOT NULL, error TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY(run_id, segment, offset, op_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts(
    attempt INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    segment TEXT NOT NULL,
    rewind_step INTEGER,
    UNIQUE(run_id, segment)
);
CREATE TABLE IF NOT EXISTS applied(
    run_id TEXT NOT NULL, segment TEXT NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY(run_id, segment)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens(
    token_id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    scope TEXT NOT NULL,
    name TEXT,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    secret_hash TEXT NOT NULL
);
"""
_TOKEN_COLUMNS = "token_id, project, scope, name, created_at, expires_at, revoked_at, secret_hash"


# Schema 1 -> 2: chunks carry a CRC-32 of their three blobs (NULL in older rows, which
# are read unchecked), and records that could not be applied are listed in set_aside.
# Schema 2 -> 3: each chunk names the attempt (writer session, one journal segment) that
# wrote it, and an attempt may rewind the run to a step (``resume_from_step``): points of
# earlier attempts past that step are superseded. Chunks of older stores have no attempt
# and count as the first.
# Summaries (``downsample.encode_summary``) of large float chunks live in a table of
# their own, keyed by the chunk's rowid: a column after a chunk's blobs would make SQLite
# walk their overflow pages to reach it. The table came without a schema change: a store
# without it (or a chunk without a row in it) is read from its points, and a tracker
# that does not know it keeps writing chunks that are read that way.
_MIGRATIONS = {
    1: ("ALTER TABLE chunks ADD COLUMN crc INTEGER",),
    2: ("ALTER TABLE chunks ADD COLUMN attempt INTEGER",),
}


def _cannot_open(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_CANTOPEN
    return "unable to open" in str(exc).lower()


def connect_readonly(db_path: Path, *, immutable: bool = False) -> sqlite3.Connection:
    """A read-only connection: ``mode=ro``, or ``immutable=1`` where that is all there is.

    ``mode=ro`` never writes the database, but SQLite reads a WAL database through its
    -shm file, which it must be able to open or create; ``immutable=1`` reads the main
    file alone (no locks, no -shm), and is only right where nothing can write.
    """
    query = "immutable=1" if immutable else "mode=ro"
    conn = sqlite3.connect(
        f"{db_path.as_uri()}?{query}",
        uri=True,
        timeout=BUSY_TIMEOUT_S,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def open_readonly(db_path: Path) -> tuple[sqlite3.Connection, bool]:
    """Open ``db_path`` read-only and prove it readable; return (connection, immutable).

    SQLite can read a WAL database in a directory it cannot write only if the -shm and
    -wal files are already there (they are not once the last writer closed cleanly):
    there it falls back to ``immutable=1``. Raises sqlite3.Error as SQLite reports it.
    """
    conn = connect_readonly(db_path)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn, False
    except sqlite3.Error as exc:
        conn.close()
        if not _cannot_open(exc) or os.access(db_path.parent, os.W_OK):
            raise
    wal = db_path.with_name(db_path.name + "-wal")
    with contextlib.suppress(OSError):
        if wal.stat().st_size > 0:
            # The main file is consistent as of the last checkpoint; only later commits
            # are out of sight, and nothing can add more on a read-only file system.
            warnings.warn(
                f"tracker: reading {db_path} without its write-ahead log {wal.name}: "
                f"SQLite needs to create {db_path.name}-shm in {db_path.parent} to read "
                "it; the last writes before the store became read-only are not shown",
                RuntimeWarning,
                stacklevel=3,
            )
    conn = connect_readonly(db_path, immutable=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        conn.close()
        raise
    return conn, True


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite rolls back by itself on some errors (a full disk): a second ROLLBACK would
    # fail and hide the error that matters.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class SQLiteStore(JournalFiles):
    """A handle on one store directory (the ``Store`` protocol of ``base.py``).
    Thread-safe: each thread gets its own connection.

    ``readonly=True`` is the handle of readers: it never writes (``write()`` refuses),
    does not create or upgrade the schema, and reads stores of schema 1 as they are
    (``has_crc`` and ``has_set_aside`` say what the store has). ``for_writing()`` gives
    the read-write handle on the same store, for the recovery a reader may do.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        readonly: bool = False,
    ) -> None:
        self.root = resolve_store_path(root)
        self.db_path = self.root / DB_NAME
        self.location = str(self.db_path)
        self.journal_root = self.root / "journal"
        self.readonly = readonly
        self.immutable = False  # set when a read-only handle had to use immutable=1
        self.schema = SCHEMA_VERSION
        self.has_crc = True
        self.has_set_aside = True
        self.has_attempts = True
        self.has_tokens = True
        self.has_summaries = True
        self._writable: SQLiteStore | None = None
        self._local = threading.local()
        try:
            exists = self.db_path.exists()
        except OSError as exc:
            raise store_error("read", self.db_path, self.root, exc) from exc
        if not exists:
            if not create or readonly:
                raise StoreError(f"no tracker store at {self.root} (no {DB_NAME} there)")
            try:
                self.journal_root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise store_error("create the store directory", self.root, self.root, exc) from exc
        if readonly:
            self._open_readonly()
        else:
            self._init_schema()

    # -- connections and transactions -------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                if self.readonly:
                    conn = connect_readonly(self.db_path, immutable=self.immutable)
                else:
                    conn = sqlite3.connect(
                        self.db_path,
                        timeout=BUSY_TIMEOUT_S,
                        isolation_level=None,
                        check_same_thread=False,
                    )
                    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
                    # NORMAL in WAL mode: commits are ordered and crash-safe; the journal,
                    # fsynced on its own schedule, is what makes recent operations durable.
                    conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise store_error("open", self.db_path, self.root, exc) from exc
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._writable is not None:
            self._writable.close()

    def for_writing(self) -> SQLiteStore:
        """This store's read-write handle (itself unless read-only), opened on first use.

        Opening it creates or upgrades the schema: only recovery, which writes anyway,
        asks for it from a reader.
        """
        if not self.readonly:
            return self
        if self._writable is None:
            self._writable = SQLiteStore(self.root, create=False)
            self._detect_schema(self.connection())  # it may have just been upgraded
        return self._writable

    @property
    def can_write(self) -> bool:
        """Whether a write could succeed (readers skip recovery where it cannot)."""
        if not self.readonly:
            return True
        return (
            not self.immutable
            and os.access(self.db_path, os.W_OK)
            and os.access(self.root, os.W_OK)
        )

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE), retried while another writer holds the lock.

        A sqlite3 error inside it rolls back and becomes a StoreError naming the path.
        """
        if self.readonly:
            raise StoreError(
                f"cannot write to {self.db_path}: this handle on the store was opened "
                "read-only (for reading); use SQLiteStore(root) to write"
            )
        conn = self.connection()
        deadline = time.monotonic() + 10 * BUSY_TIMEOUT_S
        delay = 0.005
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise store_error("write to", self.db_path, self.root, exc) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except sqlite3.Error as exc:
                raise store_error("write to", self.db_path, self.root, exc) from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            _rollback(conn)
            raise store_error("write to", self.db_path, self.root, exc) from exc
        except BaseException:
            _rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise store_error("write to", self.db_path, self.root, exc) from exc

    def _init_schema(self) -> None:
        try:
            conn = self.connection()
            for attempt in range(200):
                try:
                    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    if mode.lower() != "wal":
                        raise StoreError(
                            f"cannot put {self.db_path} in WAL mode (got {mode}); "
                            "the store needs a local file system that supports it"
                        )
                    break
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc) or attempt == 199:
                        raise
                    time.sleep(0.01)
        except sqlite3.Error as exc:
            raise store_error("open", self.db_path, self.root, exc) from exc
        with self.write() as c:
            has_meta = c.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone()
            row = has_meta and c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            found = int(row[0]) if row else None
            if found is not None and found > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.root} has schema {found}, newer than this tracker "
                    f"understands ({SCHEMA_VERSION}); upgrade tracker"
                )
            for version in range(found or SCHEMA_VERSION, SCHEMA_VERSION):
                for statement in _MIGRATIONS[version]:
                    c.execute(statement)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            if found != SCHEMA_VERSION:
                # Only when it changes: every open writing the same row would make each
                # reader of old a writer, and keep the WAL busy for nothing.
                c.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES('schema', ?)",
                    (str(SCHEMA_VERSION),),
                )

    def _open_readonly(self) -> None:
        try:
            conn, self.immutable = open_readonly(self.db_path)
        except sqlite3.Error as exc:
            raise store_error("read", self.db_path, self.root, exc) from exc
        self._local.conn = conn
        self._detect_schema(conn)

    def _detect_schema(self, conn: sqlite3.Connection) -> None:
        """What a store read as it is holds: its schema version and the newer tables."""
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            tables = {name for (name,) in rows}
            if not {"runs", "series", "chunks"} <= tables:
                raise StoreError(
                    f"{self.db_path} holds no tracker tables (a store still being created, "
                    f"or another program's database); `tracker doctor --store {self.root}` "
                    "checks it"
                )
            row = (
                conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if "meta" in tables
                else None
            )
            columns = {r[1] for r in conn.execute("PRAGMA table_info(chunks)")}
        except sqlite3.Error as exc:
            raise store_error("read", self.db_path, self.root, exc) from exc
        if not row:
            self.schema = 1
        else:
            try:
                self.schema = int(row[0])
            except (TypeError, ValueError):
                raise StoreError(
                    f"{self.db_path} records schema {row[0]!r}, not a version this tracker knows"
                ) from None
        if self.schema > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.root} has schema {self.schema}, newer than this tracker "
                f"understands ({SCHEMA_VERSION}); upgrade tracker"
            )
        self.has_crc = "crc" in columns
        self.has_set_aside = "set_aside" in tables
        self.has_attempts = "attempt" in columns and "attempts" in tables
        self.has_tokens = "tokens" in tables
        self.has_summaries = "summaries" in tables

    # -- writing (the applier writes run data; these the rest) ----------------------------

    def applier(self, run_id: str) -> SQLiteApplier:
        from .sqlite_apply import SQLiteApplier  # here: readers never need it

        return SQLiteApplier(self, run_id)

    def applied_offsets(self, run_id: str) -> dict[str, int]:
        return dict(self._read("SELECT segment, offset FROM applied WHERE run_id=?", (run_id,)))

    def heartbeat(self, run_id: str, ts: float) -> None:
        with self.write() as conn:
            conn.execute("UPDATE runs SET heartbeat=? WHERE run_id=?", (ts, run_id))

    def mark_crashed(self, run_id: str, now: float) -> None:
        with self.write() as conn:
            row = conn.execute("SELECT heartbeat FROM runs WHERE run_id=?", (run_id,)).fetchone()
            # The heartbeat lags by up to its interval, and a writer kept busy by a full
            # queue (or an offline run) may have written none: the last point's time is
            # when the run was last seen alive too.
            seen = [t for t in (row[0] if row else None, _last_point_time(conn, run_id)) if t]
            conn.execute(
                "UPDATE runs SET status='crashed', ended_at=? WHERE run_id=? AND status='running'",
                (max(seen) if seen else now, run_id),
            )

    def delete_runs(self, run_ids: list[str]) -> None:
        if not run_ids:
            return
        marks = ",".join("?" * len(run_ids))
        with self.write() as c:
            series_of = f"SELECT series_id FROM series WHERE run_id IN ({marks})"
            if self.has_summaries:
                # By chunk (the key): an index by series would cost every write.
                c.execute(
                    "DELETE FROM summaries WHERE chunk IN "
                    f"(SELECT rowid FROM chunks WHERE series_id IN ({series_of}))",
                    run_ids,
                )
            c.execute(f"DELETE FROM chunks WHERE series_id IN ({series_of})", run_ids)
            for table in ("series", "fields", "tags", "applied", "runs"):
                c.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", run_ids)

    # -- team server tokens (a store older than tokens has none) ---------------------------

    def add_token(self, token: TokenRecord) -> None:
        with self.write() as conn:
            try:
                conn.execute(
                    f"INSERT INTO tokens({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    tuple(token),
                )
            except sqlite3.IntegrityError:
                raise StoreError(f"a token with id {token.token_id!r} exists already") from None

    def token(self, token_id: str) -> TokenRecord | None:
        if not self.has_tokens:
            return None
        rows = self._read(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_id=?", (token_id,))
        return TokenRecord(*rows[0]) if rows else None

    def tokens(self, project: str | None = None) -> list[TokenRecord]:
        if not self.has_tokens:
            return []
        sql = f"SELECT {_TOKEN_COLUMNS} FROM tokens"
        args: tuple[Any, ...] = ()
        if project is not None:
            sql, args = sql + " WHERE project=?", (project,)
        return [TokenRecord(*row) for row in self._read(sql + " ORDER BY created_at", args)]

    def revoke_token(self, token_id: str, now: float) -> bool:
        with self.write() as conn:
            cur = conn.execute(
                "UPDATE tokens SET revoked_at=COALESCE(revoked_at, ?) WHERE token_id=?",
                (now, token_id),
            )
            return cur.rowcount > 0

    def reclaim_space(self) -> int:
        # Deleting rows leaves their pages free inside store.db; only VACUUM gives them
        # back to the file system. It rewrites the file (needing up to its size free
        # again) under the write lock, so it waits for a live writer's transactions.
        before = self.disk_bytes()
        conn = self.connection()
        try:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise store_error("compact", self.db_path, self.root, exc) from exc
        return max(0, before - self.disk_bytes())

    def reclaimable_bytes(self) -> int:
        conn = self.connection()
        try:
            pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
        except sqlite3.Error as exc:
            raise store_error("read", self.db_path, self.root, exc) from exc
        return int(pages) * int(size)

    def disk_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += Path(f"{self.db_path}{suffix}").stat().st_size
        return total

    # -- reading -----------------------------------------------------------------------------

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        try:
            return self.connection().execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise store_error("read", self.db_path, self.root, exc) from exc

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._read(f"SELECT {_RUN_SELECT} FROM runs WHERE run_id=?", (run_id,))
        return dict(zip(RUN_COLUMNS, rows[0], strict=True)) if rows else None

    def runs(
        self,
        *,
        project: str | None = None,
        tags: Iterable[str] = (),
        statuses: Iterable[str] = (),
        config: Mapping[str, Iterable[tuple[str, Any]]] | None = None,
        created_before: float | None = None,
        id_prefix: str | None = None,
        parent_id: str | None = None,
        order: str = "newest",
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        if project is not None:
            where.append("project=?")
            args.append(project)
        for tag in tags:
            where.append("run_id IN (SELECT run_id FROM tags WHERE tag=?)")
            args.append(tag)
        statuses = list(statuses)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(statuses)
        for path, wanted in (config or {}).items():
            matches = [_field_match(kind, value) for kind, value in wanted]
            where.append(
                "run_id IN (SELECT run_id FROM fields WHERE path=? AND "
                f"({' OR '.join(sql for sql, _ in matches) or '0'}))"
            )
            args.append(path)
            for _, values in matches:
                args.extend(values)
        if created_before is not None:
            where.append("created_at < ?")
            args.append(created_before)
        if id_prefix is not None:
            where.append("run_id LIKE ? ESCAPE '\\'")
            args.append(_like_prefix(id_prefix))
        if parent_id is not None:
            where.append("parent_id=?")
            args.append(parent_id)
        sql = f"SELECT {_RUN_SELECT} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += _ORDERS[order]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [dict(zip(RUN_COLUMNS, row, strict=True)) for row in self._read(sql, args)]

    def tags(self, run_id: str) -> list[str]:
        return [
            t for (t,) in self._read("SELECT tag FROM tags WHERE run_id=? ORDER BY tag", (run_id,))
        ]

    def fields(self, run_id: str, prefix: str | None = None) -> list[tuple[str, str, Any]]:
        sql, args = "SELECT path, kind, value FROM fields WHERE run_id=?", [run_id]
        if prefix is not None:
            sql += " AND path LIKE ? ESCAPE '\\'"
            args.append(_like_prefix(prefix))
        return self._read(sql + " ORDER BY path", args)

    def field(self, run_id: str, path: str) -> tuple[str, Any] | None:
        rows = self._read(
            "SELECT kind, value FROM fields WHERE run_id=? AND path=?", (run_id, path)
        )
        return rows[0] if rows else None

    def series_list(self, run_id: str, rank: int | None = None) -> list[SeriesInfo]:
        sql = "SELECT path, rank, kind, count, last_step, last_value FROM series WHERE run_id=?"
        args: list[Any] = [run_id]
        if rank is not None:
            sql += " AND rank=?"
            args.append(rank)
        return list(map(SeriesInfo._make, self._read(sql + " ORDER BY path, rank", args)))

    def ranks(self, run_id: str) -> list[int]:
        sql = "SELECT DISTINCT rank FROM series WHERE run_id=? ORDER BY rank"
        return [r for (r,) in self._read(sql, (run_id,))]

    def attempts(self, run_id: str) -> list[tuple[Any, int | None]]:
        if not self.has_attempts:
            return []
        sql = "SELECT attempt, rewind_step FROM attempts WHERE run_id=? ORDER BY segment"
        return self._read(sql, (run_id,))

    def series_chunks(
        self, run_id: str, path: str, rank: int, max_first_step: int | None = None
    ) -> tuple[str, list[Chunk]] | None:
        rows = self._read(
            "SELECT series_id, kind FROM series WHERE run_id=? AND path=? AND rank=?",
            (run_id, path, rank),
        )
        if not rows:
            return None
        sid, kind = rows[0]
        crc = "crc" if self.has_crc else "NULL"  # schema 1 stores have no checksums
        attempt = "attempt" if self.has_attempts else "NULL"
        select = f"SELECT rowid, n, steps, vals, ts, {crc}, {attempt} FROM chunks WHERE series_id=?"
        if max_first_step is None:
            chunks = self._read(select, (sid,))
        else:
            chunks = self._read(select + " AND first_step<=?", (sid, max_first_step))
        return kind, list(map(Chunk._make, chunks))

    def chunk_summaries(
        self, run_id: str, path: str, rank: int, max_first_step: int | None = None
    ) -> tuple[str, list[ChunkSummary]] | None:
        """(kind, every chunk of the series as (chunk id, first step, last step, n,
        attempt, summary)), by chunk id; summary and attempt are None for a chunk without
        a summary (read its points with ``chunks_by_id``). None: no such series."""
        rows = self._read(
            "SELECT series_id, kind FROM series WHERE run_id=? AND path=? AND rank=?",
            (run_id, path, rank),
        )
        if not rows:
            return None
        sid, kind = rows[0]
        if not self.has_summaries:
            select = "SELECT rowid, first_step, last_step, n, NULL, NULL FROM chunks c"
        else:
            # The chunk's bounds must agree too: a summary names its chunk by rowid only.
            select = (
                "SELECT c.rowid, c.first_step, c.last_step, c.n, s.attempt, s.body FROM chunks "
                "c LEFT JOIN summaries s ON s.chunk=c.rowid AND s.first_step=c.first_step "
                "AND s.last_step=c.last_step AND s.n=c.n"
            )
        select += " WHERE c.series_id=?"
        if max_first_step is None:
            found = self._read(select + " ORDER BY c.rowid", (sid,))
        else:
            found = self._read(
                select + " AND c.first_step<=? ORDER BY c.rowid", (sid, max_first_step)
            )
        return kind, found

    def chunks_by_id(self, chunk_ids: list[Any]) -> list[Chunk]:
        """The chunks of these ids (as ``series_chunks`` gives them), by id."""
        crc = "crc" if self.has_crc else "NULL"
        attempt = "attempt" if self.has_attempts else "NULL"
        out: list[Chunk] = []
        ids = sorted(chunk_ids)
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            out.extend(
                map(
                    Chunk._make,
                    self._read(
                        f"SELECT rowid, n, steps, vals, ts, {crc}, {attempt} FROM chunks "
                        f"WHERE rowid IN ({','.join('?' * len(part))}) ORDER BY rowid",
                        part,
                    ),
                )
            )
        return out

    # -- maintenance ---------------------------------------------------------------------------

    def all_chunks(self) -> Iterator[tuple[str, str, int, str, Chunk]]:
        crc = "c.crc" if self.has_crc else "NULL"
        attempt = "c.attempt" if self.has_attempts else "NULL"
        sql = (
            f"SELECT s.run_id, s.path, s.rank, s.kind, c.rowid, c.n, c.steps, c.vals, c.ts, "
            f"{crc}, {attempt} FROM chunks c JOIN series s USING(series_id) "
            "ORDER BY s.run_id, s.path, s.rank, c.rowid"
        )
        try:
            for row in self.connection().execute(sql):
                yield row[0], row[1], row[2], row[3], Chunk._make(row[4:])
        except sqlite3.Error as exc:
            raise store_error("read", self.db_path, self.root, exc) from exc

    def set_aside_summary(self) -> list[tuple[str, int, str]] | None:
        if not self.has_set_aside:
            return None
        return self._read(
            "SELECT run_id, COUNT(*), MIN(error) FROM set_aside GROUP BY run_id ORDER BY run_id"
        )

    def check_writable(self) -> None:
        """Prove a write transaction and a journal file would work, leaving nothing behind.

        A raw connection, not ``SQLiteStore(root)``: opening that may create or upgrade
        the schema, and doctor must not change the store it examines.
        """
        try:
            conn = sqlite3.connect(self.db_path, timeout=10, isolation_level=None)
        except sqlite3.Error as exc:
            raise store_error("write to", self.db_path, self.root, exc) from exc
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('doctor', 'probe')")
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise store_error("write to", self.db_path, self.root, exc) from exc
        finally:
            conn.close()
        import tempfile  # here: it imports shutil, random, bz2 and lzma

        where = self.journal_root if self.journal_root.is_dir() else self.root
        try:
            fd, name = tempfile.mkstemp(prefix=".doctor-", dir=where)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            raise store_error("create a journal file in", where, self.root, exc) from exc


_RUN_SELECT = ", ".join(RUN_COLUMNS)
_ORDERS = {
    "newest": " ORDER BY created_at DESC",
    "oldest": " ORDER BY created_at",
    "id": " ORDER BY run_id",
}


# Kinds whose values compare as numbers: a filter lr=1 finds lr=1.0, as 1 == 1.0.
_NUMBER_KINDS = ("int", "float", "bool")


def _field_match(kind: str, value: Any) -> tuple[str, list[Any]]:
    """SQL (and its arguments) matching a field of ``kind`` holding ``value``."""
    if kind == "none":
        return "kind='none'", []
    if kind in _NUMBER_KINDS:
        if isinstance(value, float) and math.isnan(value):
            return "kind='float' AND value IS NULL", []  # SQLite keeps a NaN REAL as NULL
        return "kind IN ('int', 'float', 'bool') AND value=?", [value]
    return "kind=? AND value=?", [kind, value]


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching what starts with ``prefix`` (its %, _ and \\ literal)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# -- tracker doctor's checks of the database itself -------------------------------------------


def check_database(root: Path) -> tuple[list[Check], SQLiteStore | None]:
    """The checks of the database itself (it exists, is intact, has a schema this
    tracker reads), and the store opened read-only if they leave anything to check.

    Reads the database read-only and writes nothing to it.
    """
    checks: list[Check] = []
    db_path = root / DB_NAME
    try:
        found_db = db_path.is_file()
        found_root = root.exists()
    except OSError as exc:
        checks.append(Check("store exists", False, f"{root}: {exc}"))
        return checks, None
    if not found_db:
        what = "no directory there" if not found_root else f"no {DB_NAME} in it"
        checks.append(Check("store exists", False, f"{root}: {what}"))
        return checks, None
    checks.append(Check("store exists", True, str(root)))

    try:
        conn, _immutable = open_readonly(db_path)
        try:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone()
            row = has_meta and conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        checks.append(Check("database integrity", False, f"{db_path}: {exc}"))
        return checks, None
    if result != ["ok"]:
        checks.append(Check("database integrity", False, "; ".join(result[:3])))
        return checks, None
    checks.append(Check("database integrity", True, "PRAGMA integrity_check: ok"))
    found = None if not row else row[0]
    older = found is not None and found.isdigit() and 0 < int(found) < SCHEMA_VERSION
    if older:
        # Readable as it is; the first write (a run, `tracker sync`) upgrades it.
        detail = (
            f"{found}, older than this tracker's {SCHEMA_VERSION}: read as it is, upgraded "
            "by the next write (a run, or `tracker sync`)"
        )
    else:
        detail = f"{found} (this tracker understands {SCHEMA_VERSION})"
    checks.append(Check("schema version", found == str(SCHEMA_VERSION) or older, detail))
    if found != str(SCHEMA_VERSION) and not older:
        return checks, None

    try:
        st = SQLiteStore(root, create=False, readonly=True)
    except TrackerError as exc:
        checks.append(Check("database readable", False, str(exc)))
        return checks, None
    return checks, st
