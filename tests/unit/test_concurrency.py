"""Many processes writing different runs to one store at once."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import tracker

from ..conftest import PYTHON, python_env

_WRITER = textwrap.dedent(
    """
    import sys, tracker
    store, index = sys.argv[1], int(sys.argv[2])
    run = tracker.init_run(project="many", store=store, run_id=f"run-{index:02d}",
                           config={"index": index}, tags=[f"w{index % 4}"])
    for step in range(3000):
        run.log({"loss": step * 0.5, "acc": float(index), "step_copy": float(step)})
        if step % 500 == 0:
            run[f"checkpoints/{step}"] = step
            run.flush()  # many small commits: the most contention we can make
    run.close()
    """
)


def test_sixteen_processes_sixteen_runs_lose_nothing(store: str, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    procs = [
        subprocess.Popen(
            [PYTHON, str(script), store, str(i)],
            env=python_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(16)
    ]
    results = [(p.wait(240), *p.communicate()) for p in procs]
    for code, _out, err in results:
        assert "database is locked" not in err
        assert code == 0, err
    runs = tracker.list_runs(project="many", store=store)
    assert len(runs) == 16
    assert {r["status"] for r in runs} == {"finished"}
    for i in range(16):
        r = tracker.read_run(f"run-{i:02d}", store=store)
        loss = r["loss"].fetch_values()
        assert loss.step.tolist() == list(range(3000))
        assert loss.value[-1] == 2999 * 0.5
        assert set(r["acc"].fetch_values().value.tolist()) == {float(i)}
        assert r["config/index"].fetch() == i
        assert r["checkpoints/2500"].fetch() == 2500
    assert len(tracker.list_runs(project="many", tags=["w1"], store=store)) == 4


def test_readers_do_not_block_a_writer(store: str) -> None:
    run = tracker.init_run(project="p", store=store)
    run.log({"a": 1.0})
    run.flush()
    reader = tracker.read_run(run.id, store=store)
    conn = reader._store.connection()
    conn.execute("BEGIN")  # hold a read transaction open across the writes
    assert len(reader["a"].fetch_values()) == 1
    for i in range(100):
        run.log({"a": float(i)})
    run.flush(timeout=10)  # would time out if the reader blocked the writer
    conn.execute("COMMIT")
    run.close()
    assert len(tracker.read_run(run.id, store=store)["a"].fetch_values()) == 101
