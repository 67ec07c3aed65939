"""Two live processes applying one run (rank 0's writer and a distributed run's ingest,
or `tracker sync` beside a live writer) never store a record twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import tracker
from tracker.core import ops
from tracker.core.journal import JournalWriter
from tracker.core.replay import replay_run
from tracker.core.stores import open_store

from .conftest import stored_points


def _record(rank: int, steps: list[int]) -> list[Any]:
    st = np.array(steps, dtype=np.int64)
    cols = (
        ops.COLS,
        ("b",),
        st.tobytes(),
        np.full(len(st), 1e9).tobytes(),
        np.ones(len(st)).tobytes(),
        None,
    )
    return [ops.logs(rank, len(st), [cols])]


def _second_segment(store: str, run_id: str) -> Path:
    st = open_store(store)
    return Path(st.journal_dir(run_id)) / "99999999999999999999-1.jnl"


class _Racing:
    """An applier that lets another process apply the first record of the segment just
    before its own first apply: the interleaving two live appliers can meet."""

    def __init__(self, inner: Any, other: Any, first: tuple[list[Any], tuple[str, int]]) -> None:
        self.inner, self.other, self.first, self.raced = inner, other, first, False

    def applied(self, position: tuple[str, int]) -> bool:
        return self.inner.applied(position)

    def apply(self, batch: list[Any], position: tuple[str, int] | None = None) -> int:
        if not self.raced:
            self.raced = True
            self.other.apply(*self.first)
        return self.inner.apply(batch, position)


def test_sync_beside_a_live_applier_stores_each_record_once(store: str) -> None:
    run = tracker.init_run(project="p", store=store, system_metrics=False)
    run.log({"a": 1.0})
    run.flush()
    path = _second_segment(store, run.id)
    journal = JournalWriter(path)
    first = _record(1, [0, 1])
    _start, end1 = journal.append(first)
    journal.append(_record(1, [2, 3]))
    journal.sync()
    st = open_store(store)
    racing = _Racing(
        st.applier(run.id), open_store(store).applier(run.id), (first, (path.name, end1))
    )
    replay_run(st, run.id, applier=racing, record_by_record=True)
    assert racing.raced
    assert stored_points(store, "b") == 4  # not 6: the raced record is stored once
    journal.close()
    run.close()


def test_a_live_writer_catches_up_its_own_segment_only(store: str) -> None:
    run = tracker.init_run(project="p", store=store, system_metrics=False)
    run.log({"a": 1.0})
    run.flush()
    path = _second_segment(store, run.id)
    journal = JournalWriter(path)
    journal.append(_record(1, [0, 1]))
    journal.sync()
    writer = run._writer
    assert writer._catch_up_to(writer._last_record)  # type: ignore[attr-defined]
    # The other segment is its own writer's to apply (or recovery's, once none lives).
    assert path.name not in open_store(store).applied_offsets(run.id)
    assert stored_points(store, "b") == 0
    journal.close()
    run.close()
