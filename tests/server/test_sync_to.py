"""``tracker sync --to URL``: uploading a directory store's runs to a real server process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tracker
from tests.conftest import PYTHON, python_env
from tracker.cli import main
from tracker.core.stores import open_store

from .conftest import ServerProcess, make_token, token_env


def _local_runs(store: Path) -> dict[str, str]:
    """A (parent, fork child), an offline run, a rewound run, and a big run."""
    s = str(store)
    a = tracker.init_run("vision", store=s, tags=["base"], config={"lr": 0.1}, system_metrics=False)
    for i in range(300):
        a.log({"loss": 1.0 / (i + 1), "acc": i / 300})
    a.log({"phase": "warmup"}, step=5)
    a["model/name"] = "resnet"
    a.close()
    child = tracker.init_run(
        "vision", store=s, fork_from=(a.id, 100), tags=["fork"], system_metrics=False
    )
    for i in range(101, 200):
        child.log({"loss": 2.0 / i}, step=i)
    child.close()
    off = tracker.init_run("vision", store=s, mode="offline", system_metrics=False)
    for i in range(120):
        off.log({"loss": float(i)})
    off["note"] = "offline"
    off.close()
    # Resumed from a checkpoint: two attempts, the second rewinding to step 20.
    rew = tracker.init_run("vision", store=s, system_metrics=False)
    for i in range(50):
        rew.log({"x": float(i)}, step=i)
    rew.close()
    rew = tracker.init_run(
        "vision", store=s, run_id=rew.id, resume_from_step=20, system_metrics=False
    )
    for i in range(21, 40):
        rew.log({"x": -float(i)}, step=i)
    rew.close()
    big = tracker.init_run("vision", store=s, system_metrics=False)
    keys = [f"m/{k}" for k in range(40)]
    rows = np.random.default_rng(0).random((25_000, len(keys)))
    for i in range(len(rows)):
        big.log(dict(zip(keys, rows[i].tolist(), strict=True)), step=i)
    big.close()
    return {"parent": a.id, "child": child.id, "offline": off.id, "rewound": rew.id, "big": big.id}


def _same_run(run_id: str, local: str, url: str) -> int:
    """Assert the run reads the same through the server as from the local store;
    return the points compared."""
    mine = tracker.read_run(run_id, store=local)
    there = tracker.read_run(run_id, store=url)
    assert there.project == mine.project and there.name == mine.name
    assert there.status == mine.status
    assert there.parent == mine.parent
    assert there.tags == mine.tags
    assert there.fields() == mine.fields()
    assert there.created_at == mine.created_at and there.ended_at == mine.ended_at
    assert sorted(s["path"] for s in there.series_summary()) == sorted(
        s["path"] for s in mine.series_summary()
    )
    points = 0
    for path, rank in mine.series_keys():
        for superseded in (False, True):
            a = mine[path].fetch_values(rank=rank, include_superseded=superseded)
            b = there[path].fetch_values(rank=rank, include_superseded=superseded)
            assert list(a.step) == list(b.step), path
            assert list(a.value) == list(b.value), path
            assert list(a.timestamp) == list(b.timestamp), path
            points += len(a)
    return points


def _sync(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, "-m", "tracker.cli", "sync", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Small requests: the big run takes many, so a test can stop it in the middle.
        env=python_env(TRACKER_QUIET="1", TRACKER_UPLOAD_BATCH_BYTES=str(256 * 1024)),
    )


def test_sync_to_uploads_resumes_and_is_idempotent(
    server: ServerProcess, tmp_path: Path, spool: Path
) -> None:
    local = tmp_path / "local"
    ids = _local_runs(local)
    token = make_token(server.store, "vision")
    with token_env(token):
        # Killed mid-way through the big run (the last one: oldest first).
        proc = _sync(["--to", server.url, "--store", str(local)])
        backend = open_store(server.store, readonly=True, create=False)
        big_size = sum(p.stat().st_size for p in (local / "journal" / ids["big"]).glob("*.jnl"))
        deadline = time.monotonic() + 120
        killed = False
        while time.monotonic() < deadline and proc.poll() is None:
            got = sum(backend.applied_offsets(ids["big"]).values())
            if 0 < got < big_size:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
        proc.wait(60)
        assert killed, "the upload finished before it could be interrupted"
        partial = sum(backend.applied_offsets(ids["big"]).values())
        assert 0 < partial < big_size

        # Run again: it resumes.
        out = CliRunner().invoke(main, ["sync", "--to", server.url, "--store", str(local)])
        assert out.exit_code == 0, out.output
        assert "uploaded" in out.stdout and len(out.stdout.strip().splitlines()) == 1
        assert sum(backend.applied_offsets(ids["big"]).values()) == big_size

        # Every run reads back as it is stored locally, every point once.
        for name, rid in ids.items():
            points = _same_run(rid, str(local), server.url)
            assert points > 0, name
        big = tracker.read_run(ids["big"], store=server.url)
        assert len(big["m/7"].fetch_values()) == 25_000
        child = tracker.read_run(ids["child"], store=server.url)
        assert child.parent == (ids["parent"], 100)
        assert list(child["loss"].fetch_values().step) == [*range(101), *range(101, 200)]

        # Once more: nothing to send.
        before = {rid: backend.applied_offsets(rid) for rid in ids.values()}
        out = CliRunner().invoke(main, ["sync", "--to", server.url, "--store", str(local)])
        assert out.exit_code == 0, out.output
        assert out.stdout.startswith("uploaded 0 run(s)") and "5 already there" in out.stdout
        assert {rid: backend.applied_offsets(rid) for rid in ids.values()} == before
        assert _same_run(ids["big"], str(local), server.url) == 2 * 40 * 25_000


def test_sync_to_reports_other_projects_per_run(
    server: ServerProcess, tmp_path: Path, spool: Path
) -> None:
    local = str(tmp_path / "local")
    mine = tracker.init_run("vision", store=local, system_metrics=False)
    mine.log({"a": 1.0})
    mine.close()
    other = tracker.init_run("audio", store=local, system_metrics=False)
    other.log({"a": 2.0})
    other.close()
    with token_env(make_token(server.store, "vision")):
        out = CliRunner().invoke(main, ["sync", "--to", server.url, "--store", local])
        assert out.exit_code == 1
        assert "uploaded 1 run(s)" in out.stdout and "1 not uploaded" in out.stdout
        assert f"run {other.id} is of project 'audio'" in out.stderr
        assert tracker.read_run(mine.id, store=server.url).status == "finished"
        # --project and RUN select runs.
        out = CliRunner().invoke(
            main, ["sync", "--to", server.url, "--store", local, "--project", "vision"]
        )
        assert out.exit_code == 0, out.output
        assert "1 already there" in out.stdout
        out = CliRunner().invoke(main, ["sync", "--to", server.url, "--store", local, "nope"])
        assert out.exit_code == 1 and "run nope: not in" in out.stderr


def test_sync_to_without_a_journal_uploads_from_the_store(
    server: ServerProcess, tmp_path: Path, spool: Path
) -> None:
    """A run whose journal is gone is made into batches from what the store holds."""
    local = tmp_path / "local"
    s = str(local)
    a = tracker.init_run("vision", store=s, tags=["t1", "t2"], config={"lr": 0.5, "on": True})
    for i in range(1000):
        a.log({"loss": 1.0 / (i + 1)}, step=i)
        if i % 100 == 0:
            a.log({"phase": f"p{i}"}, step=i)
    a["nan"] = float("nan")
    a["list"] = [1, 2, 3]
    a.close()
    a2 = tracker.init_run("vision", store=s, run_id=a.id, resume_from_step=500)
    for i in range(501, 600):
        a2.log({"loss": -1.0}, step=i)
    a2.close()
    child = tracker.init_run("vision", store=s, fork_from=(a.id, 300), system_metrics=False)
    child.log({"loss": 7.0}, step=301)
    child.close()
    shutil.rmtree(local / "journal")
    with token_env(make_token(server.store, "vision")):
        args = ["sync", "--to", server.url, "--store", s]
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 0, out.output
        assert "uploaded 2 run(s)" in out.stdout
        for rid in (a.id, child.id):
            assert _same_run(rid, s, server.url) > 0
        there = tracker.read_run(a.id, store=server.url)
        assert len(there["loss"].fetch_values(include_superseded=True)) == 1099
        assert np.isnan(there["nan"].fetch())
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 0 and "2 already there" in out.stdout, out.output
        assert _same_run(a.id, s, server.url) > 0


def test_sync_to_needs_a_server_address(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["sync", "--to", str(tmp_path), "--store", str(tmp_path)])
    assert out.exit_code == 2 and "--to" in out.output
    out = CliRunner().invoke(main, ["sync", "--store", str(tmp_path), "somerun"])
    assert out.exit_code == 2 and "--to" in out.output
    assert os.environ.get("TRACKER_API_TOKEN") is None


# -- tracker doctor --store URL: clock skew and the spool's backlog -------------------------


def _check(checks: list, name: str):
    found = [c for c in checks if c.name == name]
    assert len(found) == 1, [c.name for c in checks]
    return found[0]


def test_doctor_names_the_clock_skew(
    server: ServerProcess, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracker.core.doctor import check_store

    with token_env(make_token(server.store, "vision")):
        clock = _check(check_store(server.url), "clock")
        assert clock.ok and "s " in clock.detail, clock.detail
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() - 30.0)  # this machine 30 s late
        try:
            clock = _check(check_store(server.url), "clock")
        finally:
            monkeypatch.setattr(time, "time", real)
        assert not clock.ok
        assert "30." in clock.detail and "ahead of this machine's" in clock.detail
        assert "more than 5 s" in clock.detail


def test_doctor_counts_the_spool_backlog_and_sync_sends_it(
    server: ServerProcess, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracker.core.doctor import check_store

    monkeypatch.setenv("TRACKER_SERVER_CLOSE_TIMEOUT", "1")
    with token_env(make_token(server.store, "vision")):
        assert _check(check_store(server.url), "spool backlog").ok
        run = tracker.init_run("vision", store=server.url, system_metrics=False)
        run.log({"x": 1.0})
        run.flush()
        server.kill()
        for i in range(500):
            run.log({"x": float(i)})
        with pytest.warns(RuntimeWarning, match="tracker sync --store"):
            run.close()
        server.start()
        out = CliRunner().invoke(main, ["doctor", "--store", server.url])
        assert out.exit_code == 1
        backlog = _check(check_store(server.url), "spool backlog")
        assert not backlog.ok
        assert f"1 run(s) in the spool {spool}" in backlog.detail
        assert f"{run.id} (" in backlog.detail and " bytes" in backlog.detail
        assert f"`tracker sync --store {server.url}` sends them" in backlog.detail
        out = CliRunner().invoke(main, ["sync", "--store", server.url])
        assert out.exit_code == 0, out.output
        assert not list(spool.rglob(f"{run.id}/*.jnl"))  # sent: the spool lets it go
        checks = check_store(server.url)
        assert _check(checks, "spool backlog").ok
        assert _check(checks, "running runs").ok
        out = CliRunner().invoke(main, ["doctor", "--store", server.url])
        assert out.exit_code == 0, out.output
        assert "spool backlog" in out.stdout and "clock" in out.stdout
    assert len(tracker.read_run(run.id, store=server.store)["x"].fetch_values()) == 501


def test_sync_to_says_when_a_journal_lacks_part_of_a_run(
    server: ServerProcess, tmp_path: Path, spool: Path
) -> None:
    local = tmp_path / "local"
    run = tracker.init_run("vision", store=str(local), system_metrics=False)
    run.log({"x": 1.0})
    run.close()
    run = tracker.init_run("vision", store=str(local), run_id=run.id, system_metrics=False)
    run.log({"x": 2.0})
    run.close()
    segments = sorted((local / "journal" / run.id).glob("*.jnl"))
    assert len(segments) == 2
    segments[1].unlink()  # the second attempt's journal, deleted by hand
    with token_env(make_token(server.store, "vision")):
        out = CliRunner().invoke(main, ["sync", "--to", server.url, "--store", str(local)])
    assert out.exit_code == 1
    assert "the journal lacks part of the run" in out.stderr and "'x' rank 0: 1 of 2" in out.stderr


def test_sync_to_records_a_crashed_run_as_crashed(
    server: ServerProcess, tmp_path: Path, spool: Path
) -> None:
    local = tmp_path / "local"
    script = (
        "import os, tracker\n"
        f"run = tracker.init_run('vision', store={str(local)!r}, system_metrics=False)\n"
        "for i in range(100):\n"
        "    run.log({'x': float(i)})\n"
        "run.flush()\n"
        "print(run.id, flush=True)\n"
        "os._exit(0)\n"
    )
    done = subprocess.run(
        [PYTHON, "-c", script], capture_output=True, text=True, env=python_env(), check=True
    )
    run_id = done.stdout.strip()
    row = open_store(str(local), readonly=True, create=False).run(run_id)
    assert row is not None and row["status"] == "running"
    with token_env(make_token(server.store, "vision")):
        out = CliRunner().invoke(main, ["sync", "--to", server.url, "--store", str(local)])
        assert out.exit_code == 0, out.output
        assert open_store(server.store, readonly=True).run(run_id)["status"] == "crashed"
        assert _same_run(run_id, str(local), server.url) == 2 * 100
        assert tracker.read_run(run_id, store=server.url).status == "crashed"


def test_sync_to_rides_out_a_server_restart(
    server: ServerProcess, tmp_path: Path, spool: Path
) -> None:
    local = tmp_path / "local"
    big = tracker.init_run("vision", store=str(local), system_metrics=False)
    keys = [f"m/{k}" for k in range(40)]
    row = dict.fromkeys(keys, 0.5)
    for i in range(25_000):
        big.log(row, step=i)
    big.close()
    size = sum(p.stat().st_size for p in (local / "journal" / big.id).glob("*.jnl"))
    backend = open_store(server.store, readonly=True, create=False)
    with token_env(make_token(server.store, "vision")):
        proc = _sync(["--to", server.url, "--store", str(local)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if 0 < sum(backend.applied_offsets(big.id).values()) < size:
                # Hold the upload where it is (a loaded machine could otherwise finish it
                # before the server goes), then take the server away under it.
                os.kill(proc.pid, signal.SIGSTOP)
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the upload finished before the server went away"
        server.kill()
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(1.0)  # the length of the outage, not a synchronisation
        server.start()
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        assert sum(backend.applied_offsets(big.id).values()) == size
        assert _same_run(big.id, str(local), server.url) == 2 * 40 * 25_000
