"""A team server's store: runs in a PostgreSQL database (psycopg 3), journals local.

``PostgresStore("postgresql://user:password@host:port/dbname")`` implements the whole
``Store`` protocol of ``base.py``; ``stores.open_store`` opens one for a
``postgresql://`` (or ``postgres://``) location. The schema is ``postgres_schema.py``'s:
versioned migrations, applied when a store opens for writing (under an advisory lock,
so that several server processes starting together migrate once). The applier is
``postgres_apply.py``'s: one transaction per batch, the batch's journal position stored
in it, one run's batches applied one at a time across processes.

**Connections.** One per thread (psycopg 3 connections are not shared between threads
here; psycopg_pool is not a dependency), opened on first use and again after a fork or
when the server dropped it. Connections run in autocommit mode; writes are explicit
transactions. A store opened ``readonly`` sets ``default_transaction_read_only`` on its
connections, so that the server itself refuses any write.

**Journals.** The database has no directory beside it for journals and writer locks;
``JournalFiles`` keeps them in a local directory of the process that writes, by default
``$XDG_CACHE_HOME/tracker/postgres/<hash>/journal`` (``~/.cache`` without
XDG_CACHE_HOME; ``$TRACKER_PG_JOURNAL_DIR/<hash>/journal`` if that is set), ``<hash>``
a hash of the URL without its password. That directory is ``root``: a server process
journals what it applies there, and recovery or ``tracker sync`` on the same machine
finds what it left. ``location`` is the URL without its password: messages name it.

**Errors.** Every failure is a ``StoreError`` naming the server (never the password)
and what to do; ``pg_error`` builds it from a psycopg error.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import psycopg

from ..downsample import ChunkSummary
from ..errors import StoreError
from .base import RUN_COLUMNS, Check, Chunk, SeriesInfo, TokenRecord
from .journals import JournalFiles
from .postgres_schema import (
    RUN_LOCK_NAMESPACE,
    SCHEMA_VERSION,
    TABLES,
    NewerSchema,
    found_version,
    migrate,
)

if TYPE_CHECKING:
    from .postgres_apply import PostgresApplier

CONNECT_TIMEOUT_S = 10
_TOKEN_COLUMNS = "token_id, project, scope, name, created_at, expires_at, revoked_at, secret_hash"
_RUN_SELECT = ", ".join(RUN_COLUMNS)
_ORDERS = {
    "newest": ' ORDER BY created_at DESC, run_id COLLATE "C"',
    "oldest": ' ORDER BY created_at, run_id COLLATE "C"',
    "id": ' ORDER BY run_id COLLATE "C"',
}


# -- URLs without their passwords ---------------------------------------------------------


def safe_url(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` parameter).

    >>> safe_url("postgresql://me:secret@db:5432/runs?sslmode=require&password=x")
    'postgresql://me@db:5432/runs?sslmode=require'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(an unreadable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _password(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        found = parts.password
        for key, value in parse_qsl(parts.query):
            if key.lower() == "password":
                found = value
    except ValueError:
        return None
    return found or None


def journal_home(url: str) -> Path:
    """The local directory holding the journals of the store at ``url`` (see above)."""
    digest = hashlib.sha256(safe_url(url).encode()).hexdigest()[:16]
    base = os.environ.get("TRACKER_PG_JOURNAL_DIR")
    if base:
        return Path(base).expanduser() / digest
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "tracker" / "postgres" / digest


# -- errors ------------------------------------------------------------------------------


def pg_error(
    action: str, location: str, exc: BaseException, *, secret: str | None = None
) -> StoreError:
    """A StoreError for a failed operation on the server at ``location``: what, why, the fix.

    ``secret`` (the password) is blanked out of the driver's text, should it be there."""
    text = (str(exc) or type(exc).__name__).strip().replace("\n", " ")
    if secret:
        text = text.replace(secret, "***")
    low = text.lower()
    state = getattr(exc, "sqlstate", None) or ""
    if "password" in low or "authentication" in low or state in ("28000", "28P01"):
        fix = "check the user and password (in the URL, PGPASSWORD or ~/.pgpass)"
    elif state == "3D000" or ("database" in low and "does not exist" in low):
        fix = "create the database (createdb) or name an existing one in the URL"
    elif "connection refused" in low or "could not connect" in low or "timeout" in low:
        fix = "check that the PostgreSQL server is running and reachable at that address"
    elif state == "25006" or "read-only" in low:
        fix = "this handle (or the server, a standby) is read-only; write through the primary"
    elif state.startswith("42501") or "permission denied" in low:
        fix = "grant the database user the privileges tracker needs on its tables"
    elif state in ("53100",) or "no space" in low or "disk full" in low:
        fix = "free space on the database server's disk"
    elif state.startswith("57") or isinstance(exc, psycopg.OperationalError):
        fix = "the server or the connection failed; retry, and check the server's log"
    else:
        fix = f"`tracker doctor --store {location}` checks the store"
    return StoreError(f"cannot {action} {location}: {text}; {fix}")


