"""The embedded store: one directory holding a SQLite database (WAL mode) and journals.

Layout of a store directory::

    store.db                      runs, tags, fields, series and their chunks
    journal/<run-id>/<seg>.jnl    append-only journal segments, one per writer session
    journal/<run-id>/lock         held (exclusive flock) by the run's live writer; holds host:pid

Series points are stored in chunks: one row holds a run of points of one series (one
rank's values of one path) as three packed arrays, step (int64), value (float64, or
JSON text for str series) and timestamp (float64). Writing one row per series per
batch is what makes a million points a second possible in SQLite; reading a series is
a concatenation of its chunks.

Every write transaction starts with BEGIN IMMEDIATE: a deferred transaction that later
upgrades to a writer can fail at once with "database is locked" when another process
writes, whatever the busy timeout. Readers never block writers (WAL).

Readers open the store read-only (``Store(root, create=False, readonly=True)``): no
schema writes, no switch to WAL mode, so that an archived store on a read-only mount, or
one owned by another user, reads as it is. Every failure of the store surfaces as a
``StoreError`` naming the path and what to do about it, never a bare sqlite3 error.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sqlite3
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

from .errors import RunInUseError, StoreError

SCHEMA_VERSION = 3
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
    ts BLOB NOT NULL,
    crc INTEGER,
    attempt INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_by_series ON chunks(series_id, first_step);
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
"""


# Schema 1 -> 2: chunks carry a CRC-32 of their three blobs (NULL in older rows, which
# are read unchecked), and records that could not be applied are listed in set_aside.
# Schema 2 -> 3: each chunk names the attempt (writer session, one journal segment) that
# wrote it, and an attempt may rewind the run to a step (``resume_from_step``): points of
# earlier attempts past that step are superseded. Chunks of older stores have no attempt
# and count as the first.
_MIGRATIONS = {
    1: ("ALTER TABLE chunks ADD COLUMN crc INTEGER",),
    2: ("ALTER TABLE chunks ADD COLUMN attempt INTEGER",),
}


def chunk_crc(steps: bytes, vals: bytes, ts: bytes) -> int:
    """The checksum stored with each chunk: CRC-32 over its steps, values and timestamps."""
    return zlib.crc32(ts, zlib.crc32(vals, zlib.crc32(steps)))


def chunk_problem(
    kind: str, n: object, steps: object, vals: object, ts: object, crc: object
) -> str | None:
    """What is wrong with one stored chunk, or None if it is sound.

    The sizes are checked first (cheap, and they catch a damaged ``n`` too), then the
    CRC-32 where the row has one (rows written by schema 1 have NULL and are read
    unchecked). A damaged page can even change a value's SQLite type, hence the
    ``object`` annotations.
    """
    if not isinstance(n, int) or n < 0:
        return f"its point count is {n!r}"
    for name, blob in (("steps", steps), ("values", vals), ("timestamps", ts)):
        if not isinstance(blob, bytes):
            return f"its {name} are a {type(blob).__name__}, not bytes"
    assert isinstance(steps, bytes) and isinstance(vals, bytes) and isinstance(ts, bytes)
    want = 8 * n
    if len(steps) != want or len(ts) != want or (kind != "str" and len(vals) != want):
        values = "" if kind == "str" else f", {len(vals)} of values"
        return (
            f"it holds {n} points but {len(steps)} bytes of steps{values} and "
            f"{len(ts)} of timestamps ({want} each expected)"
        )
    if crc is not None:
        found = chunk_crc(steps, vals, ts)
        if found != crc:
            shown = f"{crc:#010x}" if isinstance(crc, int) else repr(crc)
            return f"checksum mismatch (stored {shown}, computed {found:#010x})"
    return None


def decode_str_values(vals: bytes, n: int) -> list[str] | None:
    """The values of a str chunk (a JSON list), or None if they do not decode to n strs."""
    try:
        out = json.loads(vals)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(out, list) or len(out) != n:
        return None
    return out


