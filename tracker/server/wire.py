"""What travels between client and server: request bodies, their limits and checks, and
the binary framing of chunks.

A batch to apply is a zlib-compressed pickle of journal operations (``core/ops.py``)
made only of builtin values, decoded with the journal's unpickler, which refuses every
class (``journal.decode``): a request cannot run code. Both sizes, compressed and
decompressed, are bounded (``MAX_BODY_BYTES``: a small body that inflates to gigabytes
is refused part way). Then every operation is checked as strictly as the client
checks what it is given: its structure, paths, kinds and values, int64 ranges, the
sizes of packed columns. A batch that fails is refused whole (HTTP 400), naming what
is wrong; nothing of it is applied.

Chunks travel as their stored bytes: ``u32 LE length | JSON head | blobs``, where the
head lists each chunk's (id, n, crc, attempt, and the lengths of its steps, values and
timestamps) and the blobs follow in that order. The client checks each chunk's size
and CRC-32 exactly as it checks one read from a local store.
"""

from __future__ import annotations

import contextvars
import json
import math
import re
import struct
import zlib
from typing import Any

from ..core import ops
from ..core.journal import decode
from ..core.paths import check_path
from ..core.stores.base import Chunk
from ..core.stores.http import MAX_BODY_BYTES
from ..core.values import INT_MAX, INT_MIN, MAX_LIST_TEXT, check_text

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SEGMENT = re.compile(r"^\d{20}-\d{1,10}\.jnl$")
STATUSES = ("running", "finished", "failed", "terminated", "crashed")
FIELD_KINDS = ("int", "float", "bool", "str", "datetime", "none", "list")
_CREATE_KEYS = {
    "project",
    "name",
    "ts",
    "host",
    "pid",
    "parent_id",
    "fork_step",
    "rewind_step",
}
# One str value or traceback: what the client takes (the body limit is the bound).
MAX_TEXT = MAX_BODY_BYTES
MAX_CALLS = 2**31


class BadRequest(ValueError):
    """What the client sent is malformed (HTTP 400); the message says what and where."""


class TooLarge(ValueError):
    """A body over ``MAX_BODY_BYTES``, compressed or not (HTTP 413)."""


# -- bodies ----------------------------------------------------------------------------------


def inflate(body: bytes, limit: int = MAX_BODY_BYTES) -> bytes:
    """Decompress a zlib body, refusing one that would inflate past ``limit``."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the batch is not zlib data: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise TooLarge(f"the batch inflates to more than {limit} bytes")
    if not d.eof:
        raise BadRequest("the batch's zlib data is truncated")
    return out


def decode_batch(body: bytes, limit: int = MAX_BODY_BYTES) -> list[Any]:
    """The checked operations of an apply request's body."""
    raw = inflate(body, limit)
    try:
        batch = decode(raw)
    except Exception as exc:  # noqa: BLE001 - whatever the pickle holds, it is refused
        raise BadRequest(f"the batch does not decode as builtin values: {exc}") from None
    return check_batch(batch)


def check_position(segment: Any, offset: Any) -> tuple[str, int]:
    if not isinstance(segment, str) or not SEGMENT.match(segment):
        raise BadRequest(f"segment {str(segment)[:80]!r} is not a journal segment name")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= INT_MAX:
        raise BadRequest(f"offset {offset!r} is not a journal offset")
    return segment, offset


def check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise BadRequest(f"run id {str(run_id)[:80]!r}: 1-128 letters, digits, '.', '_' or '-'")
    return run_id


# -- operations ------------------------------------------------------------------------------


# What the text and packed bytes of one batch may add up to once decoded. A pickle may
# refer to one object many times (its memo): a small body could otherwise stand for
# gigabytes of points.
MAX_DECODED_BYTES = 2 * MAX_BODY_BYTES
_budget: contextvars.ContextVar[list[int]] = contextvars.ContextVar("budget")


def _spend(n: int) -> None:
    left = _budget.get(None)
    if left is None:
        return
    left[0] -= n
    if left[0] < 0:
        raise TooLarge(f"the batch's text and values add up to more than {MAX_DECODED_BYTES} bytes")


def check_batch(batch: Any) -> list[Any]:
    if not isinstance(batch, list):
        raise BadRequest(f"a batch is a list of operations, not a {type(batch).__name__}")
    out = []
    token = _budget.set([MAX_DECODED_BYTES])
    try:
        for i, op in enumerate(batch):
            try:
                out.append(check_op(op))
            except TooLarge:
                raise
            except (BadRequest, TypeError, ValueError) as exc:
                raise BadRequest(f"operation {i}: {exc}") from None
    finally:
        _budget.reset(token)
    return out


