"""One run, one writer: a second live process is refused; a dead one is no obstacle.

Before the fix two processes on one run_id both opened it, both started at step 0,
half the points were lost and a SIGKILL was reported as finished.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import textwrap
import threading
from pathlib import Path

import pytest

import tracker

from ..conftest import PYTHON, python_env

_HOLDER = textwrap.dedent(
    """
    import sys, time, tracker
    run = tracker.init_run(project="p", store=sys.argv[1], run_id="shared", system_metrics=False)
    for step in range(1000):
        run.log({"x": float(step)}, step=step)
    run.flush()
    print("holding", flush=True)
    time.sleep(120)
    """
)


def _start_holder(store: str, tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    proc = subprocess.Popen(
        [PYTHON, str(script), store],
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "holding", proc.stderr.read()
    return proc


def test_a_second_live_writer_is_refused_with_the_holder_named(store: str, tmp_path: Path) -> None:
    holder = _start_holder(store, tmp_path)
    try:
        with pytest.raises(tracker.RunInUseError) as info:
            tracker.init_run(project="p", store=store, run_id="shared", system_metrics=False)
        assert info.value.holder == f"{socket.gethostname()}:{holder.pid}"
        assert str(holder.pid) in str(info.value)
        assert isinstance(info.value, tracker.RunExistsError)  # callers catching it still do
        # The refused attempt changed nothing: the holder's run is still live.
        assert tracker.read_run("shared", store=store).status == "running"
    finally:
        holder.kill()
        holder.wait(30)
    # A dead holder is no obstacle (what an elastic restart meets): the run continues.
    run = tracker.init_run(project="p", store=store, run_id="shared", system_metrics=False)
    for step in range(1000, 2000):
        run.log({"x": float(step)}, step=step)
    run.close()
    r = tracker.read_run("shared", store=store)
    assert r.status == "finished"
    assert r["x"].fetch_values().step.tolist() == list(range(2000))


def test_a_second_open_in_one_process_gets_the_open_run(store: str) -> None:
    # What a re-created callback or an unpickled logger does: one writer, one counter.
    first = tracker.init_run(project="p", store=store, run_id="twice", system_metrics=False)
    second = tracker.init_run(
        project="p", store=store, run_id="twice", tags=["again"], system_metrics=False
    )
    assert second is first
    with pytest.raises(tracker.RunExistsError, match="resume='never'"):
        tracker.init_run(
            project="p", store=store, run_id="twice", resume="never", system_metrics=False
        )
    for _ in range(10):
        first.log({"x": 1.0})
        second.log({"x": 1.0})
    second.close()
    r = tracker.read_run("twice", store=store)
    assert r["x"].fetch_values().step.tolist() == list(range(20))
    assert "again" in r.tags


def test_a_killed_writer_reads_as_crashed_not_finished(store: str, tmp_path: Path) -> None:
    holder = _start_holder(store, tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    r = tracker.read_run("shared", store=store)
    assert r.status == "crashed"
    assert len(r["x"].fetch_values()) == 1000


def test_threads_sharing_a_run_never_share_an_implicit_step(store: str) -> None:
    run = tracker.init_run(project="p", store=store, system_metrics=False)
    n_threads, per_thread = 8, 20_000
    barrier = threading.Barrier(n_threads)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            run.log({"k": 1.0})

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.close()
    steps = tracker.read_run(run.id, store=store)["k"].fetch_values().step
    assert len(steps) == n_threads * per_thread
    assert sorted(steps.tolist()) == list(range(n_threads * per_thread))


def test_explicit_steps_past_the_counter_move_it_on(store: str) -> None:
    run = tracker.init_run(project="p", store=store, system_metrics=False)
    for _ in range(5):
        run.log({"a": 1.0})  # steps 0-4
    run.log({"a": 1.0}, step=100)
    run.log({"a": 1.0})  # 101
    run.log({"b": 1.0}, step=50)  # lower than the counter: the counter stays
    run.log({"a": 1.0})  # 102
    run.close()
    r = tracker.read_run(run.id, store=store)
    assert r["a"].fetch_values().step.tolist() == [0, 1, 2, 3, 4, 100, 101, 102]