# Hints for the usual causes, chosen by errno or SQLite's message; the message always
# names the path, so that "attempt to write a readonly database" says which one.
_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)
_PERMISSION_TEXT = ("readonly", "read-only", "permission denied", "unable to open database")


def store_error(action: str, target: Path, root: Path, exc: BaseException) -> StoreError:
    """A StoreError for a failed store operation: what, on which path, why, and the fix.

    ``action`` reads as "cannot <action> <target>", e.g. "write to", "open", "read".
    """
    text = str(exc) or type(exc).__name__
    low = text.lower()
    code = getattr(exc, "errno", None)
    reading = action.startswith("read")
    if code in _PERMISSION or any(t in low for t in _PERMISSION_TEXT):
        if reading:
            fix = f"check that {root} and the files in it are readable by this user"
        else:
            fix = f"check the permissions of {root} or pass store= a writable directory"
    elif code == errno.ENOSPC or "disk is full" in low:
        fix = f"free space on the file system holding {root}"
    elif "locked" in low or "busy" in low:
        fix = "another process has held the store's write lock for minutes; look for a hung one"
    elif "malformed" in low or "not a database" in low or "corrupt" in low:
        fix = f"the database is damaged; `tracker doctor --store {root}` checks it"
    else:
        fix = f"`tracker doctor --store {root}` checks the store"
    return StoreError(f"cannot {action} {target}: {text}; {fix}")


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


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite rolls back by itself on some errors (a full disk): a second ROLLBACK would
    # fail and hide the error that matters.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class Store:
    """A handle on one store directory. Thread-safe: each thread gets its own connection.

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
        self.journal_root = self.root / "journal"
        self.readonly = readonly
        self.immutable = False  # set when a read-only handle had to use immutable=1
        self.schema = SCHEMA_VERSION
        self.has_crc = True
        self.has_set_aside = True
        self.has_attempts = True
        self._writable: Store | None = None
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

    def for_writing(self) -> Store:
        """This store's read-write handle (itself unless read-only), opened on first use.

        Opening it creates or upgrades the schema: only recovery, which writes anyway,
        asks for it from a reader.
        """
        if not self.readonly:
            return self
        if self._writable is None:
            self._writable = Store(self.root, create=False)
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
                "read-only (for reading); use Store(root) to write"
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
        try:
            self.schema = int(row[0]) if row else 1
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

    # -- journal files and writer locks -------------------------------------------------

    def journal_dir(self, run_id: str) -> Path:
        return self.journal_root / run_id

    def segments(self, run_id: str) -> list[Path]:
        directory = self.journal_dir(run_id)
        try:
            if not directory.is_dir():
                return []
            return sorted(directory.glob("*.jnl"))
        except OSError as exc:
            raise store_error("read the journal directory", directory, self.root, exc) from exc

    def hold_writer_lock(self, run_id: str) -> int:
        """Take the run's lock as its one writer; return the fd to release later.

        The lock is an exclusive flock, so it dies with its process: a crashed or killed
        writer never blocks the next one (elastic restarts continue the run), while a
        live one is named in the error. A forked child inherits the fd but never
        releases it (``lifecycle`` detaches children), so the parent keeps its lock.
        """
        directory = self.journal_dir(run_id)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(
                f"cannot create the journal of run {run_id} in {directory}: {exc}; "
                "check that the store directory is writable"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.lock_holder(run_id)
            who = f"process {holder}" if holder else "another live process"
            raise RunInUseError(
                f"run {run_id} is being written by {who} (store {self.root}); two writers "
                "of one run would lose points. Wait for it to finish, or open another run "
                "(a different run_id, or fork_from=(run_id, step))",
                holder,
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock run {run_id} in {directory}: {exc}") from exc
        # Who holds it, for the error a second writer gets: "host:pid".
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()}:{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        return fd

    def lock_holder(self, run_id: str) -> str | None:
        """``host:pid`` of the last process that took the run's writer lock, if recorded."""
        try:
            text = (self.journal_dir(run_id) / "lock").read_text().strip()
        except OSError:
            return None
        return text or None

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
