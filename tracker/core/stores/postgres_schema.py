"""The PostgreSQL store's schema: versioned migrations, applied when a store opens.

``MIGRATIONS[i]`` lists the SQL statements that take a database from schema version
``i`` to ``i + 1``; ``SCHEMA_VERSION`` is their count. ``schema_migrations`` holds one
row per version applied. ``migrate`` applies what is missing in one transaction under a
transaction-level advisory lock, so that several server processes starting together
migrate once: the first takes the lock and migrates, the others wait for it, then find
the schema current and do nothing (DDL is transactional in PostgreSQL).

The tables mirror the SQLite store's (``sqlite.py``), with these differences:

- a field's value, which SQLite keeps in one untyped column, is kept in one of three
  typed columns (``ival`` bigint for ints and bools, ``fval`` double precision for
  floats and timestamps, ``tval`` text for the rest); a series' last value likewise in
  ``last_fval`` or ``last_tval``;
- the applied offset's column is ``end_offset`` (OFFSET is an SQL keyword);
- chunk ids are ``chunk_id`` (a bigserial: they rise in commit order within a series,
  since one run's batches are applied one at a time, see ``postgres_apply.py``).
"""

from __future__ import annotations

from typing import Any

import psycopg

# An advisory lock key of tracker's: (namespace, key) pairs, the namespace a constant.
LOCK_NAMESPACE = 0x7472  # "tr"
MIGRATION_LOCK = 1  # (LOCK_NAMESPACE, 1): migrating the schema
RUN_LOCK_NAMESPACE = 0x7473  # (RUN_LOCK_NAMESPACE, hashtext(run_id)): applying a run

TABLES = (
    "meta",
    "runs",
    "tags",
    "fields",
    "series",
    "chunks",
    "set_aside",
    "attempts",
    "applied",
    "tokens",
)

MIGRATIONS: list[tuple[str, ...]] = [
    # 0 -> 1: everything the SQLite store's schema 3 holds.
    (
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)",
        """CREATE TABLE runs(
            run_id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            name TEXT,
            status TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION,
            ended_at DOUBLE PRECISION,
            heartbeat DOUBLE PRECISION,
            host TEXT,
            pid BIGINT,
            parent_id TEXT,
            fork_step BIGINT,
            error TEXT
        )""",
        "CREATE INDEX runs_by_project ON runs(project, created_at)",
        "CREATE INDEX runs_by_created ON runs(created_at)",
        "CREATE INDEX runs_by_parent ON runs(parent_id)",
        """CREATE TABLE tags(
            run_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY(run_id, tag)
        )""",
        "CREATE INDEX tags_by_tag ON tags(tag)",
        """CREATE TABLE fields(
            run_id TEXT NOT NULL,
            path TEXT NOT NULL,
            kind TEXT NOT NULL,
            ival BIGINT,
            fval DOUBLE PRECISION,
            tval TEXT,
            PRIMARY KEY(run_id, path)
        )""",
        "CREATE INDEX fields_by_path ON fields(path)",
        """CREATE TABLE series(
            series_id BIGSERIAL PRIMARY KEY,
            run_id TEXT NOT NULL,
            path TEXT NOT NULL,
            rank INTEGER NOT NULL,
            kind TEXT NOT NULL,
            last_step BIGINT NOT NULL,
            count BIGINT NOT NULL,
            last_fval DOUBLE PRECISION,
            last_tval TEXT,
            UNIQUE(run_id, path, rank)
        )""",
        """CREATE TABLE chunks(
            chunk_id BIGSERIAL PRIMARY KEY,
            series_id BIGINT NOT NULL,
            first_step BIGINT NOT NULL,
            last_step BIGINT NOT NULL,
            n INTEGER NOT NULL,
            steps BYTEA NOT NULL,
            vals BYTEA NOT NULL,
            ts BYTEA NOT NULL,
            crc BIGINT,
            attempt BIGINT
        )""",
        "CREATE INDEX chunks_by_series ON chunks(series_id, first_step)",
        "CREATE INDEX chunks_by_series_id ON chunks(series_id, chunk_id)",
        # Points are compressed already (packed floats); skip TOAST's pglz attempt.
        "ALTER TABLE chunks ALTER COLUMN steps SET STORAGE EXTERNAL",
        "ALTER TABLE chunks ALTER COLUMN vals SET STORAGE EXTERNAL",
        "ALTER TABLE chunks ALTER COLUMN ts SET STORAGE EXTERNAL",
        """CREATE TABLE set_aside(
            run_id TEXT NOT NULL,
            segment TEXT NOT NULL,
            end_offset BIGINT NOT NULL,
            op_index INTEGER NOT NULL,
            error TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY(run_id, segment, end_offset, op_index)
        )""",
        """CREATE TABLE attempts(
            attempt BIGSERIAL PRIMARY KEY,
            run_id TEXT NOT NULL,
            segment TEXT NOT NULL,
            rewind_step BIGINT,
            UNIQUE(run_id, segment)
        )""",
        """CREATE TABLE applied(
            run_id TEXT NOT NULL,
            segment TEXT NOT NULL,
            end_offset BIGINT NOT NULL,
            PRIMARY KEY(run_id, segment)
        )""",
        """CREATE TABLE tokens(
            token_id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            scope TEXT NOT NULL,
            name TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION,
            revoked_at DOUBLE PRECISION,
            secret_hash TEXT NOT NULL
        )""",
        "CREATE INDEX tokens_by_project ON tokens(project, created_at)",
    ),
    # 1 -> 2: a large float chunk's summary per block of steps (downsample.py), which
    # charts read instead of its points; NULL in older rows, which are read as points.
    ("ALTER TABLE chunks ADD COLUMN summary BYTEA",),
]
SCHEMA_VERSION = len(MIGRATIONS)

_CREATE_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations("
    "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
)


def found_version(conn: psycopg.Connection[Any]) -> int | None:
    """The schema version of the database (None: no tracker schema there).

    ``conn`` is a psycopg connection; reads only."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def migrate(conn: psycopg.Connection[Any]) -> tuple[int | None, int]:
    """Bring the schema to ``SCHEMA_VERSION``: (version found, version now).

    ``conn`` is a psycopg connection in autocommit mode. Raises ``NewerSchema`` if the
    database's schema is newer than this tracker knows (nothing is changed then)."""
    found = found_version(conn)
    if found == SCHEMA_VERSION:
        return found, found  # the common case: no lock, no write
    if found is not None and found > SCHEMA_VERSION:
        raise NewerSchema(found)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE, MIGRATION_LOCK))
        conn.execute(_CREATE_MIGRATIONS)
        found = found_version(conn)  # again, under the lock: another may have migrated
        if found is not None and found > SCHEMA_VERSION:
            raise NewerSchema(found)
        for version in range(found or 0, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations(version) VALUES (%s)", (version + 1,))
    return found, SCHEMA_VERSION


class NewerSchema(Exception):
    """The database's schema is newer than this tracker's."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version
