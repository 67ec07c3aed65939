"""The read API: fetch, fetch_values (per rank, aggregated, bucketed), paths, ranks, list_runs."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import tracker
from tracker.core.downsample import bucketize
from tracker.rank_utils.coordinator import receive, shipment

from ..conftest import PYTHON, python_env


def _gathered(run: tracker.Run, rank: int, calls: list[tuple[int, dict[str, float]]]) -> None:
    """Feed points as rank 0's gatherer receives them from another rank."""
    receive(run, rank, shipment([(step, 0.0, data) for step, data in calls], rank))


def test_per_rank_and_aggregated_series(store: str) -> None:
    with tracker.init_run(project="p", store=store) as run:
        for step in range(3):
            run.log({"loss": 1.0 + step}, step=step)
        _gathered(run, 1, [(0, {"loss": 3.0}), (1, {"loss": 4.0}), (2, {"loss": 5.0})])
        _gathered(run, 2, [(0, {"loss": 5.0}), (2, {"loss": -1.0})])
    r = tracker.read_run(run.id, store=store)
    assert r.ranks() == [0, 1, 2]
    assert r["loss"].fetch_values().value.tolist() == [1.0, 2.0, 3.0]  # the writer's own
    assert r["loss"].fetch_values(rank=1).value.tolist() == [3.0, 4.0, 5.0]
    assert r["loss"].fetch_values(rank=2).step.tolist() == [0, 2]
    mean = r["loss"].fetch_values(aggregate="mean")
    assert mean.step.tolist() == [0, 1, 2]
    assert mean.value.tolist() == [3.0, 3.0, (3.0 + 5.0 - 1.0) / 3]
    assert r["loss"].fetch_values(aggregate="min").value.tolist() == [1.0, 2.0, -1.0]
    assert r["loss"].fetch_values(aggregate="max").value.tolist() == [5.0, 4.0, 5.0]
    assert r["loss"].fetch_values(aggregate="count").value.tolist() == [3.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="aggregate"):
        r["loss"].fetch_values(aggregate="median")
    with pytest.raises(KeyError, match="rank 7"):
        r["loss"].fetch_values(rank=7)


def test_fetch_values_to_pandas(store: str) -> None:
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    with tracker.init_run(project="p", store=store) as run:
        for i in range(5):
            run.log({"x": i * 2.0})
    df = tracker.read_run(run.id, store=store)["x"].fetch_values().to_pandas()
    assert list(df.columns) == ["step", "value", "timestamp"]
    assert df["value"].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert str(df["timestamp"].dtype).startswith("datetime64")
    assert isinstance(df, pd.DataFrame)


def test_buckets_keep_spikes(store: str) -> None:
    with tracker.init_run(project="p", store=store) as run:
        for i in range(10_000):
            run.log({"loss": 1000.0 if i == 4321 else (-50.0 if i == 777 else 1.0)})
    b = tracker.read_run(run.id, store=store)["loss"].fetch_values(buckets=100)
    assert len(b) == 100
    assert b.count.sum() == 10_000
    assert b.max.max() == 1000.0 and b.min.min() == -50.0
    spike = int(np.argmax(b.max))
    assert b.step[spike] <= 4321 < b.step[spike] + 100
    assert b.first[0] == 1.0 and b.last[-1] == 1.0


def test_bucketize_edges() -> None:
    steps = np.array([0, 1, 2, 10], dtype=np.int64)
    vals = np.array([1.0, np.nan, 3.0, 4.0])
    b = bucketize(steps, vals, 2)
    assert b.step.tolist() == [0, 6] and b.count.tolist() == [3, 1]
    assert b.min.tolist() == [1.0, 4.0] and b.max.tolist() == [3.0, 4.0]  # NaN hides nothing
    assert len(bucketize(np.empty(0, np.int64), np.empty(0), 5)) == 0
    assert len(bucketize(steps, vals, 1000)) == 4  # never more buckets than distinct steps
    with pytest.raises(ValueError, match="buckets"):
        bucketize(steps, vals, 0)


def test_fetch_errors_name_the_path(store: str) -> None:
    with tracker.init_run(project="p", store=store) as run:
        run["a"] = 1
    r = tracker.read_run(run.id, store=store)
    with pytest.raises(KeyError, match="'missing'"):
        r["missing"].fetch()
    with pytest.raises(KeyError, match="'missing'"):
        r["missing"].fetch_values()
    with pytest.raises(tracker.RunNotFoundError, match="nope"):
        tracker.read_run("nope", store=store)
    with pytest.raises(tracker.RunNotFoundError):
        tracker.read_run(run.id, project="other", store=store)
    with pytest.raises(tracker.StoreError, match="no tracker store"):
        tracker.read_run(run.id, store=store + "-absent")


