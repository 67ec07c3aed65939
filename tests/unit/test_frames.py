"""Reading results as tables: list_runs(metrics=, as_frame=), RunReader.history(), the
error for a missing rank, pandas as an optional extra, and the notebook views."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tracker
from tracker.core import frames
from tracker.core.reader import SeriesValues
from tracker.rank_utils.coordinator import receive, shipment

from ..conftest import PYTHON, python_env


def _open(store: str, **kwargs: object) -> tracker.Run:
    kwargs.setdefault("project", "p")
    return tracker.init_run(store=store, mode="sync", system_metrics=False, quiet=True, **kwargs)  # type: ignore[arg-type]


def _gathered(run: tracker.Run, rank: int, calls: list[tuple[int, dict[str, float]]]) -> None:
    """Feed points as rank 0's gatherer receives them from another rank."""
    receive(run, rank, shipment([(step, 0.0, data) for step, data in calls], rank))


# -- the runs table ----------------------------------------------------------------------


def test_runs_table_has_flattened_config_and_metric_stats(store: str) -> None:
    pd = pytest.importorskip("pandas")
    with _open(store, name="a", tags=["base"], config={"lr": 0.1, "opt": {"name": "adam"}}) as a:
        for step, loss in enumerate([0.9, 0.3, float("nan"), 0.5]):
            a.log({"val/loss": loss, "val/acc": step / 10, "train/loss": 2.0}, step=step)
    b = _open(store, name="b", config={"lr": 0.2, "layers": 4})  # still running: no end
    b.log({"train/loss": 1.0}, step=0)
    df = tracker.list_runs(store=store, as_frame=True, metrics=["val/loss", "train/loss"])
    b.close()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == [
        "id", "name", "project", "status", "tags", "created_at", "ended_at", "parent_id",
        "config/layers", "config/lr", "config/opt/name",
        "val/loss/last", "val/loss/min", "val/loss/max",
        "train/loss/last", "train/loss/min", "train/loss/max",
    ]  # fmt: skip
    assert df["id"].tolist() == [b.id, a.id]  # newest first, as list_runs
    row = df.set_index("id").loc[a.id]
    assert (row["name"], row["status"], row["tags"]) == ("a", "finished", ["base"])
    assert row["config/lr"] == 0.1 and row["config/opt/name"] == "adam"
    # last is the value at the highest step; min/max skip the NaN point.
    assert (row["val/loss/last"], row["val/loss/min"], row["val/loss/max"]) == (0.5, 0.3, 0.9)
    running = df.set_index("id").loc[b.id]
    assert math.isnan(running["val/loss/last"])  # named exactly: a column, NaN where absent
    assert running["train/loss/max"] == 1.0 and running["config/layers"] == 4
    assert math.isnan(row["config/layers"])
    assert isinstance(df["created_at"].dtype, pd.DatetimeTZDtype)
    assert str(df["created_at"].dt.tz) == "UTC"
    created = tracker.read_run(a.id, store=store).created_at
    assert row["created_at"].timestamp() == pytest.approx(created, abs=1e-6)
    assert pd.isna(running["ended_at"]) and not pd.isna(row["ended_at"])


def test_metrics_without_a_frame_and_as_globs(store: str) -> None:
    with _open(store) as a:
        for step in range(3):
            a.log({"val/loss": 1.0 - step / 10, "val/top/acc": step / 10, "lr": 0.1}, step=step)
        a.log({"val/sample": "<b>x</b>"}, step=2)
    with _open(store) as b:
        b.log({"train/loss": 1.0})
    rows = {r["id"]: r for r in tracker.list_runs(store=store, metrics="val/*")}
    assert rows[a.id]["metrics"] == {
        "val/loss": {"last": 0.8, "min": 0.8, "max": 1.0},
        "val/sample": {"last": "<b>x</b>", "min": None, "max": None},
        "val/top/acc": {"last": 0.2, "min": 0.0, "max": 0.2},  # '*' crosses '/'
    }
    assert rows[b.id]["metrics"] == {}
    assert "metrics" not in tracker.list_runs(store=store)[0]  # only when asked for


