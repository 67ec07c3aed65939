"""Chunk summaries (downsample.py's blocks): what charts read instead of points must equal
what the points give, for the same bucket bounds, whatever the series went through."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.ui.populate import cols_logs
from tracker.core.downsample import (
    BLOCK,
    SUMMARY_MIN_POINTS,
    aligned_width,
    blocks_to_buckets,
    bucketize_aligned,
    decode_summary,
    encode_summary,
    merge_blocks,
    summarize,
)
from tracker.core.reader import RunReader
from tracker.core.stores.sqlite import SQLiteStore


def _create(project: str = "p", parent: tuple[str, int] | None = None,
            rewind: int | None = None) -> Any:  # fmt: skip
    return ("create", {"project": project, "name": None, "ts": time.time(), "host": "h",
                       "pid": 1, "parent_id": parent[0] if parent else None,
                       "fork_step": parent[1] if parent else None, "rewind_step": rewind})  # fmt: skip


def _log(path: str, steps: Any, vals: Any, rank: int = 0) -> Any:
    return cols_logs(rank, {path: np.asarray(vals, np.float64)}, np.asarray(steps, np.int64), 1e9)


def check_exact(store: Any, run_id: str, path: str, rank: int = 0,
                start: int | None = None, end: int | None = None) -> int:  # fmt: skip
    """Summaries merged into aligned buckets == the points bucketed over the same bounds;
    returns how many points that covered."""
    reader = RunReader(store, run_id, store.run(run_id))
    points = reader[path].fetch_values(rank=rank)
    steps, vals = points.step, points.value
    keep = np.ones(len(steps), bool)
    if start is not None:
        keep &= steps >= start
    if end is not None:
        keep &= steps <= end
    steps, vals = steps[keep], vals[keep]
    blocks = reader._blocks(path, rank, start, end)
    assert blocks is not None
    assert blocks.points == len(steps)
    if not len(steps):
        return 0
    for n in (1, 3, 7, 50, 1000):
        origin, width = aligned_width(int(steps[0]), int(steps[-1]), n)
        got, nan = blocks_to_buckets(blocks, origin, width)
        want = bucketize_aligned(steps, vals, origin, width)
        assert len(got) <= n
        for name in ("step", "count"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        for name in ("first", "last", "min", "max"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))  # NaN == NaN
        starts = np.concatenate(([0], np.cumsum(want.count)[:-1]))
        want_nan = np.add.reduceat(np.isnan(vals).astype(np.int64), starts)
        np.testing.assert_array_equal(nan, want_nan)
    # The points of the range, read alone, are the same points.
    ranged = reader._points_in(path, rank, start, end)
    assert ranged is not None
    np.testing.assert_array_equal(ranged[0], steps)
    np.testing.assert_array_equal(ranged[1], vals)
    return len(steps)


def test_summary_round_trip_and_damage() -> None:
    steps = np.array([5, 3, 3, 2000, 1024, 7], np.int64)
    vals = np.array([1.0, 2.0, np.nan, 4.0, -1.0, 9.0])
    blob = encode_summary(steps.tobytes(), vals.tobytes())
    b = decode_summary(blob)
    assert b is not None
    assert b.block.tolist() == [0, 1]
    assert b.count.tolist() == [4, 2] and b.nan.tolist() == [1, 0]
    # Lowest step first written first (3 -> 2.0), highest step last written last (7).
    assert b.first.tolist() == [2.0, -1.0] and b.last.tolist() == [9.0, 4.0]
    assert decode_summary(blob[:-1]) is None
    assert decode_summary(blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]) is None


def test_merge_equals_summarize_of_everything() -> None:
    rng = np.random.default_rng(3)
    parts_s, parts_v = [], []
    for _ in range(12):
        n = int(rng.integers(1, 400))
        parts_s.append(rng.integers(0, 6 * BLOCK, n))
        v = rng.normal(size=n)
        v[rng.random(n) < 0.05] = np.nan
        parts_v.append(v)
    merged = merge_blocks([summarize(s, v) for s, v in zip(parts_s, parts_v, strict=True)])
    whole = summarize(np.concatenate(parts_s), np.concatenate(parts_v))
    for name in whole.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name))


def test_store_summaries_exact_with_repeats_lower_steps_rewinds_and_forks(tmp_path: Path) -> None:
    st = SQLiteStore(tmp_path / "s")
    rng = np.random.default_rng(5)
    a = st.applier("run1")
    a.apply([_create()], ("0001.jnl", 1))
    big = np.arange(0, 20 * BLOCK + 17)
    vals = np.sin(big / 300.0)
    vals[777] = 1e6  # a spike
    vals[5000] = np.nan
    a.apply([_log("m", big, vals)], ("0001.jnl", 2))
    # Repeats of earlier steps and lower steps, in a large chunk and in a small one.
    again = rng.integers(0, 20 * BLOCK, 3 * SUMMARY_MIN_POINTS)
    a.apply([_log("m", again, rng.normal(size=len(again)))], ("0001.jnl", 3))
    a.apply([_log("m", [3, 3, 2], [-5.0, 7.0, np.nan])], ("0001.jnl", 4))
    assert check_exact(st, "run1", "m") == len(big) + len(again) + 3
    # A second attempt rewinds to a step inside a block: later points of the first are
    # hidden, the summaries that reach past it must not count them.
    b = st.applier("run1")
    b.apply([_create(rewind=9 * BLOCK + 100)], ("0002.jnl", 1))
    more = np.arange(9 * BLOCK + 101, 14 * BLOCK)
    b.apply([_log("m", more, np.cos(more / 10.0))], ("0002.jnl", 2))
    n = check_exact(st, "run1", "m")
    assert n == int((big <= 9 * BLOCK + 100).sum()) + int(
        (again <= 9 * BLOCK + 100).sum()
    ) + 3 + len(more)
    # Ranges: aligned and not, inside a block, across the rewind.
    for start, end in [(0, BLOCK - 1), (10, 5 * BLOCK + 3), (2 * BLOCK, 12 * BLOCK - 1),
                       (9 * BLOCK + 50, 9 * BLOCK + 200), (None, 3 * BLOCK), (7 * BLOCK, None)]:  # fmt: skip
        check_exact(st, "run1", "m", start=start, end=end)
    # A fork continues its parent up to the fork step (inside a block).
    c = st.applier("child")
    c.apply([_create(parent=("run1", 4 * BLOCK + 5))], ("0001.jnl", 1))
    tail = np.arange(4 * BLOCK + 6, 30 * BLOCK)
    c.apply([_log("m", tail, np.tan(tail / 1e4))], ("0001.jnl", 2))
    check_exact(st, "child", "m")
    check_exact(st, "child", "m", start=3 * BLOCK + 1, end=6 * BLOCK)
    # sys/ series are not rewound.
    a2 = st.applier("run2")
    a2.apply([_create(), _log("sys/cpu", np.arange(5000), np.ones(5000))], ("0001.jnl", 1))
    b2 = st.applier("run2")
    b2.apply([_create(rewind=10), _log("sys/cpu", np.arange(5000, 6000), np.zeros(1000))],
             ("0002.jnl", 1))  # fmt: skip
    assert check_exact(st, "run2", "sys/cpu") == 6000
    # The large chunks were summarized: the summaries table holds rows.
    assert st._read("SELECT count(*) FROM summaries")[0][0] >= 4
    st.close()


def test_store_without_summaries_reads_points(tmp_path: Path) -> None:
    st = SQLiteStore(tmp_path / "s")
    a = st.applier("r")
    a.apply([_create(), _log("m", np.arange(3000), np.arange(3000) * 0.5)], ("0001.jnl", 1))
    # An older tracker wrote this store: no summary of any chunk.
    with st.write() as conn:
        conn.execute("DROP TABLE summaries")
    st.close()
    ro = SQLiteStore(tmp_path / "s", create=False, readonly=True)
    assert ro.has_summaries is False
    assert check_exact(ro, "r", "m") == 3000
    ro.close()


def test_damaged_summary_falls_back_to_points(tmp_path: Path) -> None:
    st = SQLiteStore(tmp_path / "s")
    a = st.applier("r")
    a.apply([_create(), _log("m", np.arange(3000), np.arange(3000) * 0.5)], ("0001.jnl", 1))
    with st.write() as conn:
        conn.execute("UPDATE summaries SET body = zeroblob(40)")
    assert check_exact(st, "r", "m") == 3000
    st.close()


@pytest.mark.parametrize("n", [1, SUMMARY_MIN_POINTS - 1])
def test_small_chunks_have_no_summary(tmp_path: Path, n: int) -> None:
    st = SQLiteStore(tmp_path / "s")
    a = st.applier("r")
    a.apply([_create(), _log("m", np.arange(n), np.ones(n))], ("0001.jnl", 1))
    assert st._read("SELECT count(*) FROM summaries")[0][0] == 0
    assert check_exact(st, "r", "m") == n
    st.close()


def test_whole_range_reads_summaries_not_points(tmp_path: Path, monkeypatch: Any) -> None:
    st = SQLiteStore(tmp_path / "s")
    a = st.applier("r")
    steps = np.arange(50 * BLOCK)
    a.apply([_create(), _log("m", steps, np.sqrt(steps))], ("0001.jnl", 1))
    reader = RunReader(st, "r", st.run("r"))

    def no_points(ids: Any) -> Any:
        raise AssertionError(f"read the points of chunks {ids}")

    monkeypatch.setattr(st, "chunks_by_id", no_points)
    blocks = reader._blocks("m", 0)
    assert blocks is not None and blocks.points == len(steps) and len(blocks) == 50
    # A range on block bounds reads no points either; one inside a block must.
    assert reader._blocks("m", 0, 2 * BLOCK, 10 * BLOCK - 1).points == 8 * BLOCK
    with pytest.raises(AssertionError, match="read the points"):
        reader._blocks("m", 0, 5, 10 * BLOCK)
    st.close()