# -- the store ---------------------------------------------------------------------------


class PostgresStore(JournalFiles):
    """A handle on one PostgreSQL database (the ``Store`` protocol of ``base.py``).
    Thread-safe: each thread gets its own connection.

    ``create=False`` refuses a database without tracker's schema (``create=True``
    creates it, and the database itself if the server lets the user); ``readonly=True``
    never writes (its connections are read-only) and does not migrate.
    """

    def __init__(self, url: str, *, create: bool = True, readonly: bool = False) -> None:
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        self.url = url
        self.location = safe_url(url)
        self._secret = _password(url)
        self.root = journal_home(url)
        self.journal_root = self.root / "journal"
        self.readonly = readonly
        self.schema = SCHEMA_VERSION
        self._writable: PostgresStore | None = None
        self._local = threading.local()
        try:
            conn = self.connection()
        except StoreError as exc:
            if create and not readonly and _missing_database(exc.__cause__):
                self._create_database()
                conn = self.connection()
            else:
                raise
        try:
            found = found_version(conn)
            if found is None and (readonly or not create):
                raise StoreError(
                    f"no tracker store at {self.location} (the database has no tracker "
                    "schema); open it once for writing to create it"
                )
            if readonly:
                if found is not None and found > SCHEMA_VERSION:
                    raise NewerSchema(found)
                self.schema = found or SCHEMA_VERSION
            else:
                migrate(conn)
        except NewerSchema as exc:
            raise StoreError(
                f"store {self.location} has schema {exc.version}, newer than this tracker "
                f"understands ({SCHEMA_VERSION}); upgrade tracker"
            ) from None
        except psycopg.Error as exc:
            raise self._error("open", exc) from exc
        if not readonly:
            with contextlib.suppress(OSError):
                self.journal_root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        mode = ", readonly=True" if self.readonly else ""
        return f"PostgresStore({self.location!r}{mode})"

    # -- connections and transactions -------------------------------------------------

    def _error(self, action: str, exc: BaseException) -> StoreError:
        return pg_error(action, self.location, exc, secret=self._secret)

    def _connect(self, *, readonly: bool | None = None) -> psycopg.Connection[Any]:
        ro = self.readonly if readonly is None else readonly
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name="tracker",
            )
            if ro:
                conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            raise self._error("connect to", exc) from exc
        return conn

    def connection(self) -> psycopg.Connection[Any]:
        """This thread's connection (a new one after a fork, or if the server dropped it)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and (self._local.pid != os.getpid() or conn.closed or conn.broken):
            if self._local.pid == os.getpid():
                with contextlib.suppress(Exception):
                    conn.close()
            conn = None  # a forked child never touches its parent's socket
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            if self._local.pid == os.getpid():
                with contextlib.suppress(Exception):
                    conn.close()
            self._local.conn = None
        if self._writable is not None:
            self._writable.close()

    def for_writing(self) -> PostgresStore:
        """This store's read-write handle (itself unless read-only), opened on first use
        (which migrates the schema: only recovery, which writes anyway, asks for it)."""
        if not self.readonly:
            return self
        if self._writable is None:
            self._writable = PostgresStore(self.url, create=False)
            self.schema = SCHEMA_VERSION
        return self._writable

    @property
    def can_write(self) -> bool:
        """Whether a write could succeed: the user may insert into the tables of run data,
        on a primary (not a standby in recovery)."""
        if not self.readonly:
            return True
        try:
            row = (
                self.connection()
                .execute(
                    "SELECT NOT pg_is_in_recovery() AND has_table_privilege('chunks', 'INSERT') "
                    "AND has_table_privilege('runs', 'UPDATE')"
                )
                .fetchone()
            )
        except psycopg.Error:
            return False
        return bool(row and row[0])

    @contextlib.contextmanager
    def write(self) -> Iterator[psycopg.Connection[Any]]:
        """A write transaction; a psycopg error inside it rolls back and becomes a
        StoreError naming the server."""
        if self.readonly:
            raise StoreError(
                f"cannot write to {self.location}: this handle on the store was opened "
                "read-only (for reading); use PostgresStore(url) to write"
            )
        conn = self.connection()
        try:
            with conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise self._error("write to", exc) from exc

    def _create_database(self) -> None:
        """Create the URL's database, connecting to the server's "postgres" database."""
        parts = urlsplit(self.url)
        name = parts.path.lstrip("/")
        if not name:
            return
        admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as c:
                c.execute(
                    psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name))
                )
        except psycopg.errors.DuplicateDatabase:
            pass  # another process made it first
        except psycopg.Error as exc:
            raise self._error("create the database of", exc) from exc

    # -- writing (the applier writes run data; these the rest) ----------------------------

    def applier(self, run_id: str) -> PostgresApplier:
        from .postgres_apply import PostgresApplier  # here: readers never need it

        return PostgresApplier(self, run_id)

    def applied_offsets(self, run_id: str) -> dict[str, int]:
        rows = self._read("SELECT segment, end_offset FROM applied WHERE run_id=%s", (run_id,))
        return {segment: int(offset) for segment, offset in rows}

    def heartbeat(self, run_id: str, ts: float) -> None:
        with self.write() as conn:
            conn.execute("UPDATE runs SET heartbeat=%s WHERE run_id=%s", (ts, run_id))

    def mark_crashed(self, run_id: str, now: float) -> None:
        with self.write() as conn:
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (RUN_LOCK_NAMESPACE, run_id)
            )  # after any batch of the run being applied: its points count as seen
            row = conn.execute(
                "SELECT heartbeat FROM runs WHERE run_id=%s FOR UPDATE", (run_id,)
            ).fetchone()
            # As the SQLite store: the last point's time is when the run was last seen too.
            seen = [t for t in (row[0] if row else None, _last_point_time(conn, run_id)) if t]
            conn.execute(
                "UPDATE runs SET status='crashed', ended_at=%s "
                "WHERE run_id=%s AND status='running'",
                (max(seen) if seen else now, run_id),
            )

    def delete_runs(self, run_ids: list[str]) -> None:
        if not run_ids:
            return
        ids = sorted(set(run_ids))
        with self.write() as c:
            # The runs' applier locks first, in one order: a batch being applied to one
            # of them finishes before, and two deletions cannot deadlock.
            c.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(id)) FROM unnest(%s::text[]) AS id",
                (RUN_LOCK_NAMESPACE, ids),
            )
            c.execute(
                "DELETE FROM chunks WHERE series_id IN "
                "(SELECT series_id FROM series WHERE run_id = ANY(%s))",
                (ids,),
            )
            for table in ("series", "fields", "tags", "applied", "attempts", "set_aside", "runs"):
                c.execute(f"DELETE FROM {table} WHERE run_id = ANY(%s)", (ids,))

    # -- team server tokens --------------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> None:
        try:
            with self.write() as conn:
                conn.execute(
                    f"INSERT INTO tokens({_TOKEN_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                    tuple(token),
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise StoreError(f"a token with id {token.token_id!r} exists already") from None
            raise

    def token(self, token_id: str) -> TokenRecord | None:
        rows = self._read(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_id=%s", (token_id,))
        return TokenRecord(*rows[0]) if rows else None

    def tokens(self, project: str | None = None) -> list[TokenRecord]:
        sql = f"SELECT {_TOKEN_COLUMNS} FROM tokens"
        args: tuple[Any, ...] = ()
        if project is not None:
            sql, args = sql + " WHERE project=%s", (project,)
        rows = self._read(sql + " ORDER BY created_at, token_id", args)
        return [TokenRecord(*row) for row in rows]

    def revoke_token(self, token_id: str, now: float) -> bool:
        with self.write() as conn:
            cur = conn.execute(
                "UPDATE tokens SET revoked_at=COALESCE(revoked_at, %s) WHERE token_id=%s",
                (now, token_id),
            )
            return cur.rowcount > 0

    # -- space -----------------------------------------------------------------------------

    def reclaim_space(self) -> int:
        """VACUUM (plain) tracker's tables: the space of deleted rows becomes reusable
        by new ones at once, and empty pages at the end of a table go back to the file
        system; return the bytes the tables shrank by. Plain VACUUM runs beside live
        writers; giving back every free page takes ``VACUUM FULL``, which locks each
        table against writes while it rewrites it: the database administrator's call."""
        if self.readonly:
            return self.for_writing().reclaim_space()
        before = self.disk_bytes()
        conn = self.connection()
        try:
            conn.execute("VACUUM (ANALYZE) " + ", ".join(TABLES))
        except psycopg.Error as exc:
            raise self._error("compact", exc) from exc
        return max(0, before - self.disk_bytes())

    def reclaimable_bytes(self) -> int:
        """An estimate: each table's size times its share of dead rows (from the server's
        statistics, which lag commits by up to a second or so)."""
        rows = self._read(
            "SELECT COALESCE(SUM(pg_total_relation_size(relid) * n_dead_tup::float8 "
            "/ GREATEST(n_live_tup + n_dead_tup, 1)), 0) FROM pg_stat_user_tables "
            "WHERE schemaname = current_schema() AND relname = ANY(%s)",
            (list(TABLES),),
        )
        return int(rows[0][0]) if rows else 0

    def disk_bytes(self) -> int:
        """Bytes tracker's tables take on the server (their indexes and TOAST included)."""
        rows = self._read(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace "
            "AND c.relname = ANY(%s)",
            (list(TABLES),),
        )
        return int(rows[0][0]) if rows else 0

    # -- reading -----------------------------------------------------------------------------

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        conn = self.connection()
        try:
            return conn.execute(sql, tuple(args)).fetchall()
        except psycopg.OperationalError as exc:
            if not conn.broken:
                raise self._error("read", exc) from exc
            # A dead connection shows only when a statement fails on it (the server was
            # restarted): a read is safe to send again, once, on a new connection.
            try:
                return self.connection().execute(sql, tuple(args)).fetchall()
            except psycopg.Error as again:
                raise self._error("read", again) from again
        except psycopg.Error as exc:
            raise self._error("read", exc) from exc

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._read(f"SELECT {_RUN_SELECT} FROM runs WHERE run_id=%s", (run_id,))
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
            where.append("project=%s")
            args.append(project)
        for tag in tags:
            where.append("run_id IN (SELECT run_id FROM tags WHERE tag=%s)")
            args.append(tag)
        statuses = list(statuses)
        if statuses:
            where.append("status = ANY(%s)")
            args.append(statuses)
        for path, wanted in (config or {}).items():
            matches = [_field_match(kind, value) for kind, value in wanted]
            where.append(
                "run_id IN (SELECT run_id FROM fields WHERE path=%s AND "
                f"({' OR '.join(sql for sql, _ in matches) or 'false'}))"
            )
            args.append(path)
            for _, values in matches:
                args.extend(values)
        if created_before is not None:
            where.append("created_at < %s")
            args.append(created_before)
        if id_prefix is not None:
            # Case-insensitive for ASCII letters only, as SQLite's LIKE.
            where.append("lower(run_id COLLATE \"C\") LIKE %s ESCAPE '\\'")
            args.append(_like_prefix(_ascii_lower(id_prefix)))
        if parent_id is not None:
            where.append("parent_id=%s")
            args.append(parent_id)
        sql = f"SELECT {_RUN_SELECT} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += _ORDERS[order]
        if limit is not None:
            sql += " LIMIT %s"
            args.append(int(limit))
        return [dict(zip(RUN_COLUMNS, row, strict=True)) for row in self._read(sql, args)]

    def tags(self, run_id: str) -> list[str]:
        rows = self._read(
            'SELECT tag FROM tags WHERE run_id=%s ORDER BY tag COLLATE "C"', (run_id,)
        )
        return [t for (t,) in rows]

    def fields(self, run_id: str, prefix: str | None = None) -> list[tuple[str, str, Any]]:
        sql = "SELECT path, kind, ival, fval, tval FROM fields WHERE run_id=%s"
        args: list[Any] = [run_id]
        if prefix is not None:
            sql += " AND path LIKE %s ESCAPE '\\'"
            args.append(_like_prefix(prefix))
        rows = self._read(sql + ' ORDER BY path COLLATE "C"', args)
        return [(path, kind, _field_value(i, f, t)) for path, kind, i, f, t in rows]

    def field(self, run_id: str, path: str) -> tuple[str, Any] | None:
        rows = self._read(
            "SELECT kind, ival, fval, tval FROM fields WHERE run_id=%s AND path=%s",
            (run_id, path),
        )
        if not rows:
            return None
        kind, i, f, t = rows[0]
        return kind, _field_value(i, f, t)

    def series_list(self, run_id: str, rank: int | None = None) -> list[SeriesInfo]:
        sql = (
            "SELECT path, rank, kind, count, last_step, last_fval, last_tval FROM series "
            "WHERE run_id=%s"
        )
        args: list[Any] = [run_id]
        if rank is not None:
            sql += " AND rank=%s"
            args.append(rank)
        rows = self._read(sql + ' ORDER BY path COLLATE "C", rank', args)
        return [
            SeriesInfo(
                path, rank_, kind, int(count), int(last), ftext if ftext is not None else fval
            )
            for path, rank_, kind, count, last, fval, ftext in rows
        ]

    def ranks(self, run_id: str) -> list[int]:
        sql = "SELECT DISTINCT rank FROM series WHERE run_id=%s ORDER BY rank"
        return [r for (r,) in self._read(sql, (run_id,))]

    def attempts(self, run_id: str) -> list[tuple[Any, int | None]]:
        sql = (
            'SELECT attempt, rewind_step FROM attempts WHERE run_id=%s ORDER BY segment COLLATE "C"'
        )
        return [(a, r) for a, r in self._read(sql, (run_id,))]

    def series_chunks(
        self, run_id: str, path: str, rank: int, max_first_step: int | None = None
    ) -> tuple[str, list[Chunk]] | None:
        rows = self._read(
            "SELECT series_id, kind FROM series WHERE run_id=%s AND path=%s AND rank=%s",
            (run_id, path, rank),
        )
        if not rows:
            return None
        sid, kind = rows[0]
        select = "SELECT chunk_id, n, steps, vals, ts, crc, attempt FROM chunks WHERE series_id=%s"
        if max_first_step is None:
            chunks = self._read(select + " ORDER BY chunk_id", (sid,))
        else:
            chunks = self._read(
                select + " AND first_step<=%s ORDER BY chunk_id", (sid, max_first_step)
            )
        return kind, [Chunk._make(row) for row in chunks]

    def chunk_summaries(
        self, run_id: str, path: str, rank: int, max_first_step: int | None = None
    ) -> tuple[str, list[ChunkSummary]] | None:
        """(kind, every chunk of the series as (chunk id, first step, last step, n,
        attempt, summary)), by chunk id; summary is None for a chunk without one (read
        its points with ``chunks_by_id``). None: no such series."""
        rows = self._read(
            "SELECT series_id, kind FROM series WHERE run_id=%s AND path=%s AND rank=%s",
            (run_id, path, rank),
        )
        if not rows:
            return None
        sid, kind = rows[0]
        # The blobs are stored out of line (STORAGE EXTERNAL): this reads none of them.
        summary = "summary" if self.schema >= 2 else "NULL"
        select = (
            f"SELECT chunk_id, first_step, last_step, n, attempt, {summary} FROM chunks "
            "WHERE series_id=%s"
        )
        if max_first_step is None:
            found = self._read(select + " ORDER BY chunk_id", (sid,))
        else:
            found = self._read(
                select + " AND first_step<=%s ORDER BY chunk_id", (sid, max_first_step)
            )
        return kind, [
            (c, f, last, n, a, None if b is None else bytes(b)) for c, f, last, n, a, b in found
        ]

    def chunks_by_id(self, chunk_ids: list[Any]) -> list[Chunk]:
        """The chunks of these ids (as ``series_chunks`` gives them), by id."""
        rows = self._read(
            "SELECT chunk_id, n, steps, vals, ts, crc, attempt FROM chunks "
            "WHERE chunk_id = ANY(%s) ORDER BY chunk_id",
            (list(chunk_ids),),
        )
        return [Chunk._make(row) for row in rows]

    # -- maintenance ---------------------------------------------------------------------------

    def all_chunks(self) -> Iterator[tuple[str, str, int, str, Chunk]]:
        """Streamed through a server-side cursor on a connection of its own (the caller
        may read through this thread's connection meanwhile)."""
        sql = (
            "SELECT s.run_id, s.path, s.rank, s.kind, c.chunk_id, c.n, c.steps, c.vals, c.ts, "
            "c.crc, c.attempt FROM chunks c JOIN series s USING(series_id) "
            'ORDER BY s.run_id COLLATE "C", s.path COLLATE "C", s.rank, c.chunk_id'
        )
        conn = self._connect(readonly=True)
        try:
            with conn.transaction(), conn.cursor(name="tracker_all_chunks") as cur:
                cur.itersize = 500
                cur.execute(sql)
                for row in cur:
                    yield row[0], row[1], row[2], row[3], Chunk._make(row[4:])
        except psycopg.Error as exc:
            raise self._error("read", exc) from exc
        finally:
            conn.close()

    def set_aside_summary(self) -> list[tuple[str, int, str]] | None:
        return [
            (rid, int(n), err)
            for rid, n, err in self._read(
                "SELECT run_id, COUNT(*), MIN(error) FROM set_aside GROUP BY run_id "
                'ORDER BY run_id COLLATE "C"'
            )
        ]

    def check_writable(self) -> None:
        """Prove a write transaction and a journal file would work, leaving nothing behind
        (the probe write is rolled back; a connection of its own, not read-only)."""
        conn = self._connect(readonly=False)
        try:
            conn.autocommit = False
            conn.execute(
                "INSERT INTO meta(key, value) VALUES('doctor', 'probe') "
                "ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value"
            )
            conn.rollback()
        except psycopg.Error as exc:
            raise self._error("write to", exc) from exc
        finally:
            conn.close()
        import tempfile  # here: it imports shutil, random, bz2 and lzma

        where = self.journal_root
        try:
            where.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".doctor-", dir=where)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            raise StoreError(
                f"cannot create a journal file in {where} (the local journal directory of "
                f"{self.location}): {exc}; check its permissions or set TRACKER_PG_JOURNAL_DIR"
            ) from exc