def test_list_runs_filters(store: str) -> None:
    a = tracker.init_run(
        project="p", store=store, tags=["base", "x"], config={"lr": 0.1, "opt": {"name": "adam"}}
    )
    a.close()
    b = tracker.init_run(
        project="p", store=store, tags=["base"], config={"lr": 0.2, "opt": {"name": "sgd"}}
    )
    b.close("failed")
    c = tracker.init_run(project="q", store=store, tags=["x"], config={"lr": 0.1})
    ids = lambda rows: sorted(r["id"] for r in rows)  # noqa: E731
    assert ids(tracker.list_runs(store=store)) == sorted([a.id, b.id, c.id])
    assert ids(tracker.list_runs(project="p", store=store)) == sorted([a.id, b.id])
    assert ids(tracker.list_runs(tags=["base", "x"], store=store)) == [a.id]
    assert ids(tracker.list_runs(tags="x", store=store)) == sorted([a.id, c.id])
    assert ids(tracker.list_runs(status="failed", store=store)) == [b.id]
    assert ids(tracker.list_runs(status=["running", "finished"], store=store)) == sorted(
        [a.id, c.id]
    )
    assert ids(tracker.list_runs(config={"lr": 0.1}, store=store)) == sorted([a.id, c.id])
    assert ids(tracker.list_runs(config={"opt": {"name": "sgd"}}, store=store)) == [b.id]
    row = next(r for r in tracker.list_runs(store=store) if r["id"] == a.id)
    assert row["config"] == {"lr": 0.1, "opt": {"name": "adam"}}
    assert row["tags"] == ["base", "x"] and row["status"] == "finished"
    c.close()


def test_import_tracker_imports_no_ml_framework() -> None:
    code = (
        "import sys, time; t=time.perf_counter(); import tracker; "
        "print(time.perf_counter()-t); "
        "print(' '.join(m for m in ('torch','tensorflow','lightning','pytorch_lightning',"
        "'transformers','xgboost','optuna','sklearn','keras','horovod','pandas','numpy') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [PYTHON, "-c", code], env=python_env(), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[1] == "", f"import tracker pulled in: {out[1]}"


def test_batches_from_another_rank_arriving_together_keep_their_order(store: str) -> None:
    """Two shipments of one rank applied in one writer batch must not interleave."""
    with tracker.init_run(project="p", store=store, system_metrics=False) as run:
        _gathered(run, 1, [(s, {"loss": float(s)}) for s in range(0, 15)])
        _gathered(run, 1, [(s, {"loss": float(s)}) for s in range(15, 30)])
        # and a batch with two key sets, whose call order is the write order
        _gathered(run, 2, [(5, {"a": 1.0}), (6, {"a": 2.0, "b": 1.0}), (5, {"a": 9.0})])
        run.flush()
    r = tracker.read_run(run.id, store=store)
    assert r["loss"].fetch_values(rank=1).step.tolist() == list(range(30))
    a = r["a"].fetch_values(rank=2)
    # Step 5 came twice: both kept, by step then in the order the calls were made.
    assert a.step.tolist() == [5, 5, 6] and a.value.tolist() == [1.0, 9.0, 2.0]
    assert r["a"].fetch_values(rank=2, per_step="last").value.tolist() == [9.0, 2.0]


def test_list_runs_filters_are_checked_and_match_what_init_run_stored(store: str) -> None:
    import argparse

    args = argparse.Namespace(lr=0.1, betas=[0.9, 0.99], scheduler=None)
    with tracker.init_run(project="f", store=store, config=args, system_metrics=False) as run:
        pass
    found = tracker.list_runs(project="f", store=store, config={"betas": [0.9, 0.99]})
    assert [r["id"] for r in found] == [run.id]  # a list compares as it was stored
    assert [r["id"] for r in tracker.list_runs(store=store, config={"scheduler": None})] == [run.id]
    assert tracker.list_runs(store=store, config={"lr": 0.1})[0]["config"]["lr"] == 0.1
    with pytest.raises(ValueError, match="status='finshed': use one of running, finished"):
        tracker.list_runs(store=store, status="finshed")
    with pytest.raises(TypeError, match="config= filters by a dict"):
        tracker.list_runs(store=store, config=[("lr", 0.1)])


def test_a_dataclass_config_is_recorded_field_by_field(store: str) -> None:
    import dataclasses

    @dataclasses.dataclass
    class Hyper:
        lr: float = 3e-4
        layers: int = 12

    with tracker.init_run(project="f", store=store, config=Hyper(), system_metrics=False) as run:
        pass
    r = tracker.read_run(run.id, store=store)
    assert (r["config/lr"].fetch(), r["config/layers"].fetch()) == (3e-4, 12)
