"""Values the store cannot hold, and init_run arguments that are wrong.

Before the fix each of these was accepted at the call and then failed in the writer:
the run became unreadable, later points were lost, and `tracker ls`, `list_runs()` and
`tracker sync` failed for every run in the store. Now the call raises, naming the path,
and a record that still cannot be applied is set aside without blocking anything.
"""

from __future__ import annotations

import sqlite3
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tracker
from tracker.cli import main as cli
from tracker.core.doctor import check_store
from tracker.core.replay import sync_store
from tracker.core.store import Store

BAD_CALLS = [
    ("int field of 2**64", lambda run: run.__setitem__("seed", 2**64), ValueError, "'seed'"),
    ("int field below -2**63", lambda run: run.__setitem__("n", -(2**63) - 1), ValueError, "'n'"),
    (
        "numpy uint64 max field",
        lambda run: run.__setitem__("u", np.uint64(2**64 - 1)),
        ValueError,
        "'u'",
    ),
    (
        "lone surrogate in a key",
        lambda run: run.__setitem__("a\udc80b", 1),
        ValueError,
        "surrogate",
    ),
    (
        "lone surrogate in a str field",
        lambda run: run.__setitem__("s", "a\udc80b"),
        ValueError,
        "'s'",
    ),
    (
        "lone surrogate in a str point",
        lambda run: run.log({"text": "x\udc80"}),
        ValueError,
        "'text'",
    ),
    ("lone surrogate in a log key", lambda run: run.log({"a\udc80": 1.0}), ValueError, "surrogate"),
    ("step 2**63", lambda run: run.log({"x": 1.0}, step=2**63), ValueError, "2\\*\\*63"),
    (
        "numpy uint64 max step",
        lambda run: run.log({"x": 1.0}, step=np.uint64(2**64 - 1)),
        ValueError,
        "2\\*\\*63",
    ),
    ("append step 2**63", lambda run: run["x"].append(1.0, step=2**63), ValueError, "2\\*\\*63"),
    ("int point too big for a float", lambda run: run.log({"x": 10**400}), ValueError, "'x'"),
    ("lone surrogate in a tag", lambda run: run.add_tags("t\udc80"), ValueError, "surrogate"),
]


