"""Steps, repeats and rewinds: nothing a caller logs is dropped silently.

A point's identity is the journal record that carried it, so replays add nothing, while
a step logged twice keeps both points and a step lower than a series' last is stored.
``init_run(resume_from_step=s)`` supersedes (keeps, hides) what earlier attempts logged
after ``s``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import tracker
from tracker.core.replay import replay_run, sync_store
from tracker.core.store import Store

from ..conftest import PYTHON, python_env


def _points(store: str) -> int:
    db = sqlite3.connect(Path(store) / "store.db")
    try:
        return db.execute(
            "SELECT coalesce(sum(n), 0) FROM chunks JOIN series USING(series_id) "
            "WHERE path NOT LIKE 'sys/%'"
        ).fetchone()[0]
    finally:
        db.close()


def test_a_repeated_step_keeps_both_points_in_write_order(store: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repeats are normal: no warning
        with tracker.init_run(project="p", store=store, system_metrics=False) as run:
            run.log({"train/loss": 0.5}, step=20)
            run.log({"eval/loss": 0.40}, step=20)  # evaluate() during training
            run.log({"eval/loss": 0.35}, step=20)  # evaluate() again after training
            run["eval/acc"].append(0.8, step=20)
            run["eval/acc"].append(0.9, step=20)
    r = tracker.read_run(run.id, store=store)
    ev = r["eval/loss"].fetch_values()
    assert ev.step.tolist() == [20, 20] and ev.value.tolist() == [0.40, 0.35]
    assert r["eval/loss"].fetch_values(per_step="last").value.tolist() == [0.35]
    assert r["eval/loss"].fetch_values(per_step="first").value.tolist() == [0.40]
    assert r["eval/loss"].fetch() == 0.35  # the latest value
    assert r["eval/acc"].fetch_values().value.tolist() == [0.8, 0.9]
    with pytest.raises(ValueError, match="per_step"):
        r["eval/loss"].fetch_values(per_step="mean")


def test_a_lower_step_queued_in_one_batch_is_stored_and_warned_once(store: str) -> None:
    run = tracker.init_run(project="p", store=store, system_metrics=False)
    for step in range(10):
        run.log({"x": float(step)}, step=step)
    # No flush between: the writer meets the lower steps first and warns.
    run.log({"x": 100.0}, step=4)
    run.log({"x": 101.0}, step=3)
    with pytest.warns(RuntimeWarning, match=r"step 4 of 'x' is lower than its last step 9") as w:
        run.flush()
    assert len([x for x in w if "lower than" in str(x.message)]) == 1
    run.close()
    x = tracker.read_run(run.id, store=store)["x"].fetch_values()
    assert x.step.tolist() == [0, 1, 2, 3, 3, 4, 4, 5, 6, 7, 8, 9]
    assert x.value.tolist()[3:7] == [3.0, 101.0, 4.0, 100.0]


def test_replaying_a_journal_twice_adds_no_duplicate(store: str) -> None:
    with tracker.init_run(project="p", store=store, system_metrics=False) as run:
        for step in range(500):
            run.log({"x": float(step)}, step=step)
            run.log({"x": float(-step)}, step=step)  # repeats, which a step rule would drop
    before = _points(store)
    assert before == 1000
    st = Store(store)
    for _ in range(2):
        replay_run(st, run.id, from_start=True)
        replay_run(st, run.id)
        sync_store(st)
    assert _points(store) == before
    assert len(tracker.read_run(run.id, store=store)["x"].fetch_values()) == 1000


_KILLED = textwrap.dedent(
    """
    import os, signal, sys, tracker
    store, run_id, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    run = tracker.init_run(project="p", store=store, run_id=run_id, system_metrics=False)
    for step in range(start, start + 300):
        run.log({"x": float(step)}, step=step)
        run.log({"x": float(step) + 0.5}, step=step)
    run.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_sigkill_then_reopen_twice_adds_no_duplicate(store: str, tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(_KILLED)
    for start in (0, 300):
        proc = subprocess.run(
            [PYTHON, str(script), store, "k", str(start)], env=python_env(), capture_output=True
        )
        assert proc.returncode == -signal.SIGKILL
        # Recovered by a read, then opened and closed twice: each replays what it meets.
        assert tracker.read_run("k", store=store).status == "crashed"
        for _ in range(2):
            tracker.init_run(project="p", store=store, run_id="k", system_metrics=False).close()
            assert tracker.read_run("k", store=store).status == "finished"
        assert _points(store) == 2 * (start + 300)
    x = tracker.read_run("k", store=store)["x"].fetch_values()
    assert x.step.tolist() == sorted(list(range(600)) * 2)
    assert x.value[:2].tolist() == [0.0, 0.5]


def _attempt(store: str, resume_from_step: int | None, steps: range, tag: float) -> str:
    run = tracker.init_run(
        project="p",
        store=store,
        run_id="rw",
        resume_from_step=resume_from_step,
        system_metrics=False,
    )
    for step in steps:
        run.log({"loss": tag + step / 1000})  # the run's own counter
    run.close()
    return run.id


def test_resume_from_step_supersedes_later_points_of_earlier_attempts(store: str) -> None:
    _attempt(store, None, range(0, 100), 1.0)  # steps 0-99
    _attempt(store, 50, range(51, 81), 2.0)  # resumed from the step-50 checkpoint
    r = tracker.read_run("rw", store=store)
    loss = r["loss"].fetch_values()
    assert loss.step.tolist() == list(range(81))
    assert np.all(loss.value[:51] < 2) and np.all(loss.value[51:] > 2)  # first, then second
    everything = r["loss"].fetch_values(include_superseded=True)
    assert len(everything) == 100 + 30
    at_51 = everything.value[everything.step == 51].tolist()
    assert at_51 == [1.051, 2.051]  # by step, then write order: nothing lost
    # A second rewind, lower than the first: both earlier attempts are cut there.
    _attempt(store, 30, range(31, 41), 3.0)
    r = tracker.read_run("rw", store=store)
    loss = r["loss"].fetch_values()
    assert loss.step.tolist() == list(range(41))
    assert np.all(loss.value[:31] < 2) and np.all(loss.value[31:] > 3)
    assert len(r["loss"].fetch_values(include_superseded=True)) == 140
    # Downsampling, aggregates and the latest value read the default view.
    b = r["loss"].fetch_values(buckets=4)
    assert int(b.count.sum()) == 41 and float(b.max.max()) < 4
    assert len(r["loss"].fetch_values(aggregate="mean")) == 41
    assert r["loss"].fetch() == pytest.approx(3.040)


def test_a_resumed_run_continues_its_counter_after_the_rewind_step(store: str) -> None:
    _attempt(store, None, range(0, 10), 1.0)
    run = tracker.init_run(
        project="p", store=store, run_id="rw", resume_from_step=4, system_metrics=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # steps after the rewind are not "lower"
        run.log({"loss": 9.0}, step=5)
        run.log({"loss": 9.0})
        run.flush()
    run.close()
    assert tracker.read_run("rw", store=store)["loss"].fetch_values().step.tolist()[-2:] == [5, 6]


def test_system_metrics_are_not_rewound(store: str) -> None:
    run = tracker.init_run(project="p", store=store, run_id="sysrw", system_metrics=False)
    for i in range(20):
        run._log_system({"sys/cpu": float(i)})
    run.close()
    again = tracker.init_run(
        project="p", store=store, run_id="sysrw", resume_from_step=3, system_metrics=False
    )
    again._log_system({"sys/cpu": 99.0})
    again.close()
    cpu = tracker.read_run("sysrw", store=store)["sys/cpu"].fetch_values()
    assert cpu.step.tolist() == list(range(21)) and cpu.value[-1] == 99.0


def test_resume_from_step_is_checked(store: str) -> None:
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="resume_from_step"):
            tracker.init_run(project="p", store=store, resume_from_step=bad)
    with pytest.raises(ValueError, match="resume='never'"):
        tracker.init_run(project="p", store=store, resume_from_step=3, resume="never")


def test_a_crashed_attempt_then_a_rewind(store: str, tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(_KILLED)
    proc = subprocess.run(
        [PYTHON, str(script), store, "elastic", "0"], env=python_env(), capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL
    # What an elastic restart does: every rank resumes from the last checkpoint.
    run = tracker.init_run(
        project="p", store=store, run_id="elastic", resume_from_step=199, system_metrics=False
    )
    for step in range(200, 250):
        run.log({"x": 7.0}, step=step)
    run.close()
    x = tracker.read_run("elastic", store=store)["x"].fetch_values()
    assert x.step.tolist() == sorted(list(range(200)) * 2) + list(range(200, 250))
    assert os.path.isdir(Path(store) / "journal" / "elastic")
