"""Forked children (os.fork, multiprocessing's fork start method, DataLoader workers).

A child inherits the parent's open run, its exit hooks, its SIGTERM handler and the
descriptor of its writer lock. Before the fix a child that exited, raised or was
terminated closed the parent's run and unlocked its lock: the live run read as crashed
and `tracker gc --status crashed` deleted it.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

import tracker
from tracker.core.cleanup import find_runs_to_delete
from tracker.core.store import Store

from ..conftest import PYTHON, python_env

_PARENT = textwrap.dedent(
    """
    import multiprocessing as mp, os, signal, sys, time
    import tracker
    from tracker.core.store import Store

    store, scenario = sys.argv[1], sys.argv[2]
    run = tracker.init_run(project="fork", store=store, run_id="parent", system_metrics=False)
    run.log({"loss": -1.0}, step=0)
    run.flush()

    def child(how, running=None):
        run.log({"from_child": 1.0})      # warned about, never recorded
        run["child/field"] = 1
        if how == "raise":
            raise RuntimeError("child fails")
        if how == "sleep":
            if running is not None:
                running.set()
            time.sleep(60)  # stays alive until the parent terminates it
        if how == "close":
            run.close()
        sys.exit(3)

    def square(x):
        run.log({"in_pool": float(x)})
        return x * x

    ctx = mp.get_context("fork")
    if scenario == "processes":
        for how in ("exit", "raise", "close"):
            p = ctx.Process(target=child, args=(how,))
            p.start()
            p.join()
        p = ctx.Process(target=child, args=("sleep",))
        p.start()
        p.terminate()          # SIGTERM, possibly before the child's fork hooks ran
        p.join()
        running = ctx.Event()
        q = ctx.Process(target=child, args=("sleep", running))
        q.start()
        assert running.wait(60)  # the child is past its fork hooks and running
        q.terminate()          # SIGTERM once it runs
        q.join()
    elif scenario == "pool":
        with ctx.Pool(3) as pool:
            assert pool.map(square, range(30)) == [x * x for x in range(30)]
    elif scenario == "dataloader":
        import torch
        from torch.utils.data import DataLoader, Dataset

        class Numbers(Dataset):
            def __len__(self):
                return 64

            def __getitem__(self, i):
                run.log({"in_worker": float(i)})
                return torch.tensor([float(i)])

        loader = DataLoader(Numbers(), batch_size=8, num_workers=2,
                            multiprocessing_context="fork")
        assert sum(len(b) for b in loader) == 64

    st = Store(store)
    print("alive", st.writer_alive("parent"), flush=True)
    print("status", tracker.read_run("parent", store=store).status, flush=True)
    for step in range(1, 3001):
        run.log({"loss": float(step)}, step=step)
    run.close()
    """
)


@pytest.mark.parametrize("scenario", ["processes", "pool", "dataloader"])
def test_forked_children_never_touch_the_parents_run(
    scenario: str, store: str, tmp_path: Path
) -> None:
    if scenario == "dataloader":
        pytest.importorskip("torch", reason="the DataLoader case needs torch")
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    proc = subprocess.run(
        [PYTHON, str(script), store, scenario],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    # While the children came and went, the parent's run stayed live and locked.
    assert "alive True" in proc.stdout
    assert "status running" in proc.stdout
    # Each child that logged was told, once, what to do instead.
    assert "cannot write to it" in proc.stderr
    assert "open a run of the child's own" in proc.stderr
    r = tracker.read_run("parent", store=store)
    assert r.status == "finished"
    assert r["loss"].fetch_values().step.tolist() == list(range(3001))
    paths = r.paths()
    assert not any(p in paths for p in ("from_child", "in_pool", "in_worker", "child/field"))
    # gc of crashed runs finds nothing to delete.
    assert find_runs_to_delete(Store(store), statuses=["crashed"]) == []


def test_a_child_may_open_its_own_run(store: str, tmp_path: Path) -> None:
    script = tmp_path / "own.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing as mp, sys, tracker
            store = sys.argv[1]
            run = tracker.init_run(project="fork", store=store, run_id="parent",
                                   system_metrics=False)

            def child():
                with tracker.init_run(project="fork", store=store, run_id="child",
                                      system_metrics=False) as own:
                    for i in range(100):
                        own.log({"x": float(i)})

            p = mp.get_context("fork").Process(target=child)
            p.start()
            p.join()
            assert p.exitcode == 0
            run.log({"y": 1.0})
            run.close()
            """
        )
    )
    proc = subprocess.run(
        [PYTHON, str(script), store], env=python_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert len(tracker.read_run("child", store=store)["x"].fetch_values()) == 100
    assert tracker.read_run("child", store=store).status == "finished"
    assert tracker.read_run("parent", store=store).status == "finished"
