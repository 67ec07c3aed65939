"""What a store is: the ``Store`` protocol every store implements, and the chunk format.

tracker keeps runs in a *store*. Everything above it (the writer, recovery, the read
API, maintenance, the CLI) talks to a store through this protocol only, so a new kind
of store (a server's database, say) is one class implementing it; ``stores.sqlite``
is the embedded one, a directory holding a SQLite database, and the reference for
every method below.

**What a store holds.** Runs (one row each: ``RUN_COLUMNS``), their tags, their
single values (*fields*: path, kind, value), their series (one per (path, rank): kind
"float" or "str", point count, highest step, last value) and each series' points in
*chunks* (see below); per run, its *attempts* (one per journal segment, that is per
writer session, in the order they ran, each with the step a ``resume_from_step``
rewound the run to, or None), how far into each journal segment it has applied
(*applied offsets*), and the records it had to set aside.

**How data gets in.** Only through ``applier(run_id).apply(batch, position)``: a batch
of journal operations (``core/ops.py`` describes them; ``core/batch.py`` reads the
column groups of "logs") together with its journal position ``(segment name, end
offset)``. The batch and its position are stored in one transaction, all or nothing,
and a batch whose position is at or before the segment's applied offset is skipped:
that is what makes replaying a journal twice store every point once. An operation the
store cannot hold (its data, not the medium, is at fault) is *set aside*, recorded with
its error, and the rest of the batch applied; a failure of the medium (disk full, I/O,
a lock) raises, and nothing of the batch is applied. Every point is stored, repeats of
a step and steps lower than a series' last included; each chunk names the attempt
(segment) that wrote it. A "create" op (re)opens the run as "running"; a fork child's
series continue after its parent's fork step. ``applying.BatchApplier`` does all of
this but the storage: a store's applier subclasses it and implements its hooks, a
dozen small reads and writes. The other writes are the writer's ``heartbeat``,
recovery's ``mark_crashed`` and gc's ``delete_runs``.

**Chunks.** A chunk holds a run of points of one series as three packed arrays: steps
(int64), values (float64 for float series, a JSON list of str for str series) and
timestamps (float64), in numpy's native (little-endian) layout, with ``chunk_crc``
over the three. Readers check every chunk with ``chunk_problem``. Chunks come back as ``Chunk``
rows; the reader orders them by (attempt, chunk id), so chunk ids must rise in write
order within a series.

**Journals and writer locks** live in the store's directory on the local file system,
``journal/<run-id>/<segment>.jnl`` beside a ``lock`` file: ``stores.journals.
JournalFiles`` implements that part of the protocol for any store that has a directory.

**Errors.** Every failure is a ``StoreError`` (``core.errors``) naming what could not
be done, on what, and what to do about it; ``store_error`` builds one from an OSError
or a driver's error. A store opened ``readonly`` never writes (``for_writing`` gives
the writable handle recovery uses, ``can_write`` says whether it could).

To add a store: implement ``Store``, its applier (a ``BatchApplier`` subclass), inherit
``JournalFiles`` for the journal part, give ``tracker doctor`` its checks of the store itself (a function like
``stores.sqlite.check_database``), and let ``stores.open_store`` and ``stores.diagnose``
choose it by the location (``resolve_store_path`` refuses what no store handles yet).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..errors import StoreError

# The columns of a run's row, as ``Store.run`` and ``Store.runs`` return them.
RUN_COLUMNS = (
    "run_id",
    "project",
    "name",
    "status",
    "created_at",
    "updated_at",
    "ended_at",
    "heartbeat",
    "host",
    "pid",
    "parent_id",
    "fork_step",
    "error",
)
# Orders of ``Store.runs``: by creation time, newest or oldest first, or by run id.
RUN_ORDERS = ("newest", "oldest", "id")


class SeriesInfo(NamedTuple):
    """One series of a run, without its points."""

    path: str
    rank: int
    kind: str  # "float" or "str"
    points: int
    last_step: int
    last_value: Any


class TokenRecord(NamedTuple):
    """An API token of the team server, as a store keeps it: never the secret itself,
    only ``secret_hash`` (SHA-256 hex of the secret part)."""

    token_id: str
    project: str
    scope: str  # "read" or "write" (a write token reads its project too)
    name: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    secret_hash: str


class Chunk(NamedTuple):
    """One stored chunk of a series (see the module docstring for the format).

    ``crc`` is None where the store predates checksums; ``attempt`` names the attempt
    that wrote it (None where the store predates attempts: the first).
    """

    chunk_id: int
    n: int
    steps: bytes
    vals: bytes
    ts: bytes
    crc: int | None
    attempt: Any


@dataclass(frozen=True)
class Check:
    """One line of ``tracker doctor``: what was checked, whether it passed, and why.

    >>> Check("schema version", True, "1 (this tracker understands 1)").ok
    True
    """

    name: str
    ok: bool
    detail: str


class Applier(Protocol):
    """Applies the journal records of one run (``Store.applier``); keeps what it needs
    between batches (series ids, applied offsets) and ``set_aside``, the count of
    operations it set aside."""

    set_aside: int

    def applied(self, position: tuple[str, int]) -> bool:
        """Whether the record ending at ``position`` (segment, end offset) is stored."""
        ...

    def apply(self, batch: list[Any], position: tuple[str, int] | None = None) -> int:
        """Store the journal ops of ``batch`` and ``position`` in one transaction; return
        how many ops were set aside. Raises (nothing applied) when the store fails."""
        ...


class Store(Protocol):
    """A store of runs. See the module docstring for what it holds and promises."""

    root: Path  # the store's directory: named in messages, holds the journals
    journal_root: Path  # root / "journal"
    readonly: bool
    location: str  # what holds the data (a file, an address), for messages

    # -- handles -------------------------------------------------------------------------

    def close(self) -> None:
        """Release this thread's connection (and the writable handle's)."""
        ...

    def for_writing(self) -> Store:
        """The read-write handle on this store (itself unless opened read-only)."""
        ...

    @property
    def can_write(self) -> bool:
        """Whether a write could succeed (readers skip recovery where it cannot)."""
        ...

    # -- writing ---------------------------------------------------------------------------

    def applier(self, run_id: str) -> Applier:
        """The applier of ``run_id``'s journal records (the one way run data gets in)."""
        ...

    def applied_offsets(self, run_id: str) -> dict[str, int]:
        """Segment name -> end offset of the last record applied from it."""
        ...

    def heartbeat(self, run_id: str, ts: float) -> None:
        """Record that the run's writer is alive at ``ts``."""
        ...

    def mark_crashed(self, run_id: str, now: float) -> None:
        """Record a run still "running" as "crashed", ended at its last heartbeat (or
        ``now``); a run with any other status is left as it is."""
        ...

    def delete_runs(self, run_ids: list[str]) -> None:
        """Delete the runs and everything stored of them, in one transaction (their
        journals are the caller's: ``JournalFiles``)."""
        ...

    def reclaim_space(self) -> int:
        """Give the space that deleted runs held back to the file system; return the
        bytes freed. Raises ``StoreError`` if it cannot (the deletion itself stands)."""
        ...

    def reclaimable_bytes(self) -> int:
        """Bytes of the database that deleted data left free, which ``reclaim_space``
        would give back to the file system."""
        ...

    def disk_bytes(self) -> int:
        """How many bytes the store's database files take on disk (journals aside)."""
        ...

    # -- team server tokens ------------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> None:
        """Store a new API token (its ``token_id`` is new; StoreError if not)."""
        ...

    def token(self, token_id: str) -> TokenRecord | None:
        """The token with this id, revoked or expired ones included; None if unknown."""
        ...

    def tokens(self, project: str | None = None) -> list[TokenRecord]:
        """Every token (of ``project``), oldest first, revoked and expired ones included."""
        ...

    def revoke_token(self, token_id: str, now: float) -> bool:
        """Mark the token revoked at ``now``; False if there is no such token."""
        ...

    # -- reading -----------------------------------------------------------------------------

    def run(self, run_id: str) -> dict[str, Any] | None:
        """The run's row (keys: ``RUN_COLUMNS``), or None if the store has no such run."""
        ...

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
        """Rows of the runs matching every filter given: of ``project``, having every tag
        in ``tags``, in one of ``statuses``, matching ``config``, created before
        ``created_before``, whose id starts with ``id_prefix`` (ASCII letters in either
        case), forked from ``parent_id``; ordered by ``order`` (one of ``RUN_ORDERS``),
        at most ``limit``.

        ``config`` maps a field path to the ``(kind, value)`` pairs it may hold, as
        ``values.field_value`` gives them (``values.config_filter`` makes them): a run
        matches when each path holds one of its pairs. Kinds int, float and bool compare
        as numbers (1 matches 1.0), a float NaN matches a NaN, kind "none" any None."""
        ...

    def tags(self, run_id: str) -> list[str]:
        """The run's tags, sorted."""
        ...

    def fields(self, run_id: str, prefix: str | None = None) -> list[tuple[str, str, Any]]:
        """(path, kind, value) of every single value of the run (whose path starts with
        ``prefix``), sorted by path. The value is as the "set" op carried it (a list,
        kind "list", as its JSON text; kind "none" holds None), but for a file
        reference (kind "file": its info as JSON text), a bool (may come back as 0/1)
        and a float NaN (may come back as None): ``values.decode_field`` turns each
        into what was assigned. A store holds any kind it is given, known or not."""
        ...

    def field(self, run_id: str, path: str) -> tuple[str, Any] | None:
        """(kind, value) of one single value, as ``fields`` gives it, or None."""
        ...

    def series_list(self, run_id: str, rank: int | None = None) -> list[SeriesInfo]:
        """The run's series (of one rank, if given), sorted by path, then rank."""
        ...

    def ranks(self, run_id: str) -> list[int]:
        """The ranks that have series in the run, sorted."""
        ...

    def attempts(self, run_id: str) -> list[tuple[Any, int | None]]:
        """(attempt, rewind step or None) of every attempt of the run, in the order they
        ran (empty for a store that predates attempts)."""
        ...

    def series_chunks(
        self, run_id: str, path: str, rank: int, max_first_step: int | None = None
    ) -> tuple[str, list[Chunk]] | None:
        """(kind, chunks) of one series, or None if the run has no such series; with
        ``max_first_step`` only the chunks whose smallest step is at most that."""
        ...

    # -- maintenance (tracker doctor, gc, sync) ------------------------------------------------

    def all_chunks(self) -> Iterator[tuple[str, str, int, str, Chunk]]:
        """(run id, path, rank, kind, chunk) of every chunk, by run, path, rank, chunk id."""
        ...

    def set_aside_summary(self) -> list[tuple[str, int, str]] | None:
        """(run id, records set aside, one of their errors) per run that has any; None
        for a store that predates set-aside records."""
        ...

    def check_writable(self) -> None:
        """Prove that a write would work, changing nothing; raise ``StoreError`` if not."""
        ...

    # -- journals and writer locks (stores.journals.JournalFiles) ----------------------------

    def journal_dir(self, run_id: str) -> Path: ...

    def segments(self, run_id: str) -> list[Path]: ...

    def journal_runs(self) -> list[str]: ...

    def hold_writer_lock(self, run_id: str) -> int: ...

    def release_lock(self, fd: int) -> None: ...

    def lock_holder(self, run_id: str) -> str | None: ...

    def exclusive_if_idle(self, run_id: str) -> contextlib.AbstractContextManager[bool]: ...

    def writer_alive(self, run_id: str) -> bool: ...


