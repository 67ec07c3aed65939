"""The run object's public API on one process, each behaviour read back from the store."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import warnings
from pathlib import Path

import pytest

import tracker


def test_assignment_flattens_nested_dicts_and_keeps_kinds(store: str) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    with tracker.init_run(project="p", store=store) as run:
        run["params"] = {"lr": 0.1, "layers": 3, "opt": {"name": "adam", "amsgrad": False}}
        run["started"] = when
        run["notes/text"] = "hello"
    r = tracker.read_run(run.id, store=store)
    assert r["params/lr"].fetch() == 0.1
    assert r["params/layers"].fetch() == 3 and isinstance(r["params/layers"].fetch(), int)
    assert r["params/opt/name"].fetch() == "adam"
    assert r["params/opt/amsgrad"].fetch() is False
    assert r["started"].fetch() == when
    assert r["notes/text"].fetch() == "hello"
    assert {"params/lr", "params/opt/name", "started", "notes/text"} <= set(r.paths())


def test_config_and_tags_at_init(store: str) -> None:
    run = tracker.init_run(
        project="p", store=store, tags=["a", "b"], config={"lr": 3e-4, "sizes": [64, 32]}
    )
    run.close()
    r = tracker.read_run(run.id, store=store)
    assert r["config/lr"].fetch() == 3e-4
    assert r["config/sizes"].fetch() == [64, 32]  # a list is stored as a list
    assert r.tags == ["a", "b"]


def test_log_uses_run_counter_and_explicit_steps(store: str) -> None:
    with tracker.init_run(project="p", store=store) as run:
        for i in range(5):
            run.log({"a": float(i)})
        run.log({"a": 10.0, "b": 1.0}, step=20)
        run.log({"a": 11.0})  # continues after the explicit step
    r = tracker.read_run(run.id, store=store)
    a = r["a"].fetch_values()
    assert a.step.tolist() == [0, 1, 2, 3, 4, 20, 21]
    assert a.value.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 10.0, 11.0]
    assert r["b"].fetch_values().step.tolist() == [20]
    assert len(a) == 7 and a.timestamp.dtype.kind == "f"


def test_append_float_and_str_series(store: str) -> None:
    with tracker.init_run(project="p", store=store) as run:
        run["eval/acc"].append(0.5)
        run["eval/acc"].append(0.7)
        run["eval/acc"].append(0.9, step=10, timestamp=1_700_000_000.0)
        run["log/lines"].append("epoch 1 done")
        run["log/lines"].append("epoch 2 done")
    r = tracker.read_run(run.id, store=store)
    acc = r["eval/acc"].fetch_values()
    assert acc.step.tolist() == [0, 1, 10]
    assert acc.value.tolist() == [0.5, 0.7, 0.9]
    assert acc.timestamp[-1] == 1_700_000_000.0
    lines = r["log/lines"].fetch_values()
    assert lines.value.tolist() == ["epoch 1 done", "epoch 2 done"]
    assert r["eval/acc"].fetch() == 0.9


def test_repeats_and_lower_steps_are_stored_with_one_warning_per_series(store: str) -> None:
    run = tracker.init_run(project="p", store=store, system_metrics=False)
    run.log({"x": 1.0}, step=5)
    run.log({"x": 1.5}, step=5)  # evaluate() twice at one step: both kept, silently
    run.flush()
    with pytest.warns(RuntimeWarning, match=r"step 3 of 'x' is lower than its last step 5"):
        run.log({"x": 2.0}, step=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per series: no second warning
        run.log({"x": 3.0}, step=2)
        run.log({"x": 4.0}, step=6)
        run.flush()
    run.close()
    x = tracker.read_run(run.id, store=store)["x"].fetch_values()
    assert x.step.tolist() == [2, 3, 5, 5, 6]
    assert x.value.tolist() == [3.0, 2.0, 1.0, 1.5, 4.0]


def test_tags_add_remove(store: str) -> None:
    with tracker.init_run(project="p", store=store, tags=["x"]) as run:
        run.add_tags("a", "b")
        run.remove_tags("x", "not-there")
    assert tracker.read_run(run.id, store=store).tags == ["a", "b"]


def test_track_files_records_uri_size_hash_without_copying(store: str, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"weights" * 1000)
    folder = tmp_path / "artifacts"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    (folder / "b.txt").write_text("bb")
    with tracker.init_run(project="p", store=store) as run:
        info = run["model/ckpt"].track_files(str(ckpt))
        run["model/dir"].track_files(folder)
        run["data/remote"].track_files("s3://bucket/data.parquet")
    r = tracker.read_run(run.id, store=store)
    stored = r["model/ckpt"].fetch()
    assert stored == info
    assert stored["uri"] == ckpt.as_uri()
    assert stored["size"] == 7000
    assert stored["hash"] == "sha256:" + hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert r["model/dir"].fetch()["size"] == 3 and r["model/dir"].fetch()["files"] == 2
    assert r["data/remote"].fetch()["uri"] == "s3://bucket/data.parquet"
    # Nothing was copied into the store.
    assert not list(Path(store).rglob("model.ckpt"))
    with pytest.raises(FileNotFoundError):
        run2 = tracker.init_run(project="p", store=store)
        try:
            run2["x"].track_files(tmp_path / "missing")
        finally:
            run2.close()


def test_context_manager_marks_failure_with_traceback(store: str) -> None:
    with pytest.raises(ZeroDivisionError):
        with tracker.init_run(project="p", store=store) as run:
            run.log({"a": 1.0})
            1 / 0  # noqa: B018
    r = tracker.read_run(run.id, store=store)
    assert r.status == "failed"
    tb = r["sys/failure/traceback"].fetch()
    assert "ZeroDivisionError" in tb and "test_run_api.py" in tb
    assert r["a"].fetch_values().value.tolist() == [1.0]


def test_close_is_idempotent_and_status_recorded(store: str) -> None:
    run = tracker.init_run(project="p", store=store)
    run.close("terminated")
    run.close()
    assert tracker.read_run(run.id, store=store).status == "terminated"
    with pytest.raises(ValueError, match="close"):
        tracker.init_run(project="p", store=store).close("weird")


def test_run_is_listed_as_soon_as_init_returns(store: str) -> None:
    run = tracker.init_run(project="listed", store=store, name="first")
    rows = tracker.list_runs(project="listed", store=store)
    assert [(row["id"], row["name"], row["status"]) for row in rows] == [
        (run.id, "first", "running")
    ]
    run.close()


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_modes_that_write_the_store(store: str, mode: str) -> None:
    run = tracker.init_run(project="p", store=store, mode=mode)
    run.log({"a": 1.0})
    if mode == "sync":
        # Durable on return: visible to another connection before flush or close.
        r = tracker.read_run(run.id, store=store)
        assert r["a"].fetch_values().value.tolist() == [1.0]
    run.close()
    assert tracker.read_run(run.id, store=store)["a"].fetch_values().value.tolist() == [1.0]


def test_offline_mode_journals_only_then_sync_applies(store: str) -> None:
    from tracker.core.replay import sync_store
    from tracker.core.store import Store

    run = tracker.init_run(project="p", store=store, mode="offline", config={"lr": 0.5})
    for i in range(10):
        run.log({"a": float(i)})
    run.close()
    db = sqlite3.connect(Path(store) / "store.db")
    assert db.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    synced = sync_store(Store(store))
    assert run.id in synced
    r = tracker.read_run(run.id, store=store)
    assert r.status == "finished"
    assert r["a"].fetch_values().value.tolist() == [float(i) for i in range(10)]
    assert r["config/lr"].fetch() == 0.5


def test_disabled_mode_writes_nothing_but_still_validates(tmp_path: Path) -> None:
    store = tmp_path / "never"
    run = tracker.init_run(project="p", store=str(store), mode="disabled")
    run.log({"a": 1.0})
    run["x"] = 1
    with pytest.raises(TypeError, match="'bad'"):
        run.log({"bad": object()})
    run.flush()
    run.close()
    assert not store.exists()


def test_bad_mode_and_resume_arguments(store: str) -> None:
    with pytest.raises(ValueError, match="mode"):
        tracker.init_run(project="p", store=store, mode="fast")
    with pytest.raises(ValueError, match="resume"):
        tracker.init_run(project="p", store=store, resume="maybe")
    with pytest.raises(ValueError, match="run_id"):
        tracker.init_run(project="p", store=store, run_id="bad id/with slash")


def test_resume_by_run_id(store: str) -> None:
    with tracker.init_run(project="p", store=store, run_id="my-run") as run:
        for i in range(3):
            run.log({"loss": float(i)})
    with tracker.init_run(project="p", store=store, run_id="my-run", resume="must") as run2:
        assert run2.id == "my-run"
        run2.log({"loss": 3.0})  # continues the run's counter
    r = tracker.read_run("my-run", store=store)
    assert r["loss"].fetch_values().step.tolist() == [0, 1, 2, 3]
    assert r.status == "finished"
    with pytest.raises(tracker.RunExistsError):
        tracker.init_run(project="p", store=store, run_id="my-run", resume="never")
    with pytest.raises(tracker.RunNotFoundError):
        tracker.init_run(project="p", store=store, run_id="other", resume="must")
    assert len(tracker.list_runs(store=store)) == 1


def test_fork_reads_parent_points_by_reference(store: str) -> None:
    with tracker.init_run(project="p", store=store, config={"lr": 0.1}) as parent:
        for i in range(10):
            parent.log({"loss": float(i)})
    with tracker.init_run(project="p", store=store, fork_from=(parent.id, 4)) as child:
        child.log({"loss": 100.0})
        child.log({"loss": 101.0})
    r = tracker.read_run(child.id, store=store)
    loss = r["loss"].fetch_values()
    assert loss.step.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert loss.value.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 100.0, 101.0]
    assert r.parent == (parent.id, 4)
    assert "loss" in r.paths()
    # The parent is unchanged, and the child's own rows hold only its two points.
    p = tracker.read_run(parent.id, store=store)
    assert p["loss"].fetch_values().value.tolist() == [float(i) for i in range(10)]
    db = sqlite3.connect(Path(store) / "store.db")
    child_points = db.execute(
        "SELECT sum(n) FROM chunks JOIN series USING(series_id) WHERE run_id=? AND path=?",
        (child.id, "loss"),
    ).fetchone()[0]
    assert child_points == 2
    with pytest.raises(tracker.RunNotFoundError):
        tracker.init_run(project="p", store=store, fork_from=("nope", 1))


def test_store_and_project_from_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRACKER_STORE", str(tmp_path / "env-store"))
    monkeypatch.setenv("TRACKER_PROJECT", "from-env")
    with tracker.init_run() as run:
        run.log({"a": 1.0})
    assert run.project == "from-env"
    assert tracker.read_run(run.id, store=str(tmp_path / "env-store")).project == "from-env"
    assert (tmp_path / "env-store" / "store.db").exists()


def test_file_uri_store_and_server_address_error(tmp_path: Path) -> None:
    uri = (tmp_path / "uri-store").as_uri()
    with tracker.init_run(project="p", store=uri) as run:
        run.log({"a": 1.0})
    assert tracker.read_run(run.id, store=uri)["a"].fetch() == 1.0
    with pytest.raises(tracker.StoreError, match="server"):
        tracker.init_run(project="p", store="http://localhost:1")


def test_logging_after_close_warns_once_and_changes_nothing(store: str) -> None:
    run = tracker.init_run(project="p", store=store, system_metrics=False)
    run.log({"a": 1.0})
    run.close()
    with pytest.warns(RuntimeWarning, match="is closed") as record:
        run.log({"a": 2.0})
        run["b"] = 1
    assert len(record) == 1
    r = tracker.read_run(run.id, store=store)
    assert r["a"].fetch_values().value.tolist() == [1.0] and "b" not in r.paths()


def test_init_run_says_where_the_run_went(store: str, tmp_path: Path) -> None:
    import subprocess
    import textwrap

    from ..conftest import PYTHON, python_env

    script = tmp_path / "where.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, tracker
            quiet = {"none": None, "yes": True}[sys.argv[2]]
            run = tracker.init_run(project="p", store=sys.argv[1], quiet=quiet,
                                   system_metrics=False)
            print(run.id)
            run.close()
            """
        )
    )

    def started(quiet: str, **env: str) -> tuple[str, str]:
        proc = subprocess.run(
            [PYTHON, str(script), store, quiet],
            env=python_env(**env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip(), proc.stderr

    run_id, err = started("none", TRACKER_QUIET="")
    lines = [line for line in err.splitlines() if line.startswith("tracker: run ")]
    assert len(lines) == 1
    assert run_id in lines[0] and str(Path(store).resolve()) in lines[0]
    assert f"tracker show {run_id} --store" in lines[0]
    _, err = started("none", TRACKER_QUIET="1")
    assert "tracker: run " not in err
    _, err = started("yes", TRACKER_QUIET="")
    assert "tracker: run " not in err
