"""Two processes applying one run (two servers on one directory store): a batch the
other applied since this applier looked is recognised under the store's write lock and
stored once."""

from __future__ import annotations

import tracker
from tracker.core.journal import read_records
from tracker.core.stores import open_store


def test_a_batch_applied_by_another_handle_meanwhile_is_stored_once(tmp_path) -> None:
    store = str(tmp_path / "s")
    run = tracker.init_run("p", store=store, mode="offline", system_metrics=False, quiet=True)
    for step in range(100):
        run.log({"x": float(step)}, step=step)
    run.close()
    first, second = open_store(store), open_store(store)
    # Both appliers look before either applies: neither has seen the other's work.
    a, b = first.applier(run.id), second.applier(run.id)
    (segment,) = first.segments(run.id)
    records = list(read_records(segment))
    for end, ops in records:
        a.apply(ops, (segment.name, end))
    for end, ops in records:
        assert b.apply(ops, (segment.name, end)) == 0
    r = tracker.read_run(run.id, store=store)
    assert r["x"].fetch_values(include_superseded=True).step.tolist() == list(range(100))