def _missing_database(exc: BaseException | None) -> bool:
    return exc is not None and (
        getattr(exc, "sqlstate", None) == "3D000"
        or ("database" in str(exc) and "does not exist" in str(exc))
    )


def _last_point_time(conn: psycopg.Connection[Any], run_id: str) -> float | None:
    """The latest timestamp among the last chunks of a run's series (None: no points)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (c.series_id) c.ts FROM chunks c JOIN series s USING(series_id) "
        "WHERE s.run_id=%s ORDER BY c.series_id, c.chunk_id DESC",
        (run_id,),
    ).fetchall()
    last = None
    for (blob,) in rows:
        ts = np.frombuffer(blob, dtype=np.float64)
        if len(ts) and not np.isnan(ts).all():
            top = float(np.nanmax(ts))
            if last is None or top > last:
                last = top
    return last


# -- fields: one value, three typed columns ----------------------------------------------


def field_columns(value: Any) -> tuple[int | None, float | None, str | None]:
    """(ival, fval, tval) holding ``value``: ints and bools, floats, text (or None)."""
    t = type(value)
    if value is None:
        return None, None, None
    if t is bool:
        return int(value), None, None
    if t is int or isinstance(value, int | np.integer):
        return int(value), None, None
    if t is float or isinstance(value, float | np.floating):
        return None, float(value), None
    if t is str:
        return None, None, value
    if isinstance(value, bytes):
        return None, None, value.decode("utf-8", "replace")
    raise TypeError(f"a field value of type {t.__name__} cannot be stored")


def _field_value(ival: Any, fval: Any, tval: Any) -> Any:
    if ival is not None:
        return ival
    if fval is not None:
        return fval
    return tval


# Kinds whose values compare as numbers: a filter lr=1 finds lr=1.0, as 1 == 1.0.
_NUMBER_KINDS = ("int", "float", "bool")


def _field_match(kind: str, value: Any) -> tuple[str, list[Any]]:
    """SQL (and its arguments) matching a field of ``kind`` holding ``value``."""
    if kind == "none":
        return "kind='none'", []
    if kind in _NUMBER_KINDS:
        if isinstance(value, float) and math.isnan(value):
            return (
                "(kind='float' AND (fval = 'NaN'::float8 OR (fval IS NULL AND ival IS NULL)))",
                [],
            )
        number = int(value) if isinstance(value, bool) else value
        if isinstance(number, float):
            return "(kind IN ('int', 'float', 'bool') AND (fval = %s OR ival::float8 = %s))", [
                number,
                number,
            ]
        return "(kind IN ('int', 'float', 'bool') AND (ival = %s OR fval = %s::float8))", [
            number,
            number,
        ]
    ival, fval, tval = field_columns(value)
    if ival is not None:
        return "(kind=%s AND ival=%s)", [kind, ival]
    if fval is not None:
        return "(kind=%s AND fval=%s)", [kind, fval]
    if tval is not None:
        return "(kind=%s AND tval=%s)", [kind, tval]
    return "(kind=%s AND ival IS NULL AND fval IS NULL AND tval IS NULL)", [kind]


def _ascii_lower(text: str) -> str:
    return "".join(c.lower() if c.isascii() else c for c in text)


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching what starts with ``prefix`` (its %, _ and \\ literal)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# -- tracker doctor's checks of the database itself -------------------------------------------


def check_postgres(url: str) -> tuple[list[Check], PostgresStore | None]:
    """The checks of the database itself (the server answers, the database has a schema
    this tracker reads), and the store opened read-only if they leave anything to check.

    Writes nothing (doctor's write probe, ``check_writable``, is rolled back).
    ``stores.diagnose`` calls it for a ``postgresql://`` location."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    location, secret = safe_url(url), _password(url)
    checks: list[Check] = []
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        checks.append(
            Check(
                "server reachable", False, str(pg_error("connect to", location, exc, secret=secret))
            )
        )
        return checks, None
    try:
        conn.execute("SET default_transaction_read_only = on")
        version = conn.execute("SHOW server_version").fetchone()
        recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        checks.append(
            Check(
                "server reachable",
                True,
                f"{location}: PostgreSQL {version[0] if version else '?'}"
                + (" (a standby, read-only)" if recovery and recovery[0] else ""),
            )
        )
        found = found_version(conn)
    except psycopg.Error as exc:
        checks.append(
            Check("schema version", False, str(pg_error("read", location, exc, secret=secret)))
        )
        return checks, None
    finally:
        conn.close()
    if found is None:
        checks.append(
            Check("schema version", False, f"{location}: no tracker schema in this database")
        )
        return checks, None
    ok = found <= SCHEMA_VERSION
    older = found < SCHEMA_VERSION
    detail = f"{found} (this tracker understands {SCHEMA_VERSION})"
    if older:
        detail = (
            f"{found}, older than this tracker's {SCHEMA_VERSION}: read as it is, upgraded "
            "when a writer (a server process, `tracker sync`) opens it"
        )
    checks.append(Check("schema version", ok, detail))
    if not ok:
        return checks, None
    try:
        st = PostgresStore(url, create=False, readonly=True)
    except StoreError as exc:
        checks.append(Check("database readable", False, str(exc)))
        return checks, None
    return checks, st
