"""Faults of the store itself: a read-only store, damaged chunks, one bad run among many.

What must hold: a store that cannot be written still reads (every reader opens it
read-only and writes nothing, not even the schema); writing to it is a StoreError that
names the path and the fix; a chunk whose bytes were damaged on disk is refused with an
error naming the run, the path, the rank and the chunk, and ``tracker doctor`` finds it;
and no CLI command prints a traceback because of one bad run.

A truly read-only store needs a read-only bind mount (root ignores file permissions):
CI runs as root; elsewhere those tests skip and say why.
"""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import tracker
import tracker.core.replay as replay
from tracker.cli import main
from tracker.core.doctor import check_store
from tracker.core.errors import CorruptDataError, StoreError
from tracker.core.store import Store

from ..conftest import PYTHON, python_env

# Runs made in child processes, so that no connection of this process keeps the
# database's -wal and -shm files: a cleanly closed store has neither, which is the case
# where SQLite cannot read a WAL database in a directory it cannot write.
_BUILD = """
import sys, tracker
run = tracker.init_run("vision", name="done", config={"lr": 0.1, "opt": {"name": "adam"}},
                       tags=["base"], store=sys.argv[1], system_metrics=False)
for i in range(200):
    run.log({"train/loss": 1.0 / (i + 1), "train/acc": i / 200})
run["text/log"].append("epoch one")
run["eval/note"] = "hello"
run.close()
print(run.id)
"""

_CRASH = """
import os, signal, sys, tracker
run = tracker.init_run("vision", name="crash", config={"lr": 0.5}, store=sys.argv[1],
                       system_metrics=False)
for i in range(10):
    run.log({"train/loss": 1.0 - i / 10})
run.flush()
print(run.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

_HOLD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM runs").fetchone()
print("open", flush=True)
sys.stdin.read()
conn.close()
"""


def _child(script: str, store: Path, rc: int = 0) -> str:
    proc = subprocess.run(
        [PYTHON, "-c", script, str(store)],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == rc, proc.stderr
    return proc.stdout.strip()


def _build(store: Path) -> dict[str, str]:
    """A run left running by a SIGKILLed writer, then a finished one; no -wal left."""
    crash = _child(_CRASH, store, rc=-9)
    done = _child(_BUILD, store)
    return {"crash": crash, "done": done}


def _cli(*args: str) -> Result:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """``read_only_view(src)``: ``src`` bind-mounted read-only at a new path."""
    mounted: list[Path] = []

    def make(src: Path) -> Path:
        if os.geteuid() != 0:
            pytest.skip(
                "a truly read-only store needs a read-only bind mount, which needs root "
                "(root ignores file permissions; CI runs as root)"
            )
        view = tmp_path / f"ro{len(mounted)}"
        view.mkdir()
        bind = subprocess.run(["mount", "--bind", str(src), str(view)], capture_output=True)
        if bind.returncode != 0:
            pytest.skip(f"mount --bind failed here: {bind.stderr.decode().strip()}")
        mounted.append(view)
        ro = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(view)], capture_output=True, text=True
        )
        if ro.returncode != 0:
            pytest.skip(f"mount -o remount,ro,bind failed here: {ro.stderr.strip()}")
        assert not os.access(view, os.W_OK)
        return view

    yield make
    for view in reversed(mounted):
        subprocess.run(["umount", "-l", str(view)], check=False)


def _downgrade_to_schema_1(store: Path) -> None:
    """Make ``store`` what tracker with schema 1 wrote: no crc or attempt columns, no
    set_aside or attempts tables."""
    conn = sqlite3.connect(store / "store.db", isolation_level=None)
    try:
        conn.execute("ALTER TABLE chunks DROP COLUMN crc")
        conn.execute("ALTER TABLE chunks DROP COLUMN attempt")
        conn.execute("DROP TABLE IF EXISTS set_aside")
        conn.execute("DROP TABLE IF EXISTS attempts")
        conn.execute("UPDATE meta SET value='1' WHERE key='schema'")
    finally:
        conn.close()


