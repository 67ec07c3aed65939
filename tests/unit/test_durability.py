"""Nothing lost: journal framing, torn tails, idempotent replay, SIGKILL, SIGTERM, exit."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

import tracker
from tracker.core import journal
from tracker.core.replay import replay_run
from tracker.core.store import Store

from ..conftest import PYTHON, python_env


def _points(store: str) -> int:
    db = sqlite3.connect(Path(store) / "store.db")
    # Points the test logged; system metrics arrive on their own clock and are left out.
    return db.execute(
        "SELECT coalesce(sum(n), 0) FROM chunks JOIN series USING(series_id) "
        "WHERE path NOT LIKE 'sys/%'"
    ).fetchone()[0]


def test_journal_records_round_trip_and_torn_tail_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "seg.jnl"
    w = journal.JournalWriter(path)
    w.append([("set", "a", "int", 1, 0.0)])
    w.append([("set", "b", "int", 2, 0.0)])
    w.close()
    good_size = path.stat().st_size
    records = list(journal.read_records(path))
    assert [ops for _, ops in records] == [
        [("set", "a", "int", 1, 0.0)],
        [("set", "b", "int", 2, 0.0)],
    ]
    assert records[-1][0] == good_size
    # A torn tail: the start of a third record whose body never reached the disk.
    with open(path, "ab") as f:
        f.write(journal.encode([("set", "c", "int", 3, 0.0)])[:11])
    assert len(list(journal.read_records(path))) == 2
    scan = journal.scan_segment(path)
    assert (scan.records, scan.skipped, scan.torn_tail) == (2, [], (good_size, 11))
    # A corrupt last record (bit flip in its body) is torn too: nothing intact follows.
    data = bytearray(path.read_bytes())
    data[good_size - 9] ^= 0xFF
    path.write_bytes(bytes(data[:good_size]))
    assert [ops for _, ops in journal.read_records(path)] == [[("set", "a", "int", 1, 0.0)]]
    assert journal.scan_segment(path).torn_tail == (records[0][0], good_size - records[0][0])


def test_journal_reader_resyncs_past_a_corrupt_record(tmp_path: Path) -> None:
    path = tmp_path / "seg.jnl"
    w = journal.JournalWriter(path)
    ends = [w.append([("set", f"k{i}", "int", i, 0.0)])[1] for i in range(5)]
    w.close()
    data = bytearray(path.read_bytes())
    data[ends[1] + 5] ^= 0x01  # in record 2's length: its checksum covers the length
    data[ends[1] + 20] ^= 0x80
    path.write_bytes(bytes(data))
    stats = journal.SegmentScan()
    got = list(journal.read_records(path, stats=stats))
    assert [ops[0][1] for _, ops in got] == ["k0", "k1", "k3", "k4"]
    assert stats.skipped == [(ends[1], ends[2] - ends[1])]
    assert stats.torn_tail is None and stats.corrupt
    # Reading from an offset it yielded goes on past the damage the same way.
    assert [ops[0][1] for _, ops in journal.read_records(path, ends[0])] == ["k1", "k3", "k4"]


def test_journal_refuses_records_that_would_run_code(tmp_path: Path) -> None:
    import pickle
    import struct
    import zlib

    payload = pickle.dumps([Path("/etc")])  # refers to a class: not builtin data
    path = tmp_path / "evil.jnl"
    path.write_bytes(journal.MAGIC + journal.frame(payload))
    assert list(journal.read_records(path)) == []
    # The same in a version-1 segment (the old framing, no sync marker).
    path.write_bytes(
        journal.MAGIC_V1 + struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    )
    assert list(journal.read_records(path)) == []


def test_replaying_the_same_journal_twice_adds_nothing(store: str) -> None:
    with tracker.init_run(project="p", store=store) as run:
        for i in range(1000):
            run.log({"a": float(i), "b": float(-i)})
        run["field"] = 5
    before = _points(store)
    assert before == 2000
    st = Store(store)
    # Every record is read again and recognised as applied: nothing is added.
    assert replay_run(st, run.id, from_start=True) == 0
    assert replay_run(st, run.id, from_start=True) == 0
    assert _points(store) == before
    r = tracker.read_run(run.id, store=store)
    assert r["a"].fetch_values().step.tolist() == list(range(1000))
    assert r.status == "finished"


def test_store_misses_are_applied_on_open(store: str) -> None:
    """Records that reached the journal but not the store are applied when it is read."""
    run = tracker.init_run(project="p", store=store, mode="offline")
    for i in range(50):
        run.log({"a": float(i)})
    run.close()
    r = tracker.read_run(run.id, store=store)  # never synced: read_run applies the journal
    assert len(r["a"].fetch_values()) == 50


_CHILD = textwrap.dedent(
    """
    import sys, time, tracker
    run = tracker.init_run(project="kill", store=sys.argv[1], run_id="victim")
    print("ready", flush=True)
    step = 0
    while True:
        run.log({"t": time.time(), "step": float(step)})
        step += 1
        if step % 100 == 0:
            time.sleep(0.001)
    """
)


def test_sigkill_loses_at_most_the_last_second(store: str, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    proc = subprocess.Popen(
        [PYTHON, str(script), store], stdout=subprocess.PIPE, env=python_env(), text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(3.0)
        kill_time = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    r = tracker.read_run("victim", store=store)
    assert r.status == "crashed"
    t = r["t"].fetch_values()
    assert len(t) > 1000
    # No gaps: every step from 0 to the last stored one is there...
    assert t.step.tolist() == list(range(len(t)))
    # ...and the last stored point was logged less than a second before the kill, so
    # every point logged earlier than that survived.
    assert t.value[-1] >= kill_time - 1.0, kill_time - t.value[-1]
    # The store is consistent and writable after the crash.
    with tracker.init_run(project="kill", store=store, run_id="victim") as again:
        again.log({"t": time.time(), "step": -1.0})
    assert tracker.read_run("victim", store=store).status == "finished"


def _run_script(tmp_path: Path, body: str, store: str, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run(
        [PYTHON, str(script), store, *args],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_uncaught_exception_marks_run_failed_with_traceback(store: str, tmp_path: Path) -> None:
    proc = _run_script(
        tmp_path,
        """
        import sys, tracker
        run = tracker.init_run(project="p", store=sys.argv[1], run_id="boom")
        run.log({"a": 1.0})
        raise RuntimeError("exploded on purpose")
        """,
        store,
    )
    assert proc.returncode == 1 and "exploded on purpose" in proc.stderr
    r = tracker.read_run("boom", store=store)
    assert r.status == "failed"
    assert "RuntimeError: exploded on purpose" in r["sys/failure/traceback"].fetch()
    assert r["a"].fetch_values().value.tolist() == [1.0]


def test_interpreter_exit_closes_the_run_as_finished(store: str, tmp_path: Path) -> None:
    proc = _run_script(
        tmp_path,
        """
        import sys, tracker
        run = tracker.init_run(project="p", store=sys.argv[1], run_id="exit")
        for i in range(100):
            run.log({"a": float(i)})
        """,
        store,
    )
    assert proc.returncode == 0, proc.stderr
    r = tracker.read_run("exit", store=store)
    assert r.status == "finished"
    assert len(r["a"].fetch_values()) == 100


def test_sigterm_marks_run_terminated(store: str, tmp_path: Path) -> None:
    script = tmp_path / "term.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time, tracker
            run = tracker.init_run(project="p", store=sys.argv[1], run_id="term")
            run.log({"a": 1.0})
            print("ready", flush=True)
            while True:
                time.sleep(0.01)
            """
        )
    )
    proc = subprocess.Popen(
        [PYTHON, str(script), store], stdout=subprocess.PIPE, env=python_env(), text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM  # still dies by the signal, for the launcher
    finally:
        if proc.poll() is None:
            proc.kill()
    r = tracker.read_run("term", store=store)
    assert r.status == "terminated"
    assert r["a"].fetch_values().value.tolist() == [1.0]


def test_live_run_reads_running_from_another_process(store: str, tmp_path: Path) -> None:
    run = tracker.init_run(project="p", store=store)
    run.log({"a": 1.0})
    run.flush()
    proc = _run_script(
        tmp_path,
        """
        import sys, tracker
        print(tracker.read_run(sys.argv[2], store=sys.argv[1]).status)
        """,
        store,
        run.id,
    )
    assert proc.stdout.strip() == "running", proc.stderr
    run.close()
    assert tracker.read_run(run.id, store=store).status == "finished"


def test_flush_raises_when_the_journal_cannot_be_written(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tracker.init_run(project="p", store=store)
    run.log({"a": 1.0})
    run.flush()
    real_append = journal.JournalWriter.append

    def full_disk(self: journal.JournalWriter, ops: list) -> tuple[int, int]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal.JournalWriter, "append", full_disk)
    run.log({"a": 2.0})
    with pytest.warns(RuntimeWarning, match="No space left on device"):
        with pytest.raises(tracker.WriterError, match="No space left on device"):
            run.flush()
    # Space comes back: the points logged meanwhile were kept and are written now.
    monkeypatch.setattr(journal.JournalWriter, "append", real_append)
    run.log({"a": 3.0})
    run.flush()
    run.close()
    assert tracker.read_run(run.id, store=store)["a"].fetch_values().value.tolist() == [
        1.0,
        2.0,
        3.0,
    ]


def test_a_run_the_script_dropped_is_still_closed_at_exit(store: str, tmp_path: Path) -> None:
    proc = _run_script(
        tmp_path,
        """
        import sys, tracker
        def train():
            run = tracker.init_run(project="p", store=sys.argv[1], run_id="dropped")
            for i in range(1000):
                run.log({"a": float(i)})
        train()  # the run object goes out of scope unclosed
        """,
        store,
    )
    assert proc.returncode == 0, proc.stderr
    r = tracker.read_run("dropped", store=store)
    assert r.status == "finished"
    assert len(r["a"].fetch_values()) == 1000
