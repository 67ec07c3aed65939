"""A killed run's duration: it ends when it was last seen alive, not when it started.

The writer's heartbeat lags by up to its interval, and an offline run (or a writer kept
busy by a full queue) writes none: a SIGKILLed run used to read as lasting 0.0 s though
its points spanned half a minute.
"""

from __future__ import annotations

import subprocess
import textwrap

import pytest

import tracker

from ..conftest import PYTHON, python_env

_KILLED = textwrap.dedent(
    """
    import os, signal, sys, time, tracker
    run = tracker.init_run(project="k", store=sys.argv[1], run_id="killedrun1",
                           mode=sys.argv[2], system_metrics=False, quiet=True)
    start = time.time()
    for i in range(31):  # points stamped over 30 s, logged in a moment
        run["loss"].append(1.0 / (i + 1), step=i, timestamp=start + i)
    run.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("mode", ["async", "offline"])
def test_a_killed_run_ends_at_its_last_point(tmp_path, mode: str) -> None:
    store = str(tmp_path / "store")
    proc = subprocess.run(
        [PYTHON, "-c", _KILLED, store, mode], env=python_env(), capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr.decode()
    run = tracker.read_run("killedrun1", store=store)  # recovers it: crashed
    assert run.status == "crashed"
    assert run.ended_at is not None
    assert run.ended_at - run.created_at == pytest.approx(30.0, abs=2.0)
