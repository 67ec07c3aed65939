"""Faults under real load: the server killed in the middle of a torchrun job, PostgreSQL
restarted under a server's clients, and what the training thread pays per store kind.

Everything here is real: ``tracker server`` subprocesses, torchrun (gloo on CPU), a
throwaway PostgreSQL cluster of this module's own (it is restarted here, so it is not
the session's shared one). Events are ordered by files and collectives, never by sleeping;
waits poll for a condition with a deadline.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tracker
from tracker.core.stores import open_store
from tracker.core.stores.http import ServerError

from ..conftest import python_env
from . import postgres_cluster
from .conftest import ServerProcess, make_token, token_env

JOB = Path(__file__).resolve().parent.parent / "distributed" / "scripts" / "server_job.py"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def assert_every_step_once(run: Any, path: str, rank: int, steps: int) -> None:
    values = run[path].fetch_values(rank=rank, include_superseded=True)
    assert values.step.tolist() == list(range(steps)), (path, rank, len(values))


# -- (a) the server SIGKILLed for 10 s in the middle of a 2-rank torchrun job ----------------


OUTAGE_S = 10.0


@pytest.mark.distributed
@pytest.mark.slow
def test_server_killed_for_10s_mid_torchrun_job(
    server: ServerProcess, spool: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch", reason="torch is not installed")
    token = make_token(server.store, "faults")
    control = tmp_path / "control"
    control.mkdir()
    out, err = tmp_path / "job.out", tmp_path / "job.err"
    env = python_env(
        OMP_NUM_THREADS="1",
        TRACKER_API_TOKEN=token,
        TRACKER_SERVER_CLOSE_TIMEOUT="120",
        TRACKER_RANK_CLOSE_TIMEOUT="60",
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(JOB), "--store", server.url, "--control", str(control),
           "--before", "50", "--after", "100"]  # fmt: skip
    with open(out, "wb") as fo, open(err, "wb") as fe:
        job = subprocess.Popen(cmd, env=env, stdout=fo, stderr=fe)
    try:

        def alive(path: Path) -> Callable[[], bool]:
            def check() -> bool:
                if job.poll() is not None:
                    raise AssertionError(f"the job ended early: {err.read_text()[-3000:]}")
                return path.exists()

            return check

        wait_until(alive(control / "logged"), 180, "the job's first 50 steps on the server")
        server.kill()
        killed_at = time.monotonic()
        (control / "killed").touch()
        # The outage lasts OUTAGE_S; the job trains on (it must not end meanwhile).
        while time.monotonic() - killed_at < OUTAGE_S:
            alive(control / "never")()
            time.sleep(0.1)
        server.start()  # the same port, the same store
        (control / "restarted").touch()
        assert job.wait(300) == 0, err.read_text()[-3000:]
    finally:
        if job.poll() is None:
            job.kill()
            job.wait(10)

    text = out.read_text()
    (run_id,) = re.findall(r"RUN_ID (\S+)", text)
    away = int(re.search(r"AWAY (\d+)", text).group(1))  # type: ignore[union-attr]
    back = int(re.search(r"BACK (\d+)", text).group(1))  # type: ignore[union-attr]
    steps = int(re.search(r"STEPS (\d+)", text).group(1))  # type: ignore[union-attr]
    # Steps were logged before the kill, while the server was dead, and after it came back.
    assert 50 <= away < back < steps, (away, back, steps)
    # The writer felt the outage (and said so once), and caught up afterwards.
    assert "could not apply to the store" in err.read_text()

    with token_env(token):
        r = tracker.read_run(run_id, store=server.url)
        assert r.status == "finished"
        assert r.ranks() == [0, 1]
        for rank in (0, 1):
            assert_every_step_once(r, "train/loss", rank, steps)
            assert_every_step_once(r, "train/grad_sum", rank, steps)
            loss = r["train/loss"].fetch_values(rank=rank)
            assert loss.value.tolist() == pytest.approx(
                [1.0 / (s + 1) + rank for s in range(steps)]
            )
            grad = r["train/grad_sum"].fetch_values(rank=rank)
            assert grad.value.tolist() == [float(2 * s + 1) for s in range(steps)]
    # The server's own store says the same, and the spool let the run go.
    direct = tracker.read_run(run_id, store=server.store)
    assert len(direct["train/loss"].fetch_values(rank=1, include_superseded=True)) == steps
    assert not list(spool.rglob(f"{run_id}/*.jnl"))


# -- (b) PostgreSQL restarted while clients log through a server under load ------------------


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[tuple[str, Path, Path]]:
    """A cluster of this module's own: (URL of its postgres database, bin dir, data dir)."""
    pytest.importorskip("psycopg")
    import psycopg

    with postgres_cluster.cluster() as url:
        bindir, _ = postgres_cluster.find_binaries()
        assert bindir is not None
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        assert row is not None
        yield url, bindir, Path(row[0])


