"""SIGTERM that arrives while a run is closing (a launcher stopping the job as its ranks
finish): the close completes, then the process ends as SIGTERM asked."""

from __future__ import annotations

import signal
import subprocess
import textwrap

import tracker

from ..conftest import PYTHON, python_env

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import tracker

    run = tracker.init_run(project="p", store=sys.argv[1], system_metrics=False, quiet=True)
    for step in range(1000):
        run.log({"loss": float(step)}, step=step)
    print(run.id, flush=True)
    writer_close = run._writer.close

    def slow_close(timeout=None):
        # A close that takes a while (a rank waiting to send, a server to answer); the
        # launcher's SIGTERM comes in the middle of it.
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        time.sleep(1.0)
        writer_close(timeout)

    run._writer.close = slow_close
    run.close()
    print("AFTER CLOSE", flush=True)  # never: the deferred SIGTERM ends the process here
    """
)


def test_sigterm_during_close_lets_the_close_finish_then_ends_the_process(store: str) -> None:
    proc = subprocess.run(
        [PYTHON, "-c", SCRIPT, store],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGTERM, proc.stderr[-2000:]
    assert "AFTER CLOSE" not in proc.stdout
    run_id = proc.stdout.split()[0]
    r = tracker.read_run(run_id, store=store)
    assert r.status == "finished"  # the close it was in the middle of, completed
    assert len(r["loss"].fetch_values()) == 1000
