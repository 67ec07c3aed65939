"""Turning queued operations into one journal batch (on the writer thread).

Log calls ``(step, ts, data)`` become column ops: calls that share a key set become one
matrix (rows: calls, columns: keys), stored as packed int64/float64 bytes. This is
what the journal records and what ``apply`` consumes; packed columns are far cheaper to
write, fsync and replay than the dicts themselves. Deferred values (accelerator
tensors) are read here, off the training thread.

    ("logs", rank, n_calls, [group, ...]), each group one of
        ("cols", keys, steps, ts, values, order)   float values, packed
        ("rows", keys, steps, ts, rows, order)     anything else (str series)

``order`` gives each row's position among the batch's calls when a batch has several
key sets (None: rows are the calls in order), so a series fed by two key sets keeps
the order of the calls.
"""

from __future__ import annotations

import warnings
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

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


def columnize(ops: list[Any], rank: int = 0) -> list[Any]:
    """Turn queued ops into journal ops: log calls into columns, the rest kept in order."""
    out: list[Any] = []
    calls: list[Any] = []
    append_call = calls.append
    for op in ops:
        tag = op[0]
        if type(tag) is int:
            append_call(op)
        elif tag == "logd":
            append_call((op[1], op[2], resolve(op[3])))
        elif tag == "setd":
            data = resolve({op[1]: op[3]})
            if data:
                out.append(("set", op[1], op[2], data[op[1]], op[4]))
        elif tag == "rlog":
            out.extend(columnize(op[2], op[1]))
        else:
            out.append(op)
    if calls:
        out.append(("logs", rank, len(calls), _columns(calls)))
    return out


def _columns(calls: list[Any]) -> list[Any]:
    datas = list(map(itemgetter(2), calls))
    first = list(datas[0])
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
    out = []
    for keys, group, order in groups:
        n, k = len(group), len(keys)
        if k == 0:
            continue
        steps = np.fromiter(map(itemgetter(0), group), dtype=np.int64, count=n)
        ts = np.fromiter(map(itemgetter(1), group), dtype=np.float64, count=n)
        order_b = None if order is None else np.array(order, dtype=np.int64).tobytes()
        try:
            vals = np.fromiter(
                chain.from_iterable(map(dict.values, map(itemgetter(2), group))),
                dtype=np.float64,
                count=n * k,
            )
        except (TypeError, ValueError):
            rows = [list(d.values()) for d in map(itemgetter(2), group)]
            out.append(("rows", keys, steps.tolist(), ts.tolist(), rows, order))
            continue
        out.append(("cols", keys, steps.tobytes(), ts.tobytes(), vals.tobytes(), order_b))
    return out
