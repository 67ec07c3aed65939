"""Downsampling a series into buckets that keep first, last, min, max and count.

Buckets split the step range [first step, last step] into ``n`` equal spans, so a
spike at one step survives as the max (or min) of its bucket however many points
share it.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    index = (steps - lo) // width
    # steps are sorted, so each bucket is one contiguous run: find where runs start.
    starts = np.flatnonzero(np.concatenate(([True], index[1:] != index[:-1])))
    ends = np.concatenate((starts[1:], [len(steps)]))
    # fmin/fmax ignore NaN unless a whole bucket is NaN, so one NaN does not hide a spike.
    return Buckets(
        step=lo + index[starts] * width,
        first=values[starts],
        last=values[ends - 1],
        min=np.fmin.reduceat(values, starts),
        max=np.fmax.reduceat(values, starts),
        count=(ends - starts).astype(np.int64),
    )