def test_runs_table_globs_add_columns_only_for_metrics_found(store: str) -> None:
    pytest.importorskip("pandas")
    with _open(store) as a:
        a.log({"val/loss": 1.0, "val/acc": 0.5})
    df = tracker.list_runs(store=store, as_frame=True, metrics=["val/*", "test/*"])
    metric_columns = [c for c in df.columns if c.startswith(("val/", "test/"))]
    assert metric_columns == [
        f"val/{m}/{s}" for m in ("acc", "loss") for s in ("last", "min", "max")
    ]


def test_runs_table_with_no_runs_still_has_its_columns(store: str) -> None:
    pytest.importorskip("pandas")
    with _open(store, project="elsewhere"):
        pass
    df = tracker.list_runs(project="p", store=store, as_frame=True, metrics=["loss"])
    assert len(df) == 0
    assert list(df.columns) == [*frames.RUN_COLUMNS, "loss/last", "loss/min", "loss/max"]


def test_run_metrics_respect_rewinds_forks_and_rank(store: str) -> None:
    with _open(store, run_id="rw") as first:
        for step in range(10):
            first.log({"loss": 100.0 if step > 5 else float(step)})
    with _open(store, run_id="rw", resume_from_step=5) as again:
        again.log({"loss": 7.0})  # step 6 again; the earlier 6-9 (100.0) are superseded
    with _open(store, fork_from=("rw", 3)) as child:
        child.log({"loss": -1.0})  # step 4, after the parent's 0-3
    with _open(store, run_id="ranked") as ranked:
        ranked.log({"loss": 5.0}, step=0)
        _gathered(ranked, 1, [(0, {"loss": -50.0})])
    rows = {r["id"]: r["metrics"] for r in tracker.list_runs(store=store, metrics=["loss"])}
    assert rows["rw"] == {"loss": {"last": 7.0, "min": 0.0, "max": 7.0}}
    assert rows[child.id] == {"loss": {"last": -1.0, "min": -1.0, "max": 3.0}}
    assert rows["ranked"] == {"loss": {"last": 5.0, "min": 5.0, "max": 5.0}}  # rank 0 only


def test_a_run_whose_metrics_are_damaged_is_listed_without_them(store: str) -> None:
    with _open(store, run_id="bad") as bad:
        bad.log({"loss": 1.0})
    with _open(store, run_id="good") as good:
        good.log({"loss": 2.0})
    db = sqlite3.connect(Path(store) / "store.db")
    with db:  # a flipped checksum: reading the chunk raises CorruptDataError
        db.execute(
            "UPDATE chunks SET crc = (crc + 1) % 4294967296 WHERE series_id IN "
            "(SELECT series_id FROM series WHERE run_id='bad')"
        )
    db.close()
    with pytest.warns(RuntimeWarning, match="run bad .* its metrics cannot be read"):
        rows = {r["id"]: r["metrics"] for r in tracker.list_runs(store=store, metrics="loss")}
    assert rows == {"bad": {}, "good": {"loss": {"last": 2.0, "min": 2.0, "max": 2.0}}}