def _schema_of(store: Path) -> tuple[str, bool]:
    conn = sqlite3.connect(f"{(store / 'store.db').as_uri()}?mode=ro", uri=True)
    try:
        (version,) = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        columns = {r[1] for r in conn.execute("PRAGMA table_info(chunks)")}
        return version, "crc" in columns
    finally:
        conn.close()


# -- A. a read-only store --------------------------------------------------------------


@pytest.mark.parametrize("wal_files", [False, True], ids=["closed-cleanly", "wal-and-shm-left"])
def test_read_only_store_reads_as_stored(
    tmp_path: Path, read_only_view: Callable[[Path], Path], wal_files: bool
) -> None:
    src = tmp_path / "store"
    ids = _build(src)
    assert not (src / "store.db-wal").exists() and not (src / "store.db-shm").exists()
    holder = None
    if wal_files:
        # A connection left open in another process: the -wal and -shm files stay (what
        # a store remounted while in use has); SQLite then reads through the existing
        # -shm. Another process, because connections of one process share it in memory.
        holder = subprocess.Popen(
            [PYTHON, "-c", _HOLD, str(src / "store.db")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert (src / "store.db-shm").exists()
    try:
        view = read_only_view(src)
        runs = {r["id"]: r for r in tracker.list_runs(store=view)}
        assert set(runs) == {ids["done"], ids["crash"]}
        assert runs[ids["crash"]]["status"] == "running"  # read as stored: nothing recovered
        assert runs[ids["done"]]["config"] == {"lr": 0.1, "opt": {"name": "adam"}}

        r = tracker.read_run(ids["done"], store=view)
        loss = r["train/loss"].fetch_values()
        assert loss.step.tolist() == list(range(200))
        assert np.allclose(loss.value, [1.0 / (i + 1) for i in range(200)])
        assert r["text/log"].fetch_values().value.tolist() == ["epoch one"]
        assert r["eval/note"].fetch() == "hello" and r.tags == ["base"]
        crashed = tracker.read_run(ids["crash"], store=view)
        assert crashed.status == "running" and len(crashed["train/loss"].fetch_values()) == 10

        for args in (
            ["ls"],
            ["show", ids["done"]],
            ["show", ids["crash"]],
            ["compare", ids["done"], ids["crash"]],
            ["export", ids["done"], "--format", "json"],
        ):
            out = _cli(*args, "--store", str(view))
            assert out.exit_code == 0, (args, out.output)
        doctor = _cli("doctor", "--store", str(view))
        assert doctor.exit_code == 1
        assert "✓ database integrity" in doctor.output
        assert "✓ chunk checksums" in doctor.output
        bad = [line for line in doctor.output.splitlines() if line.startswith("✗ writable")]
        assert len(bad) == 1 and str(view) in bad[0] and "check the permissions" in bad[0]
    finally:
        if holder is not None:
            holder.communicate("", timeout=60)


def test_writing_to_a_read_only_store_is_a_store_error_naming_the_path(
    tmp_path: Path, read_only_view: Callable[[Path], Path]
) -> None:
    src = tmp_path / "store"
    ids = _build(src)
    view = read_only_view(src)
    fix = "check the permissions of"
    with pytest.raises(StoreError, match=fix) as caught:
        tracker.init_run("vision", store=view, system_metrics=False)
    assert str(view) in str(caught.value)
    assert not isinstance(caught.value, sqlite3.Error)
    with pytest.raises(StoreError, match=fix):
        Store(view)
    with pytest.raises(StoreError, match=fix) as caught:
        tracker.init_run("vision", store=view / "new", system_metrics=False)
    assert str(view / "new") in str(caught.value)
    with pytest.raises(StoreError, match="opened read-only"):
        with Store(view, create=False, readonly=True).write():
            pass

    for args in (["sync"], ["gc", "--status", "running", "--yes"]):
        out = _cli(*args, "--store", str(view))
        assert out.exit_code == 1, (args, out.output)
        lines = out.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: cannot")
        assert str(view) in lines[0] and fix in lines[0]
    dry = _cli("gc", "--status", "running", "--dry-run", "--store", str(view))
    assert dry.exit_code == 0 and ids["crash"] in dry.output


def test_a_schema_1_store_is_read_as_it_is(
    tmp_path: Path, read_only_view: Callable[[Path], Path]
) -> None:
    src = tmp_path / "store"
    ids = _build(src)
    # The crashed run would be recovered (a write) by a reader of a writable store.
    assert _cli("sync", "--store", str(src)).exit_code == 0
    _downgrade_to_schema_1(src)
    assert _schema_of(src) == ("1", False)
    # Readers of a writable store do not upgrade it: reading writes nothing.
    assert {r["id"] for r in tracker.list_runs(store=src)} == set(ids.values())
    r = tracker.read_run(ids["done"], store=src)
    assert len(r["train/loss"].fetch_values()) == 200 and r.status == "finished"
    assert _cli("ls", "--store", str(src)).exit_code == 0
    assert _cli("show", ids["done"], "--store", str(src)).exit_code == 0
    doctor = _cli("doctor", "--store", str(src))
    assert doctor.exit_code == 0, doctor.output
    assert "written before checksums" in doctor.output
    assert _schema_of(src) == ("1", False)
    Store(src).close()  # a writer upgrades it
    assert _schema_of(src) == ("3", True)

    _downgrade_to_schema_1(src)
    view = read_only_view(src)
    r = tracker.read_run(ids["done"], store=view)
    assert r["train/loss"].fetch_values().step.tolist() == list(range(200))
    assert r["text/log"].fetch_values().value.tolist() == ["epoch one"]


def test_one_run_that_cannot_be_recovered_does_not_stop_a_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    ids = _build(store)
    real = replay.replay_run

    def replay_run(st: Store, run_id: str, **kwargs: object) -> int:
        if run_id == ids["crash"]:
            raise OSError(5, "Input/output error", str(st.journal_dir(run_id)))
        return real(st, run_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(replay, "replay_run", replay_run)
    with pytest.warns(RuntimeWarning, match=f"run {ids['crash']} .* could not be recovered"):
        runs = {r["id"]: r["status"] for r in tracker.list_runs(store=store)}
    assert runs == {ids["done"]: "finished", ids["crash"]: "running"}
    with pytest.warns(RuntimeWarning, match="Input/output error"):
        assert tracker.read_run(ids["crash"], store=store).status == "running"

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CLI prints them as lines, never raises them
        ls = _cli("ls", "--store", str(store))
        assert ls.exit_code == 0 and ids["done"] in ls.output and ids["crash"] in ls.output
        warned = [line for line in ls.output.splitlines() if line.startswith("warning:")]
        assert len(warned) == 1 and ids["crash"] in warned[0]
        show = _cli("show", ids["crash"], "--store", str(store))
        assert show.exit_code == 0 and "could not be recovered" in show.output
        gc = _cli("gc", "--project", "vision", "--dry-run", "--store", str(store))
        assert gc.exit_code == 0 and ids["crash"] in gc.output and ids["done"] in gc.output
        assert "could not be recovered" in gc.output

    monkeypatch.setattr(replay, "replay_run", real)
    assert tracker.read_run(ids["crash"], store=store).status == "crashed"


def test_sync_reports_a_run_it_cannot_sync_and_syncs_the_others(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = []
    for name in ("good", "bad"):
        offline = tracker.init_run(
            "vision", name=name, mode="offline", store=store, system_metrics=False
        )
        for i in range(5):
            offline.log({"loss": float(i)})
        offline.close()
        ids.append(offline.id)
    good, bad = ids
    real = replay.replay_run

    def replay_run(st: Store, run_id: str, **kwargs: object) -> int:
        if run_id == bad:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return real(st, run_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(replay, "replay_run", replay_run)
    out = _cli("sync", "--store", store)
    assert out.exit_code == 1
    assert f"synced {good}" in out.output
    errors = [line for line in out.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and bad in errors[0] and "malformed" in errors[0]
    assert len(tracker.read_run(good, store=store)["loss"].fetch_values()) == 5


def test_export_of_a_damaged_run_is_a_one_line_error(store: str) -> None:
    run = tracker.init_run("vision", store=store, system_metrics=False)
    run.log({"x": 1.0})
    run.close()
    with sqlite3.connect(Path(store) / "store.db") as conn:
        conn.execute("UPDATE chunks SET n = n + 1")  # every chunk now claims a point more
    out = _cli("export", run.id, "--store", store)
    assert out.exit_code == 1
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: run ") and "'x' rank 0" in lines[0]


# -- B. damaged chunks -------------------------------------------------------------------


def _chunk_on_disk(db: Path, run_id: str, path: str) -> tuple[int, bytes]:
    """(rowid, vals) of the largest chunk of ``path``, after folding the WAL into db."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        return conn.execute(
            "SELECT c.rowid, c.vals FROM chunks c JOIN series s USING(series_id) "
            "WHERE s.run_id=? AND s.path=? ORDER BY c.n DESC LIMIT 1",
            (run_id, path),
        ).fetchone()
    finally:
        conn.close()


def _damage_on_disk(db: Path, blob: bytes) -> None:
    """Flip 8 bytes of ``blob`` where it lies in the database file: a damaged page."""
    data = db.read_bytes()
    for offset in range(64, len(blob) - 32, 8):
        needle = blob[offset : offset + 32]
        if data.count(needle) == 1:
            at = data.index(needle) + 8
            with open(db, "r+b") as f:
                f.seek(at)
                f.write(bytes(b ^ 0x5A for b in data[at : at + 8]))
            return
    raise AssertionError("the chunk's bytes were not found in the database file")


def _integrity(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def test_a_damaged_chunk_is_refused_by_name_and_doctor_finds_it(store: str) -> None:
    run = tracker.init_run("vision", config={"lr": 0.1}, store=store, system_metrics=False)
    for i in range(2000):
        run.log({"train/loss": math.sin(i) * 1000 + i, "train/acc": i / 2000})
    run.close()
    db = Path(store) / "store.db"
    chunk, vals = _chunk_on_disk(db, run.id, "train/loss")
    _damage_on_disk(db, vals)
    assert _integrity(db) == ["ok"]  # SQLite sees nothing wrong: only the checksum does

    r = tracker.read_run(run.id, store=store)
    with pytest.raises(CorruptDataError) as caught:
        r["train/loss"].fetch_values()
    err = caught.value
    assert isinstance(err, StoreError)
    assert (err.run_id, err.path, err.rank, err.chunk) == (run.id, "train/loss", 0, chunk)
    for part in (f"run {run.id}", "'train/loss'", "rank 0", f"chunk {chunk}", str(db)):
        assert part in str(err)
    assert "checksum mismatch" in str(err)
    with pytest.raises(CorruptDataError):
        r["train/loss"].fetch_values(buckets=10)
    assert len(r["train/acc"].fetch_values()) == 2000  # the other series is intact

    checks = {c.name: c for c in check_store(store)}
    assert checks["database integrity"].ok
    bad = checks["chunk checksums"]
    assert not bad.ok and run.id in bad.detail and "'train/loss'" in bad.detail

    doctor = _cli("doctor", "--store", store)
    assert doctor.exit_code == 1 and "✗ chunk checksums" in doctor.output
    show = _cli("show", run.id, "--store", store)
    assert show.exit_code == 1
    assert "config/lr" in show.output and "train/acc" in show.output  # the rest is shown
    errors = [line for line in show.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'train/loss' rank 0" in errors[0]
    export = _cli("export", run.id, "--store", store)
    assert export.exit_code == 1 and "checksum mismatch" in export.output
    # compare reads the last values the series rows keep, not the chunks: unaffected.
    assert _cli("compare", run.id, run.id, "--store", store).exit_code == 0


def test_a_chunk_whose_sizes_disagree_is_refused(store: str) -> None:
    run = tracker.init_run("vision", store=store, system_metrics=False)
    for i in range(100):
        run.log({"x": float(i)})
    run.close()
    # As a schema-1 row would be (no checksum), with its values cut short.
    with sqlite3.connect(Path(store) / "store.db") as conn:
        conn.execute("UPDATE chunks SET crc=NULL, vals=substr(vals, 1, length(vals) - 8)")
    with pytest.raises(CorruptDataError, match=r"bytes of steps, \d+ of values"):
        tracker.read_run(run.id, store=store)["x"].fetch_values()
    checks = {c.name: c for c in check_store(store)}
    assert not checks["chunk checksums"].ok and run.id in checks["chunk checksums"].detail
