"""The column format of log calls: made on the writer thread, read by stores.

``columnize`` turns queued operations into journal operations (``ops.py`` describes
both): log calls ``(step, ts, data)`` become one "logs" op whose groups are the calls
that share a key set, each one matrix (rows: calls, columns: keys) stored as packed
int64/float64 bytes ("cols"), or as lists where a value is not a float ("rows"). This
is what the journal records and what a store applies; packed columns are far cheaper
to write, fsync and replay than the dicts themselves. Deferred values (accelerator
tensors) are read here, off the training thread.

``group_columns`` and the helpers beside it read a group back (the store's applier,
the writer's step bookkeeping).
"""

from __future__ import annotations

import warnings
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from . import ops
from .tensors import Deferred, resolve_many


def resolve(data: dict[str, Any]) -> dict[str, Any]:
    """Read deferred values; one that cannot be read is dropped with a warning.

    Device values of one call were copied as one batch (``tensors.DeviceBatch``): the
    first read waits for that copy, the rest read the host buffer.
    """
    keys = [k for k, v in data.items() if type(v) is Deferred]
    if not keys:
        return data
    read = resolve_many([data[k] for k in keys])
    out = dict(data)
    for key, value in zip(keys, read, strict=True):
        if isinstance(value, BaseException):
            warnings.warn(
                f"tracker: could not read the tensor logged under {key!r}: {value}; "
                "that point was dropped",
                RuntimeWarning,
                stacklevel=1,
            )
            del out[key]
        else:
            out[key] = value
    return out


def columnize(queued: list[Any], rank: int = 0) -> list[Any]:
    """Turn queued ops into journal ops: log calls into columns, the rest kept in order."""
    out: list[Any] = []
    calls: list[Any] = []
    append_call = calls.append
    for op in queued:
        tag = op[0]
        if type(tag) is int:
            append_call(op)
        elif tag == ops.LOG_DEFERRED:
            _, step, ts, data = op
            append_call(ops.log_call(step, ts, resolve(data)))
        elif tag == ops.SET_DEFERRED:
            _, path, kind, value, ts = op
            data = resolve({path: value})
            if data:
                out.append((ops.SET, path, kind, data[path], ts))
        else:
            out.append(op)
    if calls:
        out.append(ops.logs(rank, len(calls), _columns(calls)))
    return out


def _columns(calls: list[Any]) -> list[Any]:
    # A text call is 4 long (ops.log_text_call); float calls, by far the most, are 3:
    # looked at once per batch, then per group only where the batch holds text.
    text = max(map(len, calls)) > 3
    datas = list(map(itemgetter(2), calls))
    first = list(datas[0])
    # (keys, the calls logging them, their positions in calls; None when all calls do)
    groups: list[tuple[tuple[str, ...], list[Any], list[int] | None]]
    if all(map(first.__eq__, map(list, datas))):
        groups = [(tuple(first), calls, None)]
    else:
        by_keys: dict[tuple[str, ...], tuple[list[Any], list[int]]] = {}
        for i, call in enumerate(calls):
            keys = tuple(call[2])
            g = by_keys.get(keys)
            if g is None:
                g = by_keys[keys] = ([], [])
            g[0].append(call)
            g[1].append(i)
        groups = [(keys, c, order) for keys, (c, order) in by_keys.items()]
    out: list[tuple[Any, ...]] = []  # ROWS and COLS ops
    for keys, group, order in groups:
        n, k = len(group), len(keys)
        if k == 0:
            continue
        steps = np.fromiter(map(itemgetter(0), group), dtype=np.int64, count=n)
        ts = np.fromiter(map(itemgetter(1), group), dtype=np.float64, count=n)
        order_b = None if order is None else np.array(order, dtype=np.int64).tobytes()
        if text and max(map(len, group)) > 3:
            rows = [list(d.values()) for d in map(itemgetter(2), group)]
            out.append((ops.ROWS, keys, steps.tolist(), ts.tolist(), rows, order))
            continue
        try:
            vals = np.fromiter(
                chain.from_iterable(map(dict.values, map(itemgetter(2), group))),
                dtype=np.float64,
                count=n * k,
            )
        except (TypeError, ValueError):
            rows = [list(d.values()) for d in map(itemgetter(2), group)]
            out.append((ops.ROWS, keys, steps.tolist(), ts.tolist(), rows, order))
            continue
        out.append((ops.COLS, keys, steps.tobytes(), ts.tobytes(), vals.tobytes(), order_b))
    return out


# -- reading the columns back --------------------------------------------------------------


def group_steps(group: Any) -> np.ndarray:
    """The steps (int64, one per call) of a "cols" or "rows" group."""
    raw = group[2]
    if group[0] == ops.COLS:
        return np.frombuffer(raw, dtype=np.int64)
    return np.asarray(raw, dtype=np.int64)


def group_order(group: Any, n: int) -> np.ndarray:
    """Each of a group's ``n`` calls' position among the calls of its "logs" op."""
    order = group[5]
    if order is None:
        return np.arange(n)
    if isinstance(order, bytes):
        return np.frombuffer(order, dtype=np.int64)
    return np.asarray(order, dtype=np.int64)


def group_columns(group: Any) -> tuple[Any, np.ndarray, np.ndarray, Any, np.ndarray]:
    """``(keys, steps, ts, columns, order)`` of a group: ``columns[j]`` holds the values
    of ``keys[j]`` (a float64 array for "cols", a list for "rows")."""
    keys = group[1]
    steps = group_steps(group)
    if group[0] == ops.COLS:
        ts = np.frombuffer(group[3], dtype=np.float64)
        columns: Any = np.frombuffer(group[4], dtype=np.float64).reshape(len(steps), len(keys)).T
    else:
        ts = np.array(group[3], dtype=np.float64)
        rows = group[4]
        columns = [[r[j] for r in rows] for j in range(len(keys))]
    return keys, steps, ts, columns, group_order(group, len(steps))


def count_points(journal_ops: list[Any]) -> int:
    """Series points in journal ops (the values of their log calls)."""
    total = 0
    for op in journal_ops:
        if op[0] == ops.LOGS:
            for group in op[3]:
                n_keys = len(group[1])
                n_rows = len(group[2]) // 8 if group[0] == ops.COLS else len(group[2])
                total += n_keys * n_rows
    return total
