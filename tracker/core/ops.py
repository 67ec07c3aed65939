"""The operation stream: what a run's calls become on their way to the store.

Every call on a ``Run`` becomes operations: plain tuples whose first element says what
they are. Tuples, because ``Run.log`` builds one in well under a microsecond; of builtin
values once journaled, because they are pickled into the journal and sent between
ranks, and both readers refuse anything else (a journal cannot run code). This module is the one description of every operation and its fields; the rest of
tracker builds them with the constructors below (``Run.log`` excepted: its fast path
builds its tuple inline) and takes them apart by the field order given here;
``batch.py`` makes and reads the column groups of "logs".

Three stages, three sets of operations:

**Queued** by ``Run`` into its writer (``Writer.queue``), on the training thread::

    (step, ts, data)                  a log call: data {path: value}, each value a float,
                                      an int, a numpy scalar or a str; the only op whose
                                      first element is not a str (an int step)
    ("logd", step, ts, data)          a log call holding accelerator values (Deferred)
    ("setd", path, kind, value, ts)   a single value that is a Deferred
    plus every journal operation but "logs" (set, file, tags+, tags-, create, status)

**Journaled** (``batch.columnize`` turns the queued ones into these on the writer
thread; they are what the journal records and what a store applies)::

    ("logs", rank, n_calls, groups)   n_calls log calls of ``rank``, as columns: groups of
                                      calls that share one key set, each group one of
        ("cols", keys, steps, ts, values, order)  float values: steps (int64), ts and
                                      values (float64, rows: calls, columns: keys) as
                                      packed bytes; order (int64 bytes) or None
        ("rows", keys, steps, ts, rows, order)    anything else (str series): lists,
                                      rows[i][j] the value of keys[j] in call i
                                      ``order`` gives each row's position among the
                                      op's calls when it has several groups (None:
                                      the rows are the calls in order)
    ("set", path, kind, value, ts)    a single value; kind and value from
                                      ``values.field_value`` (or "str" for masked text):
                                      value an int, float, bool, str, None (kind
                                      "none") or, for kind "list", the list's JSON text
                                      (a str, so records stay builtin scalars and any
                                      reader can apply them)
    ("file", path, info)              a file reference: info a dict (uri, size, hash, ...)
    ("tags+", [tag, ...])             tags added
    ("tags-", [tag, ...])             tags removed
    ("create", meta)                  first op of every journal segment: meta a dict
                                      (project, name, ts, host, pid, parent_id,
                                      fork_step, rewind_step)
    ("status", status, ts, error)     the run ended: finished, failed or terminated;
                                      error the masked traceback or None

**Shipped** from another rank to rank 0 (``rank_utils.coordinator``): the journal
operations of that rank (its "logs" carry its rank; its set and file paths are under
``ranks/<rank>/``), except that its close travels as::

    ("rank_status", status, ts, error)   rank 0 stores it as ranks/<rank>/status and
                                         ranks/<rank>/traceback

``Writer`` is what a ``Run`` sends its operations to; three classes implement it: the
journal writer (``core.writer.Writer``), a non-writer rank's ``Shipper``
(``rank_utils.coordinator``) and the disabled run's ``NullWriter`` (``core.run``).
"""

from __future__ import annotations

from typing import Any, Protocol

from .tensors import Deferred

# -- tags ---------------------------------------------------------------------------------

LOG_DEFERRED = "logd"
SET_DEFERRED = "setd"
LOGS = "logs"
COLS = "cols"
ROWS = "rows"
SET = "set"
FILE = "file"
TAGS_ADD = "tags+"
TAGS_REMOVE = "tags-"
CREATE = "create"
STATUS = "status"
RANK_STATUS = "rank_status"


# -- constructors ---------------------------------------------------------------------------


def log_call(step: int, ts: float, data: dict[str, Any]) -> tuple[int, float, dict[str, Any]]:
    """A queued log call (``Run.log``'s fast path builds the same tuple inline)."""
    return (step, ts, data)


def log_text_call(step: int, ts: float, data: dict[str, Any]) -> tuple[Any, ...]:
    """A queued log call holding text: its values are never read as numbers (numpy would
    read the text "1" as 1.0), so it is journaled row by row."""
    return (step, ts, data, True)


def log_deferred(step: int, ts: float, data: dict[str, Any]) -> tuple[Any, ...]:
    return (LOG_DEFERRED, step, ts, data)


def set_value(path: str, kind: str, value: Any, ts: float) -> tuple[Any, ...]:
    """A single value; a ``Deferred`` value makes the queued "setd" form."""
    return (SET_DEFERRED if type(value) is Deferred else SET, path, kind, value, ts)


def file_ref(path: str, info: dict[str, Any]) -> tuple[Any, ...]:
    return (FILE, path, info)


def tags_added(tags: list[str]) -> tuple[Any, ...]:
    return (TAGS_ADD, tags)


def tags_removed(tags: list[str]) -> tuple[Any, ...]:
    return (TAGS_REMOVE, tags)


def create(meta: dict[str, Any]) -> tuple[Any, ...]:
    return (CREATE, meta)


def set_status(status: str, ts: float, error: str | None) -> tuple[Any, ...]:
    return (STATUS, status, ts, error)


def rank_status(status: str, ts: float, error: str | None) -> tuple[Any, ...]:
    return (RANK_STATUS, status, ts, error)


def logs(rank: int, n_calls: int, groups: list[Any]) -> tuple[Any, ...]:
    return (LOGS, rank, n_calls, groups)


# -- naming operations -------------------------------------------------------------------------


def describe(op: Any, exc: BaseException) -> str:
    """One line naming an operation that could not be applied, and why."""
    tag = op[0] if isinstance(op, tuple | list) and op else type(op).__name__
    what = str(tag)
    if tag == LOGS and len(op) > 3:
        keys = sorted({k for group in op[3] for k in group[1]})
        what = f"log of {', '.join(map(repr, keys[:5]))}{' ...' if len(keys) > 5 else ''}"
    elif tag in (SET, FILE) and len(op) > 1:
        what = f"{tag} {op[1]!r}"
    return f"{what}: {type(exc).__name__}: {str(exc)[:300]}"


# -- where a run's operations go ------------------------------------------------------------


class OpQueue(Protocol):
    """What ``Run`` appends its operations to (a deque, or a sink that keeps nothing)."""

    def append(self, op: Any, /) -> None: ...

    def __len__(self) -> int: ...


class Writer(Protocol):
    """The writer a ``Run`` is given: takes its operations and makes them durable.

    ``Run`` appends each operation to ``queue`` (or, in sync mode, hands it to
    ``submit_sync``, which returns once it is durable); after each log call it compares
    ``len(queue)`` with ``max_queue`` and calls ``wait_for_room`` when the queue is
    over it (back-pressure). ``series_last`` (each series' highest step queued so far)
    and ``lower_warned`` (series already warned about a lower step) are shared with the
    run, which reads the first and adds to the second.
    """

    max_queue: int
    series_last: dict[str, int]
    lower_warned: set[str]

    @property
    def queue(self) -> OpQueue: ...

    def submit_sync(self, op: Any) -> None: ...

    def wait_for_room(self) -> None: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...