# -- the chunk format --------------------------------------------------------------------


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


# -- errors ------------------------------------------------------------------------------

# Hints for the usual causes, chosen by errno or the driver's message; the message always
# names the path, so that "attempt to write a readonly database" says which one.
_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)
_PERMISSION_TEXT = ("readonly", "read-only", "permission denied", "unable to open database")


def store_error(action: str, target: Path | str, root: Path, exc: BaseException) -> StoreError:
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


# -- locations ---------------------------------------------------------------------------


def resolve_store_path(store: str | os.PathLike[str] | None) -> Path:
    """Turn a ``store=`` argument (or TRACKER_STORE, or the default) into a directory."""
    if store is None:
        store = os.environ.get("TRACKER_STORE") or ".tracker"
    text = os.fspath(store)
    if text.startswith(("http://", "https://")):
        # A team server: not a directory, but an address that reads (str, os.fspath) as
        # its URL, so that messages name it and opening it again reaches the same server.
        from .http import server_address

        return server_address(text)
    if text.startswith(("postgresql://", "postgres://")):
        # A database: like a server's address, it reads as its URL (password and all, so
        # that opening it again works; messages use the store's ``location``).
        from .http import ServerAddress

        return ServerAddress(text)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise StoreError(f"store {text!r}: unknown scheme; use a directory path or file:// URI")
    return Path(text).expanduser().resolve()
