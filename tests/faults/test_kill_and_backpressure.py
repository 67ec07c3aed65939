"""SIGKILL at random moments of a loop that logs as fast as Python can.

The contract: after a SIGKILL at most the last flush interval (about a second) of what
was logged is missing, whatever the loop does. Without back-pressure a tight loop built
a queue of seconds (millions of points) that a kill lost whole.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tracker

from ..conftest import PYTHON, python_env

# Each point's value is the wall-clock time it was logged at, so what a kill lost can
# be measured against the moment of the kill.
_TIGHT = textwrap.dedent(
    """
    import sys, time, tracker
    run = tracker.init_run(project="kill", store=sys.argv[1], run_id=sys.argv[2],
                           system_metrics=False)
    print("ready", flush=True)
    now = time.time
    step = 0
    while True:
        t = now()
        run.log({"t": t, "a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, step=step)
        step += 1
    """
)

# The bound the contract states, plus what a loaded CI machine adds between the kill
# being decided and the signal landing.
_LOSS_BOUND_S = 1.0
_SLACK_S = 0.25


@pytest.mark.slow
def test_sigkill_of_a_tight_loop_loses_at_most_the_flush_interval(
    store: str, tmp_path: Path
) -> None:
    script = tmp_path / "tight.py"
    script.write_text(_TIGHT)
    rng = random.Random(1234)
    losses = []
    for trial in range(6):
        run_id = f"kill-{trial}"
        proc = subprocess.Popen(
            [PYTHON, str(script), store, run_id],
            env=python_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(1.5, 4.0))
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        r = tracker.read_run(run_id, store=store)
        assert r.status == "crashed"
        t = r["t"].fetch_values()
        # Every step up to the last one kept is there: a kill cuts the tail, no holes.
        assert t.step.tolist() == list(range(len(t)))
        assert len(r["d"].fetch_values()) == len(t)
        lost = killed_at - float(t.value[-1])
        losses.append(lost)
        assert lost <= _LOSS_BOUND_S + _SLACK_S, (trial, lost, len(t))
    assert np.median(losses) < _LOSS_BOUND_S


def test_back_pressure_makes_a_fast_producer_wait_for_the_writer(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Limits low enough that even a producer slowed by a busy CI machine outruns them.
    from tracker.core import writer as writer_module

    monkeypatch.setattr(writer_module, "_INITIAL_MAX_QUEUE", 200)
    monkeypatch.setattr(writer_module, "_FLOOR_POINTS", 1000)
    monkeypatch.setattr(writer_module, "_SHARE_OF_INTERVAL", 0.002)
    run = tracker.init_run(project="bp", store=store, system_metrics=False)
    writer = run._writer
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 2.0:
        for _ in range(1000):
            run.log({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0})
            n += 1
        # Never more queued than the limit the writer measured, plus one call.
        assert len(writer.queue) <= writer.max_queue + 1
    assert writer.waits, "a loop logging as fast as it can must have waited at least once"
    run.close()
    r = tracker.read_run(run.id, store=store)
    assert len(r["e"].fetch_values()) == n


def test_an_ordinary_loop_never_waits(store: str) -> None:
    run = tracker.init_run(project="bp", store=store, system_metrics=False)
    for step in range(2000):
        deadline = time.perf_counter() + 0.0005  # half a millisecond of "training"
        while time.perf_counter() < deadline:
            pass
        run.log({"loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
    assert list(run._writer.waits) == []
    run.close()