def check_op(op: Any) -> tuple[Any, ...]:
    if not isinstance(op, tuple) or not op or not isinstance(op[0], str):
        raise BadRequest(f"an operation is a tuple starting with its tag, not {_short(op)}")
    tag = op[0]
    if tag == ops.LOGS:
        _arity(op, 4)
        _, rank, n_calls, groups = op
        _int(rank, "rank", 0, MAX_CALLS - 1)
        _int(n_calls, "n_calls", 0, MAX_CALLS)
        if not isinstance(groups, list | tuple):
            raise BadRequest("logs: groups must be a list")
        rows = 0
        for group in groups:
            rows += _check_group(group)
        if rows > n_calls:
            raise BadRequest(f"logs: {rows} rows in groups but n_calls is {n_calls}")
        return (tag, rank, n_calls, list(groups))
    if tag == ops.SET:
        _arity(op, 5)
        _, path, kind, value, ts = op
        check_path(path)
        _check_field(path, kind, value)
        _ts(ts)
        return op
    if tag == ops.FILE:
        _arity(op, 3)
        check_path(op[1])
        if not isinstance(op[2], dict):
            raise BadRequest("file: info must be a dict")
        _json_value(op[2], "file info")
        return op
    if tag in (ops.TAGS_ADD, ops.TAGS_REMOVE):
        _arity(op, 2)
        if not isinstance(op[1], list | tuple):
            raise BadRequest(f"{tag}: tags must be a list")
        for t in op[1]:
            _text(t, "tag", 256, required=True)
        return (tag, list(op[1]))
    if tag == ops.CREATE:
        _arity(op, 2)
        check_create(op[1])
        return op
    if tag == ops.STATUS:
        _arity(op, 4)
        _, status, ts, error = op
        if status not in STATUSES:
            raise BadRequest(f"status {str(status)[:40]!r}: one of {', '.join(STATUSES)}")
        _ts(ts)
        if error is not None:
            _text(error, "error", MAX_TEXT)
        return op
    raise BadRequest(f"unknown operation {tag[:40]!r}")


