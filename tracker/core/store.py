"""The embedded store: one directory holding a SQLite database (WAL mode) and journals.

Layout of a store directory::

    store.db                      runs, tags, fields, series and their chunks
    journal/<run-id>/<seg>.jnl    append-only journal segments, one per writer session
    journal/<run-id>/lock         held (shared) by every live writer of the run

Series points are stored in chunks: one row holds a run of points of one series (one
rank's values of one path) as three packed arrays, step (int64), value (float64, or
JSON text for str series) and timestamp (float64). Writing one row per series per
batch is what makes a million points a second possible in SQLite; reading a series is
a concatenation of its chunks.

Every write transaction starts with BEGIN IMMEDIATE: a deferred transaction that later
upgrades to a writer can fail at once with "database is locked" when another process
writes, whatever the busy timeout. Readers never block writers (WAL).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import StoreError

SCHEMA_VERSION = 1
DB_NAME = "store.db"
BUSY_TIMEOUT_S = 60.0

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
    ts BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_series ON chunks(series_id, first_step);
CREATE TABLE IF NOT EXISTS applied(
    run_id TEXT NOT NULL, segment TEXT NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY(run_id, segment)
) WITHOUT ROWID;
"""


def resolve_store_path(store: str | os.PathLike[str] | None) -> Path:
    """Turn a ``store=`` argument (or TRACKER_STORE, or the default) into a directory."""
    if store is None:
        store = os.environ.get("TRACKER_STORE") or ".tracker"
    text = os.fspath(store)
    if text.startswith(("http://", "https://")):
        raise StoreError(
            f"store {text!r} is a tracker server address; this version of tracker "
            "supports the embedded store only (a directory path or file:// URI)"
        )
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise StoreError(f"store {text!r}: unknown scheme; use a directory path or file:// URI")
    return Path(text).expanduser().resolve()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


class Store:
    """A handle on one store directory. Thread-safe: each thread gets its own connection."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        self.root = resolve_store_path(root)
        self.db_path = self.root / DB_NAME
        self.journal_root = self.root / "journal"
        if not self.db_path.exists():
            if not create:
                raise StoreError(f"no tracker store at {self.root} (no {DB_NAME} there)")
            try:
                self.journal_root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the store directory {self.root}: {exc}") from exc
        self._local = threading.local()
        self._init_schema()

    # -- connections and transactions -------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.db_path,
                    timeout=BUSY_TIMEOUT_S,
                    isolation_level=None,
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.db_path}: {exc}") from exc
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            # NORMAL in WAL mode: commits are ordered and crash-safe; the journal, fsynced
            # on its own schedule, is what makes recent operations durable.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE), retried while another writer holds the lock."""
        conn = self.connection()
        deadline = time.monotonic() + 10 * BUSY_TIMEOUT_S
        delay = 0.005
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise StoreError(f"cannot write to {self.db_path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def _init_schema(self) -> None:
        conn = self.connection()
        for attempt in range(200):
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"cannot put {self.db_path} in WAL mode (got {mode})")
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == 199:
                    raise StoreError(f"cannot open {self.db_path}: {exc}") from exc
                time.sleep(0.01)
        with self.write() as c:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            row = c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                c.execute("INSERT INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.root} has schema {row[0]}, newer than this tracker "
                    f"understands ({SCHEMA_VERSION}); upgrade tracker"
                )

    # -- journal files and writer locks -------------------------------------------------

    def journal_dir(self, run_id: str) -> Path:
        return self.journal_root / run_id

    def segments(self, run_id: str) -> list[Path]:
        directory = self.journal_dir(run_id)
        if not directory.is_dir():
            return []
        return sorted(directory.glob("*.jnl"))

    def hold_writer_lock(self, run_id: str) -> int:
        """Take the run's lock as one of its writers; returns the fd to release later."""
        directory = self.journal_dir(run_id)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    @staticmethod
    def release_lock(fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def exclusive_if_idle(self, run_id: str) -> Iterator[bool]:
        """Yield True while holding the run's lock exclusively, or False if a writer lives."""
        lock_path = self.journal_dir(run_id) / "lock"
        if not lock_path.exists():
            yield True
            return
        fd = os.open(lock_path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def writer_alive(self, run_id: str) -> bool:
        with self.exclusive_if_idle(run_id) as idle:
            return not idle