def restart_postgres(bindir: Path, data: Path) -> None:
    """``pg_ctl restart -m fast`` as the server's user; returns once it accepts again."""
    postgres_cluster._run(
        [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data.parent / "server.log"),
         "-m", "fast", "-w", "-t", "60", "restart"]
    )  # fmt: skip


CLIENT = """
import sys, time
from pathlib import Path
import tracker

url, control, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
keys = [f"m/{i}" for i in range(10)]
run = tracker.init_run("load", store=url, system_metrics=False)
print("RUN_ID", run.id, flush=True)
step = 0
stop = control / "stop"
while True:
    run.log({k: float(step + i) for i, k in enumerate(keys)}, step=step)
    step += 1
    if step == 2000:
        run.flush()  # on the server (and in PostgreSQL) before the restart
        (control / f"ready-{name}").touch()
    if step % 500 == 0:
        if stop.exists():
            break
        time.sleep(0.001)  # lets the writer thread have the GIL now and then
run.close()
print("STEPS", step, flush=True)
"""


@pytest.mark.slow
def test_postgres_restarted_under_load_every_point_once(
    own_cluster: tuple[str, Path, Path],
    tmp_path: Path,
    spool: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg

    admin_url, bindir, data = own_cluster
    name = f"tracker_faults_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("TRACKER_PG_JOURNAL_DIR", str(tmp_path / "pg-journals"))
    store_url = postgres_cluster.database_url(admin_url, name)
    server = ServerProcess(store_url, tmp_path / "pg-server.log")
    server.start()
    control = tmp_path / "control"
    control.mkdir()
    token = make_token(store_url, "load")
    env = python_env(TRACKER_API_TOKEN=token, TRACKER_SERVER_CLOSE_TIMEOUT="120")
    clients = []
    try:
        for i in range(2):
            o = open(tmp_path / f"client{i}.out", "wb")
            e = open(tmp_path / f"client{i}.err", "wb")
            clients.append(
                subprocess.Popen(
                    [sys.executable, "-c", CLIENT, server.url, str(control), str(i)],
                    env=env,
                    stdout=o,
                    stderr=e,
                )
            )
            o.close()
            e.close()

        def ready() -> bool:
            for i, c in enumerate(clients):
                if c.poll() is not None:
                    raise AssertionError((tmp_path / f"client{i}.err").read_text()[-3000:])
            return all((control / f"ready-{i}").exists() for i in range(2))

        wait_until(ready, 120, "both clients' first 2,000 steps on the server")
        postmaster = Path(data) / "postmaster.pid"
        old_pid = postmaster.read_text().split()[0]
        restart_postgres(bindir, data)
        new_pid = postmaster.read_text().split()[0]
        # The server's connections died with the old postmaster: wait until it has
        # applied batches again (each client's applied offset moves past its value now).
        run_ids = [
            re.findall(r"RUN_ID (\S+)", (tmp_path / f"client{i}.out").read_text())[0]
            for i in range(2)
        ]
        with token_env(token):
            # Each of the server's threads fails its first request after the restart
            # (a 503: its connection died with the old postmaster), reads included.
            opened: list[Any] = []

            def open_reader() -> bool:
                try:
                    opened.append(open_store(server.url, readonly=True))
                except ServerError as exc:
                    assert exc.status == 503, exc
                return bool(opened)

            wait_until(open_reader, 120, "the server to answer after the restart")
            reader = opened[0]
            try:

                def applied(rid: str) -> int | None:
                    try:  # the first request on each of the server's threads may get a 503
                        return sum(reader.applied_offsets(rid).values())
                    except ServerError as exc:
                        assert exc.status == 503, exc
                        return None

                before: dict[str, int] = {}

                def read_before() -> bool:
                    for rid in run_ids:
                        if rid not in before and (n := applied(rid)) is not None:
                            before[rid] = n
                    return len(before) == len(run_ids)

                def applied_again() -> bool:
                    return all((applied(rid) or 0) > before[rid] for rid in run_ids)

                wait_until(read_before, 120, "the server to answer after the restart")
                wait_until(applied_again, 120, "the server to apply batches after the restart")
            finally:
                reader.close()
        (control / "stop").touch()
        for i, c in enumerate(clients):
            assert c.wait(240) == 0, (tmp_path / f"client{i}.err").read_text()[-3000:]
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait(10)
        server.stop()

    # The restart happened under the clients (a new postmaster; the server's connections
    # died with the old one, whether or not a request of the moment failed on them).
    assert new_pid != old_pid
    for i in range(2):
        text = (tmp_path / f"client{i}.out").read_text()
        (run_id,) = re.findall(r"RUN_ID (\S+)", text)
        steps = int(re.search(r"STEPS (\d+)", text).group(1))  # type: ignore[union-attr]
        assert steps > 2000
        r = tracker.read_run(run_id, store=store_url)
        assert r.status == "finished"
        for k in range(10):
            assert_every_step_once(r, f"m/{k}", 0, steps)
        assert r["m/3"].fetch_values().value.tolist() == [float(s + 3) for s in range(steps)]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- (c) the training thread's cost of run.log does not depend on the store kind --------------


@pytest.mark.slow
def test_log_cost_is_the_same_for_a_directory_and_a_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    keys = [f"train/metric_{i}" for i in range(10)]
    pool = [{k: float(j + i) for i, k in enumerate(keys)} for j in range(1000)]
    token = make_token(server.store, "cost")
    with token_env(token):
        runs = {
            "directory": tracker.init_run(
                "cost", store=str(tmp_path / "dir"), system_metrics=False
            ),
            "server": tracker.init_run("cost", store=server.url, system_metrics=False),
        }
        costs: dict[str, list[float]] = {name: [] for name in runs}
        step = 0
        perf = time.perf_counter
        for _block in range(10):  # interleaved blocks: load drift hits both alike
            for name, run in runs.items():
                log = run.log
                timed = costs[name]
                for j in range(2000):
                    d = pool[j % 1000]
                    t0 = perf()
                    log(d, step=step + j)
                    timed.append(perf() - t0)
            step += 2000
        for run in runs.values():
            run.close()
    median = {name: statistics.median(c) for name, c in costs.items()}
    # Loose on purpose (a loaded 2-core machine); benchmarks/server_ingest.py has the figures.
    assert median["server"] < 3 * median["directory"], median
    assert median["directory"] < 3 * median["server"], median
    with token_env(token):
        r = tracker.read_run(runs["server"].id, store=server.url)
        assert len(r["train/metric_0"].fetch_values()) == 20000


# -- (d) a server that hangs (accepts, never answers) never holds up run.log -----------------


def test_a_hung_server_never_holds_up_run_log(server: ServerProcess, spool: Path) -> None:
    """The writer thread only journals; a thread of its own sends from the spool. With
    the server stopped (SIGSTOP: the kernel still accepts its connections, nothing
    answers), the training loop logs on at full speed, and everything arrives once the
    server goes on."""
    import os
    import signal

    token = make_token(server.store, "vision")
    assert server.proc is not None
    with token_env(token):
        run = tracker.init_run("vision", store=server.url, system_metrics=False, quiet=True)
        run.log({"x": 0.0}, step=0)
        run.flush()
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            worst = 0.0
            steps = 300_000
            for step in range(1, steps):
                started = time.perf_counter()
                run.log({"x": float(step)}, step=step)
                worst = max(worst, time.perf_counter() - started)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        run.close()
        # Back-pressure never waited on the network: the loop ran at journaling speed.
        assert worst < 1.0, worst
        r = tracker.read_run(run.id, store=server.url)
        assert r.status == "finished"
        assert_every_step_once(r, "x", 0, steps)
