"""Downsampling a series into buckets that keep first, last, min, max and count.

Buckets split the step range [first step, last step] into ``n`` equal spans, so a
spike at one step survives as the max (or min) of its bucket however many points
share it.

Block summaries (``summarize``, ``encode_summaries``) are what the stores keep beside
each large chunk, so that a chart of a long series merges a few bytes per ``BLOCK``
steps instead of reading every point; ``blocks_to_buckets`` turns them into buckets
whose bounds are whole blocks, equal to ``bucketize_aligned`` of the points.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Buckets:
    """Per-bucket arrays; ``step`` is each bucket's first step. Empty buckets are left out."""

    step: np.ndarray
    first: np.ndarray
    last: np.ndarray
    min: np.ndarray
    max: np.ndarray
    count: np.ndarray

    def __len__(self) -> int:
        return len(self.step)

    def to_pandas(self):
        from .frames import require_pandas

        pd = require_pandas("Buckets.to_pandas()")
        return pd.DataFrame(
            {
                "step": self.step,
                "first": self.first,
                "last": self.last,
                "min": self.min,
                "max": self.max,
                "count": self.count,
            }
        )


def bucketize(steps: np.ndarray, values: np.ndarray, n: int) -> Buckets:
    """Downsample sorted ``steps``/``values`` into at most ``n`` buckets."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"buckets must be a positive int, got {n!r}")
    if len(steps) == 0:
        empty_f = np.empty(0, dtype=np.float64)
        return Buckets(
            np.empty(0, np.int64), empty_f, empty_f, empty_f, empty_f, np.empty(0, np.int64)
        )
    lo = int(steps[0])
    span = int(steps[-1]) - lo + 1
    width = -(-span // n)  # ceil: every bucket covers a whole number of steps
    return bucketize_aligned(steps, values, lo, width)


# -- block summaries ------------------------------------------------------------------------------
#
# The stores keep, next to each chunk of at least SUMMARY_MIN_POINTS float points, a
# summary of it per block of BLOCK steps (block b holds the steps b*BLOCK .. b*BLOCK +
# BLOCK - 1): the point count, the NaN count, min and max (fmin/fmax, as ``bucketize``),
# and the first and last point with their steps. A chunk is immutable, so its summary
# never goes stale: repeats of a step, lower steps and rewinds change nothing stored;
# they are resolved when summaries are merged, in write order, as ``RunReader._series``
# orders points.

BLOCK = 1024
# A chunk as a store lists it for the summary reads: (chunk id, first step, last step,
# n, attempt, summary blob); attempt and summary are None where it has no summary.
ChunkSummary = tuple[Any, int, int, int, Any, "bytes | None"]
SUMMARY_MIN_POINTS = 64
_SUMMARY_HEAD = struct.Struct("<III")  # CRC-32 of the rest, BLOCK, number of blocks
_INTS = 5  # block, count, nan, first step, last step
_FLOATS = 4  # min, max, first, last


@dataclass(frozen=True)
class Blocks:
    """Per-block arrays of a series (or of some of its points), blocks ascending."""

    block: np.ndarray
    count: np.ndarray
    nan: np.ndarray
    min: np.ndarray
    max: np.ndarray
    first_step: np.ndarray
    first: np.ndarray
    last_step: np.ndarray
    last: np.ndarray

    def __len__(self) -> int:
        return len(self.block)

    @property
    def points(self) -> int:
        return int(self.count.sum())


def _empty_blocks() -> Blocks:
    i = np.empty(0, np.int64)
    f = np.empty(0, np.float64)
    return Blocks(i, i, i, f, f, i, f, i, f)


def take_blocks(b: Blocks, keep: np.ndarray) -> Blocks:
    """The blocks of ``b`` where ``keep`` is true."""
    return Blocks(*(getattr(b, f)[keep] for f in Blocks.__dataclass_fields__))


def summarize(steps: np.ndarray, values: np.ndarray, block: int = BLOCK) -> Blocks:
    """Points (in write order, any step order) reduced per block of ``block`` steps.

    Within a block, ``first`` is the point of the lowest step written first, ``last``
    the point of the highest step written last: what a stable sort by step puts first
    and last."""
    if len(steps) == 0:
        return _empty_blocks()
    steps = np.asarray(steps, np.int64)
    values = np.asarray(values, np.float64)
    if len(steps) > 1 and not bool((steps[1:] >= steps[:-1]).all()):
        order = np.argsort(steps, kind="stable")
        steps, values = steps[order], values[order]
    index = steps // block
    starts = np.flatnonzero(np.concatenate(([True], index[1:] != index[:-1])))
    ends = np.concatenate((starts[1:], [len(steps)]))
    isnan = np.isnan(values)
    nan = (
        np.add.reduceat(isnan.astype(np.int64), starts)
        if isnan.any()
        else np.zeros(len(starts), np.int64)
    )
    return Blocks(
        block=index[starts],
        count=(ends - starts).astype(np.int64),
        nan=nan,
        min=np.fmin.reduceat(values, starts),
        max=np.fmax.reduceat(values, starts),
        first_step=steps[starts],
        first=values[starts],
        last_step=steps[ends - 1],
        last=values[ends - 1],
    )


def encode_summary(steps_b: bytes, vals_b: bytes) -> bytes:
    """A float chunk's stored summary (its blobs as the chunk holds them)."""
    return encode_summaries([(steps_b, vals_b)])[0]