def test_list_runs_arguments_are_checked_before_reading(store: str) -> None:
    with pytest.raises(TypeError, match="metrics="):
        tracker.list_runs(store=store, metrics=[3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="metrics="):
        tracker.list_runs(store=store, metrics={"loss": "min"})
    with pytest.raises(ValueError, match="starts with '/'"):
        tracker.list_runs(store=store, metrics=["/loss"])
    with pytest.raises(TypeError, match="as_frame="):
        tracker.list_runs(store=store, as_frame="yes")  # type: ignore[call-overload]


# -- a run's history ---------------------------------------------------------------------


def test_history_is_one_row_per_step_outer_joined(store: str) -> None:
    pd = pytest.importorskip("pandas")
    with _open(store) as run:
        for step in range(4):
            run.log({"train/loss": 1.0 / (step + 1)}, step=step)
        run.log({"val/loss": 0.9}, step=1)
        run.log({"val/loss": 0.8}, step=1)  # evaluated twice at step 1: the last wins
        run.log({"val/note": "ok"}, step=3)
        run.log({"val/loss": 0.7}, step=5)
        run._log_system({"sys/cpu": 12.0})  # a system metric: its own sample counter
    r = tracker.read_run(run.id, store=store)
    df = r.history()
    assert df.index.name == "step" and df.index.tolist() == [0, 1, 2, 3, 5]
    assert list(df.columns) == ["timestamp", "train/loss", "val/loss", "val/note"]
    assert df.loc[1, "val/loss"] == 0.8 and math.isnan(df.loc[0, "val/loss"])
    assert math.isnan(df.loc[5, "train/loss"]) and df.loc[3, "val/note"] == "ok"
    assert str(df["timestamp"].dt.tz) == "UTC"
    # The timestamp of a step is its latest point.
    val = r["val/loss"].fetch_values()
    assert df.loc[1, "timestamp"] == pd.Timestamp(val.timestamp[1], unit="s", tz="UTC")
    assert list(r.history("val/*").columns) == ["timestamp", "val/loss", "val/note"]
    assert list(r.history(["val/note", "train/loss"]).columns) == [
        "timestamp",
        "val/note",
        "train/loss",
    ]
    assert r.history("sys/*").columns.tolist() == ["timestamp", "sys/cpu"]
    assert r.history("nothing/*").empty
    with pytest.raises(KeyError, match="'val/missing'"):
        r.history(["train/loss", "val/missing"])


def test_history_of_another_rank_and_of_a_missing_one(store: str) -> None:
    pytest.importorskip("pandas")
    with _open(store) as run:
        run.log({"loss": 1.0}, step=0)
        _gathered(run, 2, [(0, {"loss": 3.0}), (1, {"loss": 4.0})])
    r = tracker.read_run(run.id, store=store)
    assert r.history(rank=2)["loss"].tolist() == [3.0, 4.0]
    with pytest.raises(KeyError, match="from rank 1; its series were logged by ranks 0, 2"):
        r.history(rank=1)
    with pytest.raises(KeyError, match="from rank 1; it was logged by ranks 0, 2"):
        r.history("loss", rank=1)


def test_history_of_a_run_without_series_is_empty(store: str) -> None:
    pytest.importorskip("pandas")
    with _open(store) as run:
        run["note"] = "nothing logged"
    df = tracker.read_run(run.id, store=store).history()
    assert df.empty and list(df.columns) == ["timestamp"] and df.index.name == "step"


# -- a missing rank ----------------------------------------------------------------------


def test_fetch_values_of_a_missing_rank_names_the_ranks_that_exist(store: str) -> None:
    with _open(store) as run:
        run.log({"loss": 1.0}, step=0)
        _gathered(run, 1, [(0, {"loss": 2.0})])
        _gathered(run, 3, [(0, {"other": 2.0})])
    r = tracker.read_run(run.id, store=store)
    with pytest.raises(KeyError, match="'loss' from rank 5; it was logged by ranks 0, 1.$"):
        r["loss"].fetch_values(rank=5)
    with pytest.raises(KeyError, match="'other' from rank 0; it was logged by rank 3"):
        r["other"].fetch_values()
    with pytest.raises(KeyError, match="no series 'absent' from rank 5.$"):
        r["absent"].fetch_values(rank=5)


# -- pandas is optional ------------------------------------------------------------------


def test_without_pandas_the_error_names_the_extra(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _open(store) as run:
        run.log({"loss": 1.0})
    r = tracker.read_run(run.id, store=store)
    values = r["loss"].fetch_values()
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now fails
    extra = r"pip install 'tracker-dl\[pandas\]'"
    with pytest.raises(ImportError, match=r"SeriesValues.to_pandas\(\) needs pandas.*" + extra):
        values.to_pandas()
    with pytest.raises(ImportError, match=r"history\(\) needs pandas.*" + extra):
        r.history()
    with pytest.raises(ImportError, match=r"list_runs\(as_frame=True\) needs pandas.*" + extra):
        tracker.list_runs(store=store, as_frame=True)
    buckets = r["loss"].fetch_values(buckets=10)
    with pytest.raises(ImportError, match=r"Buckets.to_pandas\(\) needs pandas.*" + extra):
        buckets.to_pandas()
    # What does not build a frame works without it.
    (row,) = tracker.list_runs(store=store, metrics=["loss"])
    assert row["metrics"]["loss"]["last"] == 1.0
    assert "1 point" in repr(values) and "<table>" in values._repr_html_()


def test_reading_imports_no_pandas() -> None:
    code = (
        "import sys, tracker; tracker.read_run, tracker.list_runs; "
        "import tracker.core.frames; print('pandas' in sys.modules)"
    )
    out = subprocess.run(
        [PYTHON, "-c", code], env=python_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# -- console and notebook views ----------------------------------------------------------


def test_series_values_repr_is_short() -> None:
    many = SeriesValues(np.arange(10_000), np.linspace(1, 0, 10_000), np.zeros(10_000))
    assert repr(many) == "SeriesValues(10000 points, steps 0..9999, last value 0)"
    one = SeriesValues(np.array([3]), np.array(["done"], dtype=object), np.zeros(1))
    assert repr(one) == "SeriesValues(1 point, steps 3..3, last value 'done')"
    empty = SeriesValues(np.empty(0, np.int64), np.empty(0), np.empty(0))
    assert repr(empty) == "SeriesValues(0 points)"


def test_series_values_html_shows_head_tail_and_counts(store: str) -> None:
    with _open(store) as run:
        for step in range(20):
            run.log({"loss": float(step)})
        run.log({"note": "<script>alert(1)</script>"})
    r = tracker.read_run(run.id, store=store)
    page = r["loss"].fetch_values()._repr_html_()
    assert "20 points (float), steps 0..19" in page
    assert page.count("<tr>") == 1 + 5 + 1 + 5  # header, head, the gap, tail
    assert "<td>4</td>" in page and "<td>15</td>" in page and "<td>10</td>" not in page
    note = r["note"].fetch_values()._repr_html_()
    assert "<script>" not in note and "&lt;script&gt;alert(1)&lt;/script&gt;" in note


def test_run_html_escapes_what_users_wrote(store: str) -> None:
    evil = "<script>alert('x')</script>"
    with _open(store, name=evil, tags=["<b>tag</b>"], config={"model": evil, "lr": 0.5}) as run:
        for _ in range(3):
            run.log({"train/loss": 0.25})
        run.log({"text": evil})
    page = tracker.read_run(run.id, store=store)._repr_html_()
    assert "<script>" not in page and "<b>tag" not in page
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    assert page.count(escaped) == 3  # the name, the config value, the str series' last value
    assert run.id in page and "finished" in page and "&lt;b&gt;tag&lt;/b&gt;" in page
    assert "config (2)" in page and "<td>lr</td><td>0.5</td>" in page
    assert "series (2)" in page and "<td>train/loss</td><td>0</td><td>3</td><td>2</td>" in page


def test_run_html_caps_long_lists_and_marks_inherited_series(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _open(store) as parent:
        parent.log({f"m{i}": float(i) for i in range(5)})
    with _open(store, fork_from=(parent.id, 0)) as child:
        child.log({"m0": 1.0})
    monkeypatch.setattr(frames, "HTML_MAX_ROWS", 3)
    page = tracker.read_run(child.id, store=store)._repr_html_()
    assert "series (5)" in page and "… and 2 more" in page
    assert f"{parent.id} at step 0" in page
    assert "<td>m1</td><td>0</td><td></td><td></td><td>(from fork parent)</td>" in page