def check_create(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise BadRequest("create: meta must be a dict")
    unknown = set(meta) - _CREATE_KEYS
    if unknown:
        raise BadRequest(f"create: unknown keys {sorted(map(str, unknown))[:5]}")
    _text(meta.get("project"), "project", 256, required=True)
    for key, limit in (("name", 1024), ("host", 1024)):
        if meta.get(key) is not None:
            _text(meta[key], key, limit)
    if "ts" in meta:
        _ts(meta["ts"])
    if meta.get("pid") is not None:
        _int(meta["pid"], "pid", 0, INT_MAX)
    if meta.get("parent_id") is not None:
        check_run_id(meta["parent_id"])
        if meta.get("fork_step") is None:
            raise BadRequest("create: a fork (parent_id) needs its fork_step")
    for key in ("fork_step", "rewind_step"):
        if meta.get(key) is not None:
            _int(meta[key], key, 0, INT_MAX)
    return meta


def _check_group(group: Any) -> int:
    if not isinstance(group, tuple) or len(group) != 6:
        raise BadRequest("logs: a group is a 6-tuple (cols or rows)")
    kind, keys, steps, ts, values, order = group
    if not isinstance(keys, tuple | list) or not keys:
        raise BadRequest("logs: a group's keys must be a non-empty list")
    for key in keys:
        check_path(key)
    if len(set(keys)) != len(keys):
        raise BadRequest("logs: a group names a key twice")
    if kind == ops.COLS:
        for name, blob in (("steps", steps), ("ts", ts), ("values", values)):
            if not isinstance(blob, bytes):
                raise BadRequest(f"logs: cols {name} must be bytes")
        if len(steps) % 8:
            raise BadRequest("logs: cols steps are not whole int64s")
        n = len(steps) // 8
        if len(ts) != 8 * n:
            raise BadRequest(f"logs: {n} steps but {len(ts)} bytes of timestamps")
        if len(values) != 8 * n * len(keys):
            raise BadRequest(f"logs: {n} rows of {len(keys)} keys but {len(values)} value bytes")
        if order is not None and (not isinstance(order, bytes) or len(order) != 8 * n):
            raise BadRequest("logs: cols order must be None or n int64s")
        _spend(len(steps) + len(ts) + len(values) + (len(order) if order else 0))
        return n
    if kind == ops.ROWS:
        if not isinstance(steps, list) or not isinstance(ts, list) or not isinstance(values, list):
            raise BadRequest("logs: rows steps, ts and rows must be lists")
        n = len(steps)
        if len(ts) != n or len(values) != n:
            raise BadRequest(f"logs: {n} steps, {len(ts)} timestamps and {len(values)} rows")
        _spend(24 * n * (len(keys) + 2))
        for s in steps:
            _int(s, "step", INT_MIN, INT_MAX)
        for t in ts:
            _ts(t)
        for row in values:
            if not isinstance(row, list | tuple) or len(row) != len(keys):
                raise BadRequest(f"logs: a row must hold {len(keys)} values")
            for v in row:
                _point(v)
        if order is not None:
            if not isinstance(order, list) or len(order) != n:
                raise BadRequest("logs: rows order must be None or a list of n ints")
            for o in order:
                _int(o, "order", 0, MAX_CALLS)
        return n
    raise BadRequest(f"logs: unknown group kind {str(kind)[:40]!r}")


def _check_field(path: str, kind: Any, value: Any) -> None:
    if kind not in FIELD_KINDS:
        raise BadRequest(f"set {path!r}: unknown kind {str(kind)[:40]!r}")
    t = type(value)
    if kind == "bool":
        ok = t is bool
    elif kind == "int":
        ok = t is int and INT_MIN <= value <= INT_MAX
    elif kind in ("float", "datetime"):
        ok = t is float or (t is int and INT_MIN <= value <= INT_MAX)
    elif kind == "str":
        ok = t is str
        if ok:
            _text(value, f"value of {path!r}", MAX_TEXT)
    elif kind == "none":
        ok = value is None
    else:  # list: its JSON text
        ok = t is str and len(value) <= MAX_LIST_TEXT
        if ok:
            try:
                json.loads(value)
            except ValueError:
                ok = False
    if not ok:
        raise BadRequest(f"set {path!r}: {_short(value)} is not a value of kind {kind}")


def _point(v: Any) -> None:
    t = type(v)
    if t is float or t is bool:
        return
    if t is int:
        _int(v, "value", INT_MIN, INT_MAX)
        return
    if t is str:
        _text(v, "value", MAX_TEXT)
        return
    raise BadRequest(f"logs: a point is a number or a str, not {t.__name__}")


def _json_value(value: Any, what: str, depth: int = 0) -> None:
    if depth > 32:
        raise BadRequest(f"{what} nests too deep")
    t = type(value)
    if value is None or t in (bool, float):
        return
    if t is int:
        _int(value, what, INT_MIN, INT_MAX)
    elif t is str:
        _text(value, what, MAX_TEXT)
    elif t is list or t is tuple:
        for v in value:
            _json_value(v, what, depth + 1)
    elif t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise BadRequest(f"{what}: keys must be str")
            _json_value(v, what, depth + 1)
    else:
        raise BadRequest(f"{what}: {t.__name__} is not a JSON value")


def _arity(op: tuple[Any, ...], n: int) -> None:
    if len(op) != n:
        raise BadRequest(f"{op[0]}: {len(op)} fields, expected {n}")


def _int(v: Any, what: str, low: int, high: int) -> None:
    if type(v) is not int or not low <= v <= high:
        raise BadRequest(f"{what} {_short(v)} is not an int in [{low}, {high}]")


def _ts(v: Any) -> None:
    if not (type(v) is float or type(v) is int) or not math.isfinite(v):
        raise BadRequest(f"timestamp {_short(v)} is not a finite number")


def _text(v: Any, what: str, limit: int, *, required: bool = False) -> None:
    if type(v) is not str:
        raise BadRequest(f"{what} must be a str, not {type(v).__name__}")
    if required and not v:
        raise BadRequest(f"{what} is empty")
    if len(v) > limit:
        raise BadRequest(f"{what} is {len(v)} characters; the limit is {limit}")
    _spend(len(v))
    check_text(what, v)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def projects_created(batch: list[Any]) -> list[dict[str, Any]]:
    """The "create" metas of a batch (checked)."""
    return [op[1] for op in batch if op[0] == ops.CREATE]


# -- chunks ----------------------------------------------------------------------------------


def encode_chunks(found: tuple[str, list[Chunk]] | None) -> bytes:
    if found is None:
        head = b"null"
        return struct.pack("<I", len(head)) + head
    kind, chunks = found
    meta = []
    blobs = []
    for c in chunks:
        steps, vals, ts = (_bytes(b) for b in (c.steps, c.vals, c.ts))
        attempt = (
            c.attempt if c.attempt is None or isinstance(c.attempt, int | str) else str(c.attempt)
        )
        meta.append([c.chunk_id, c.n, c.crc, attempt, len(steps), len(vals), len(ts)])
        blobs += [steps, vals, ts]
    head = json.dumps({"kind": kind, "chunks": meta}).encode()
    return struct.pack("<I", len(head)) + head + b"".join(blobs)


def _bytes(blob: Any) -> bytes:
    # A damaged row may hold another type; sent as bytes, the client's check names it.
    if isinstance(blob, bytes):
        return blob
    if isinstance(blob, memoryview | bytearray):
        return bytes(blob)
    return str(blob).encode()


# -- reduced series (buckets, aggregates) computed on the server ------------------------------


def encode_arrays(kind: str, arrays: dict[str, Any]) -> bytes:
    """u32 length | JSON head (kind, n, names and dtypes) | the arrays' bytes, in order.

    ``kind`` is "buckets" (step, first, last, min, max, count) or "series" (step, value,
    timestamp); every array has the head's ``n`` elements of 8 bytes, little-endian."""
    import numpy as np

    names = list(arrays)
    packed = []
    for name in names:
        a = np.asarray(arrays[name])
        dtype = "<i8" if a.dtype.kind in "iub" else "<f8"
        packed.append((name, dtype, np.ascontiguousarray(a, dtype=dtype).tobytes()))
    n = len(arrays[names[0]]) if names else 0
    head = json.dumps(
        {"kind": kind, "n": n, "arrays": [[name, dtype] for name, dtype, _ in packed]}
    ).encode()
    return struct.pack("<I", len(head)) + head + b"".join(blob for _, _, blob in packed)