@pytest.mark.parametrize("name,call,error,match", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_values_the_store_cannot_hold_are_refused_at_the_call(
    name: str, call, error: type, match: str, store: str
) -> None:
    run = tracker.init_run(project="p", store=store, system_metrics=False)
    run.log({"before": 1.0}, step=0)
    with pytest.raises(error, match=match):
        call(run)
    run.log({"after": 2.0}, step=1)
    run["ok"] = 2**63 - 1
    run.close()
    r = tracker.read_run(run.id, store=store)
    assert r.status == "finished"
    assert r["before"].fetch_values().value.tolist() == [1.0]
    assert r["after"].fetch_values().value.tolist() == [2.0]
    assert r["ok"].fetch() == 2**63 - 1


def test_a_config_too_big_for_the_store_is_kept_as_text(store: str) -> None:
    run = tracker.init_run(
        project="p",
        store=store,
        system_metrics=False,
        config={"x": 2**70, "name": "caf\udce9"},
    )
    run.close()
    r = tracker.read_run(run.id, store=store)
    assert r["config/x"].fetch() == str(2**70)
    assert r["config/name"].fetch() == "caf\\udce9"


def _poison(run: tracker.Run) -> None:
    """Queue operations no check at the call would let through, as a bug elsewhere might."""
    ts = time.time()
    run._enqueue(("set", "poison/int", "int", 2**64, ts))
    run._enqueue(("set", "poison/str", "str", "a\udc80b", ts))


def test_a_record_the_store_cannot_hold_is_set_aside_and_blocks_nothing(store: str) -> None:
    other = tracker.init_run(project="p", store=store, run_id="other", system_metrics=False)
    other.log({"x": 1.0})
    other.close()
    run = tracker.init_run(project="p", store=store, run_id="poisoned", system_metrics=False)
    for step in range(100):
        run.log({"loss": float(step)}, step=step)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _poison(run)
        run["fine"] = 7
        for step in range(100, 200):
            run.log({"loss": float(step)}, step=step)
        run.close()
    assert any("set aside" in str(w.message) for w in caught)
    r = tracker.read_run("poisoned", store=store)
    assert r.status == "finished"
    assert r["loss"].fetch_values().step.tolist() == list(range(200))
    assert r["fine"].fetch() == 7
    db = sqlite3.connect(Path(store) / "store.db")
    rows = db.execute("SELECT run_id, error FROM set_aside").fetchall()
    assert len(rows) == 2 and {rid for rid, _ in rows} == {"poisoned"}
    assert any("poison/int" in error for _, error in rows)
    # Replaying the journal again (sync) sets the same records aside again, no more.
    sync_store(Store(store))
    assert db.execute("SELECT count(*) FROM set_aside").fetchone()[0] == 2
    # Every listing still works, for both runs.
    assert {r["id"] for r in tracker.list_runs(project="p", store=store)} == {"poisoned", "other"}
    result = CliRunner().invoke(cli, ["ls", "--store", store])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "poisoned" in result.output and "other" in result.output
    checks = {c.name: c for c in check_store(store)}
    assert not checks["records set aside"].ok
    assert "poisoned" in checks["records set aside"].detail


def test_a_crashed_run_with_a_poisoned_journal_recovers(store: str, tmp_path: Path) -> None:
    import subprocess
    import textwrap

    from ..conftest import PYTHON, python_env

    script = tmp_path / "crash.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys, time, tracker
            run = tracker.init_run(project="p", store=sys.argv[1], run_id="crashy",
                                   mode="offline", system_metrics=False)
            for step in range(500):
                run.log({"loss": float(step)}, step=step)
            run._enqueue(("set", "poison", "int", 2**64, time.time()))
            for step in range(500, 1000):
                run.log({"loss": float(step)}, step=step)
            run.flush()
            os._exit(1)
            """
        )
    )
    proc = subprocess.run([PYTHON, str(script), store], env=python_env(), capture_output=True)
    assert proc.returncode == 1
    # An offline run reaches the store when it is read or synced: the poisoned record
    # is set aside on the way, and everything else arrives.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = tracker.read_run("crashy", store=store)
    assert [r["id"] for r in tracker.list_runs(project="p", store=store)] == ["crashy"]
    assert r.status == "crashed"
    assert r["loss"].fetch_values().step.tolist() == list(range(1000))


BAD_INIT = [
    ("tags=[1]", {"tags": [1]}, TypeError),
    ("a 300-character tag", {"tags": ["x" * 300]}, ValueError),
    ("config as a list", {"config": [1, 2]}, TypeError),
    ("name as a list", {"name": ["a"]}, TypeError),
    ("project as an int", {"project": 5}, TypeError),
    ("fork_from a missing run", {"fork_from": ("nope", 3)}, tracker.RunNotFoundError),
    ("mode unknown", {"mode": "fast"}, ValueError),
    ("resume unknown", {"resume": "maybe"}, ValueError),
    ("a surrogate in the name", {"name": "a\udc80"}, ValueError),
]


def _deep(n: int) -> dict:
    root: dict = {}
    node = root
    for _ in range(n):
        node["k"] = {}
        node = node["k"]
    node["v"] = 1
    return root


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize("name,kwargs,error", BAD_INIT, ids=[c[0] for c in BAD_INIT])
def test_bad_init_arguments_leave_no_run_behind(
    name: str, kwargs: dict, error: type, store: str
) -> None:
    kwargs.setdefault("project", "p")
    with pytest.raises(error):
        tracker.init_run(store=store, system_metrics=False, **kwargs)
    assert not (Path(store) / "store.db").exists() or tracker.list_runs(store=store) == []
    journal = Path(store) / "journal"
    assert not journal.exists() or list(journal.iterdir()) == []


def test_a_config_nested_3000_deep_is_refused_before_anything_exists(store: str) -> None:
    with pytest.raises(ValueError, match="nested more than"):
        tracker.init_run(project="p", store=store, config=_deep(3000), system_metrics=False)
    assert not (Path(store) / "store.db").exists() or tracker.list_runs(store=store) == []


def test_one_str_tag_is_one_tag_and_an_unprintable_config_value_is_kept(store: str) -> None:
    run = tracker.init_run(
        project="p",
        store=store,
        tags="baseline",
        config={"obj": _Unprintable()},
        system_metrics=False,
    )
    run.close()
    r = tracker.read_run(run.id, store=store)
    assert r.tags == ["baseline"]
    assert "repr() raised RuntimeError" in r["config/obj"].fetch()
