"""Deleting runs gives their disk space back: rows deleted from SQLite only leave free
pages inside store.db until it is compacted."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

import tracker
from tracker.cli import main
from tracker.core.cleanup import delete_runs
from tracker.core.stores import open_store


def _big_run(store: str, name: str, points: int = 300_000) -> str:
    rng = np.random.default_rng(0)
    values = rng.random(points)  # random: chunks that do not compress to nothing
    with tracker.init_run(
        project="p", name=name, store=store, system_metrics=False, quiet=True
    ) as run:
        for step, v in enumerate(values.tolist()):
            run.log({"loss": v}, step=step)
        return run.id


def test_deleting_a_run_and_compacting_frees_its_space(tmp_path) -> None:
    store = str(tmp_path / "s")
    doomed, kept = _big_run(store, "a"), _big_run(store, "b")
    st = open_store(store, create=False)
    before = st.disk_bytes()
    assert delete_runs(st, [doomed]) == [doomed]
    freed = st.reclaim_space()
    after = st.disk_bytes()
    assert freed >= before - after > 0  # the deletion's own WAL pages are freed too
    assert after < 0.7 * before  # about half: one of two equal runs is gone
    r = tracker.read_run(kept, store=store)
    assert len(r["loss"].fetch_values()) == 300_000  # what is kept reads the same


def test_gc_says_how_much_space_it_freed(tmp_path) -> None:
    store = str(tmp_path / "s")
    _big_run(store, "a")
    _big_run(store, "b")
    st = open_store(store, create=False)
    before = st.disk_bytes()
    st.close()
    out = CliRunner().invoke(main, ["gc", "--project", "p", "--yes", "--store", store])
    assert out.exit_code == 0, out.output
    assert "deleted 2 run(s)" in out.output
    assert "freed" in out.output
    st = open_store(store, create=False)
    assert st.disk_bytes() < 0.3 * before


def test_gc_no_compact_leaves_the_file_as_it_is(tmp_path) -> None:
    store = str(tmp_path / "s")
    _big_run(store, "a", points=100_000)
    st = open_store(store, create=False)
    before = st.disk_bytes()
    st.close()
    out = CliRunner().invoke(
        main, ["gc", "--project", "p", "--yes", "--no-compact", "--store", store]
    )
    assert out.exit_code == 0, out.output
    assert "freed" not in out.output and "--no-compact" not in out.output
    assert open_store(store, create=False).disk_bytes() >= 0.8 * before


def test_a_later_gc_compacts_what_an_earlier_one_left(tmp_path) -> None:
    store = str(tmp_path / "s")
    _big_run(store, "a", points=100_000)
    args = ["gc", "--project", "p", "--yes", "--store", store]
    assert CliRunner().invoke(main, [*args, "--no-compact"]).exit_code == 0
    st = open_store(store, create=False)
    assert st.reclaimable_bytes() > 0
    st.close()
    out = CliRunner().invoke(main, args)  # nothing left to delete: compacts all the same
    assert out.exit_code == 0, out.output
    assert "nothing to delete" in out.output and "freed" in out.output
    assert open_store(store, create=False).reclaimable_bytes() == 0
