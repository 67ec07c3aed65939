"""The integrations' shared toolkit (``tracker/integrations/_common.py``), without frameworks.

What every integration relies on for the same answers: how a hyperparameter is stored,
how a constructor's arguments are read, who records, and the per-rank timing.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import pickle
from argparse import Namespace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tracker
from tracker.integrations._common import (
    SAMPLES_PER_SECOND,
    STEP_TIME,
    StepTimer,
    TrainingRuns,
    clean_key,
    clean_params,
    clean_value,
    framework_versions,
    open_local_run,
    record_config,
    records_here,
    take_run_or_project,
)


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Opt:
    lr: Any = np.float32(0.25)
    schedule: Any = math.cos


class Net:
    def forward(self) -> None: ...


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (np.float32(0.5), 0.5),
        (np.int64(3), 3),
        (np.bool_(True), True),
        (np.array([2.5]), 2.5),  # one element: its number
        (2**70, str(2**70)),  # beyond 64 bits: its digits
        (None, None),  # a null, not the text "None"
        ((64, 32), [64, 32]),  # a list, as init_run(config=...) stores it
        (math.tanh, "tanh"),
        (np.tanh, "tanh"),  # a numpy ufunc: callable, by name
        (Net, "Net"),
        (Net.forward, "Net.forward"),
        (Color.RED, "red"),
        (Path("/data/x"), "/data/x"),
        ("text", "text"),
    ],
)
def test_a_value_is_stored_as_one_thing_by_every_integration(value: Any, stored: Any) -> None:
    cleaned = clean_value(value)
    assert cleaned == stored and type(cleaned) is type(stored)


def test_torch_scalars_are_numbers() -> None:
    torch = pytest.importorskip("torch")
    assert clean_value(torch.tensor(0.5)) == 0.5
    assert clean_value(torch.tanh) == "tanh"  # not _VariableFunctionsClass.tanh
    assert clean_value(torch.float32) == "torch.float32"


def test_nested_params_flatten_readably() -> None:
    params = {
        "opt": Opt(),
        "args": Namespace(epochs=np.int64(3), act=max),
        "a/b": {"": 1, "..": 2},
        7: "seven",
    }
    assert clean_params(params) == {
        "opt": {"lr": 0.25, "schedule": "cos"},
        "args": {"epochs": 3, "act": "max"},
        "a/b": {"_": 2},  # '' and '..' cannot be path parts: both become '_'
        "7": "seven",
    }
    assert clean_params(np.float32(1.5)) == {"value": 1.5}


def test_a_cycle_ends_as_text() -> None:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    node = clean_params(looped)
    depth = 0
    while isinstance(node, dict):
        node, depth = node["self"], depth + 1
    assert isinstance(node, str) and depth <= 25


@pytest.mark.parametrize(
    ("key", "path"), [("a/b", "a/b"), ("/a//b/", "a/b"), ("", "_"), ("..", "_"), (3, "3")]
)
def test_keys_become_valid_paths(key: Any, path: str) -> None:
    assert clean_key(key) == path


def test_config_is_written_under_config(store: str) -> None:
    run = tracker.init_run("t", store=store, system_metrics=False)
    record_config(run, {"lr": np.float32(0.5)}, under="optimizer")
    run.close()
    r = tracker.read_run(run.id, store=store)
    assert r["config/optimizer/lr"].fetch() == 0.5
    assert tracker.list_runs(store=store, config={"optimizer": {"lr": 0.5}})[0]["id"] == run.id


def test_framework_versions_never_import() -> None:
    assert framework_versions("numpy", "surely_not_a_module", extra=1) == {
        "numpy_version": np.__version__,
        "extra": 1,
    }


def test_the_constructor_convention(store: str) -> None:
    run = tracker.init_run("t", store=store, system_metrics=False)
    try:
        assert take_run_or_project(run) == (run, None)
        assert take_run_or_project(run=run) == (run, None)
        assert take_run_or_project("p") == (None, "p")
        assert take_run_or_project(project="p", init_kwargs={"tags": ["x"]}) == (None, "p")
        assert take_run_or_project() == (None, None)  # $TRACKER_PROJECT, else "default"
        with pytest.raises(ValueError, match="either an open run"):
            take_run_or_project(run, project="p")
        with pytest.raises(ValueError, match="tags"):
            take_run_or_project(run, init_kwargs={"tags": ["x"]})
        # ...unless the init_run arguments are for other runs (Optuna's trials).
        kwargs = {"store": store}
        assert take_run_or_project(run, init_kwargs=kwargs, init_kwargs_with_run=True)[0] is run
        with pytest.raises(TypeError, match="twice"):
            take_run_or_project("p", project="q")
        with pytest.raises(TypeError, match="twice"):
            take_run_or_project(run, run=run)
        with pytest.raises(TypeError, match="tracker.Run or a project name"):
            take_run_or_project(3.5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="project=.*str"):
            take_run_or_project(project=run)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="init_run"):
            take_run_or_project("p", init_kwargs={"colour": "red"})
    finally:
        run.close()


def test_training_runs_from_arguments_split_the_runs_own_arguments(store: str) -> None:
    runs = TrainingRuns.from_arguments(
        "p",
        init_kwargs={"name": "n", "tags": "one", "store": store, "system_metrics": False},
        local=True,
    )
    assert runs.owns and runs.project == "p" and runs.name == "n" and runs.tags == ("one",)
    assert runs.init_kwargs == {"system_metrics": False}
    clone = pickle.loads(pickle.dumps(runs))  # a local opener travels
    assert clone._opener is open_local_run
    run = runs.start()
    runs.end()
    r = tracker.read_run(run.id, store=store)
    assert r.status == "finished" and "one" in r.tags


def test_records_here() -> None:
    assert records_here(rank=0, world_size=2)
    assert not records_here(rank=1, world_size=2)

    class Remote:
        is_writer = False

    assert not records_here(Remote(), rank=0, world_size=1)  # type: ignore[arg-type]


def test_step_timer() -> None:
    timer = StepTimer()
    assert timer.stop(8) is None  # nothing started
    timer.start(4)
    assert timer.running
    figures = timer.stop(8)
    assert figures is not None and not timer.running and timer.step == 4
    assert figures[STEP_TIME] >= 0
    if figures[STEP_TIME] > 0:
        assert figures[SAMPLES_PER_SECOND] == pytest.approx(8 / figures[STEP_TIME])
    timer.start(5)
    assert set(timer.stop()) == {STEP_TIME}  # no batch size: no throughput