def encode_summaries(chunks: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The stored summaries of float chunks ((steps, vals) blobs each): every chunk of a
    batch in one pass of numpy, so that the write path pays per point, not per chunk."""
    if not chunks:
        return []
    sizes = np.array([len(st) // 8 for st, _v in chunks], np.int64)
    steps = np.frombuffer(b"".join(st for st, _v in chunks), np.int64)
    values = np.frombuffer(b"".join(v for _st, v in chunks), np.float64)
    owner = np.repeat(np.arange(len(chunks), dtype=np.int64), sizes)
    if len(steps) > 1:
        back = (steps[1:] < steps[:-1]) & (owner[1:] == owner[:-1])
        if back.any():  # a chunk with lower steps: by step within each chunk, stably
            order = np.lexsort((steps, owner))
            steps, values = steps[order], values[order]
    block = steps // BLOCK
    cut = np.concatenate(([True], (block[1:] != block[:-1]) | (owner[1:] != owner[:-1])))
    starts = np.flatnonzero(cut)
    ends = np.concatenate((starts[1:], [len(steps)]))
    isnan = np.isnan(values)
    nan = (
        np.add.reduceat(isnan.astype(np.int64), starts)
        if isnan.any()
        else np.zeros(len(starts), np.int64)
    )
    ints = np.stack((block[starts], ends - starts, nan, steps[starts], steps[ends - 1]))
    floats = np.stack((np.fmin.reduceat(values, starts), np.fmax.reduceat(values, starts),
                       values[starts], values[ends - 1]))  # fmt: skip
    ints = ints.astype("<i8", copy=False)
    floats = floats.astype("<f8", copy=False)
    bounds = np.searchsorted(owner[starts], np.arange(len(chunks) + 1)).tolist()
    out = []
    for i in range(len(chunks)):
        a, b = bounds[i], bounds[i + 1]
        body = ints[:, a:b].tobytes() + floats[:, a:b].tobytes()
        out.append(_SUMMARY_HEAD.pack(zlib.crc32(body), BLOCK, b - a) + body)
    return out


def decode_summary(blob: bytes) -> Blocks | None:
    """A stored summary, or None where it does not check out (damaged, or made with
    another block size): the caller then reads the chunk's points."""
    head = _SUMMARY_HEAD.size
    if len(blob) < head:
        return None
    crc, block, m = _SUMMARY_HEAD.unpack_from(blob)
    body = memoryview(blob)[head:]
    if block != BLOCK or len(body) != 8 * (_INTS + _FLOATS) * m or zlib.crc32(body) != crc:
        return None
    ints = np.frombuffer(body, "<i8", _INTS * m).reshape(_INTS, m)
    floats = np.frombuffer(body, "<f8", _FLOATS * m, 8 * _INTS * m).reshape(_FLOATS, m)
    return Blocks(ints[0], ints[1], ints[2], floats[0], floats[1], ints[3], floats[2],
                  ints[4], floats[3])  # fmt: skip


def merge_blocks(parts: list[Blocks]) -> Blocks:
    """The summaries of successive pieces of one series (``parts`` in write order)
    merged into one per block: exactly what ``summarize`` gives for all their points."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return _empty_blocks()
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    order_of = np.concatenate([np.full(len(p), i, np.int64) for i, p in enumerate(parts)])
    block = cat("block")
    # By block, then write order; "first" is the lowest step's earliest entry, "last" the
    # highest step's latest: the same blocks in each ordering, so group bounds agree.
    by_block = np.lexsort((order_of, block))
    by_first = np.lexsort((order_of, cat("first_step"), block))
    by_last = np.lexsort((order_of, cat("last_step"), block))
    sorted_block = block[by_block]
    starts = np.flatnonzero(np.concatenate(([True], sorted_block[1:] != sorted_block[:-1])))
    ends = np.concatenate((starts[1:], [len(block)]))
    first_step, first = cat("first_step")[by_first], cat("first")[by_first]
    last_step, last = cat("last_step")[by_last], cat("last")[by_last]
    return Blocks(
        block=sorted_block[starts],
        count=np.add.reduceat(cat("count")[by_block], starts),
        nan=np.add.reduceat(cat("nan")[by_block], starts),
        min=np.fmin.reduceat(cat("min")[by_block], starts),
        max=np.fmax.reduceat(cat("max")[by_block], starts),
        first_step=first_step[starts],
        first=first[starts],
        last_step=last_step[ends - 1],
        last=last[ends - 1],
    )


def aligned_width(lo: int, hi: int, n: int, block: int = BLOCK) -> tuple[int, int]:
    """(origin, width) of the block-aligned buckets of steps ``lo``..``hi``: the origin
    is the start of ``lo``'s block, the width the smallest multiple of ``block`` that
    makes at most ``n`` buckets reach ``hi``."""
    origin = (lo // block) * block
    width = -(-(hi - origin + 1) // n)
    return origin, -(-width // block) * block


def bucketize_aligned(steps: np.ndarray, values: np.ndarray, origin: int, width: int) -> Buckets:
    """Sorted points into buckets ``[origin + i*width, origin + (i+1)*width)`` (empty ones
    left out): the full-resolution reference that ``blocks_to_buckets`` equals."""
    if len(steps) == 0:
        return bucketize(steps, values, 1)
    index = (steps - origin) // width
    # steps are sorted, so each bucket is one contiguous run: find where runs start.
    # fmin/fmax ignore NaN unless a whole bucket is NaN, so one NaN does not hide a spike.
    starts = np.flatnonzero(np.concatenate(([True], index[1:] != index[:-1])))
    ends = np.concatenate((starts[1:], [len(steps)]))
    return Buckets(
        step=origin + index[starts] * width,
        first=values[starts],
        last=values[ends - 1],
        min=np.fmin.reduceat(values, starts),
        max=np.fmax.reduceat(values, starts),
        count=(ends - starts).astype(np.int64),
    )


def blocks_to_buckets(
    b: Blocks, origin: int, width: int, block: int = BLOCK
) -> tuple[Buckets, np.ndarray]:
    """Block summaries merged into buckets of ``width`` steps (a multiple of ``block``)
    from ``origin`` (a block start), and each bucket's NaN count."""
    if width % block or origin % block:
        raise ValueError("bucket width and origin must be whole blocks")
    if len(b) == 0:
        return bucketize(np.empty(0, np.int64), np.empty(0), 1), np.empty(0, np.int64)
    group = (b.block * block - origin) // width
    starts = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    ends = np.concatenate((starts[1:], [len(group)]))
    out = Buckets(
        step=origin + group[starts] * width,
        first=b.first[starts],
        last=b.last[ends - 1],
        min=np.fmin.reduceat(b.min, starts),
        max=np.fmax.reduceat(b.max, starts),
        count=np.add.reduceat(b.count, starts),
    )
    return out, np.add.reduceat(b.nan, starts)
