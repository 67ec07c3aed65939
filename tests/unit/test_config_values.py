"""One rule for config values on every path (docs/config-values.md).

What ``init_run(config=...)``, ``run["config/..."] = ...``, ``run[path] = ...`` and the
integrations' hyperparameters store for one value is the same, reads back the same
through ``read_run(...).fields()`` and ``FieldReader.fetch()``, and is what
``list_runs(config=...)`` compares with.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import enum
import math
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tracker
from tracker.core import ops
from tracker.core.values import MAX_LIST_TEXT
from tracker.integrations._common import clean_value


class Color(enum.Enum):
    RED = "red"


class Shape(enum.Enum):
    SQUARE = (4, 90)  # not a number or text: stored by name


class Level(enum.IntEnum):
    HIGH = 3


class Opaque:
    """An object with nothing but the default repr, which names its memory address."""


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, and the types of numbers kept apart (1 is not True)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)

# (what is passed, what reads back); every case holds under config/ (init_run and
# assignment) and the ones marked True outside it too.
CASES = [
    ("none", None, None, True),
    ("list", [1, 2], [1, 2], True),
    ("tuple", (0.9, 0.99), [0.9, 0.99], True),
    ("set, sorted", {"b", "c", "a"}, ["a", "b", "c"], True),
    ("frozenset of numbers, sorted", frozenset({10, 9, 1}), [1, 9, 10], True),
    ("empty list", [], [], True),
    (
        "nested list with a dict and None",
        [[1, 2], {"k": None, "j": (3,)}, None],
        [[1, 2], {"j": [3], "k": None}, None],
        True,
    ),
    ("list of mixed things", [Path("/d"), Color.RED, WHEN], ["/d", "red", WHEN.isoformat()], True),
    ("non-finite floats in a list", [math.nan, math.inf], [math.nan, math.inf], True),
    ("numpy array", np.arange(3), [0, 1, 2], True),
    ("2-d numpy array", np.array([[1.5, 2.0]]), [[1.5, 2.0]], True),
    ("one-element numpy array", np.array([2.5]), 2.5, True),
    ("path", Path("/data/x"), "/data/x", True),
    ("enum with a text value", Color.RED, "red", True),
    ("enum with another value", Shape.SQUARE, "Shape.SQUARE", True),
    ("int enum", Level.HIGH, 3, True),
    ("datetime", WHEN, WHEN, True),
    ("nan stays a float", math.nan, math.nan, True),
    ("function by name", math.tanh, "tanh", True),
    ("class by name", Opaque, "Opaque", True),
    ("int beyond 64 bits, as digits", 2**70, str(2**70), False),
    ("lone surrogate, escaped", "a\udc80b", "a\\udc80b", False),
    ("object, stable text", Opaque(), f"<{__name__}.Opaque object>", False),
    ("object in a list", [Opaque()], [f"<{__name__}.Opaque object>"], False),
]


@pytest.mark.parametrize(
    ("value", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_config_value_reads_back_the_same_from_every_path(
    store: str, value: Any, expected: Any
) -> None:
    with tracker.init_run(
        project="p", store=store, config={"x": value}, system_metrics=False, quiet=True
    ) as run:
        run["config/assigned"] = value
        run["config"] = {"nested": {"x": value}}
    r = tracker.read_run(run.id, store=store)
    fields = r.fields()
    for path in ("config/x", "config/assigned", "config/nested/x"):
        assert _same(fields[path], expected), (path, fields[path])
        assert _same(r[path].fetch(), expected), path
    listed = tracker.list_runs(store=store)[0]["config"]
    assert _same(listed["x"], expected) and _same(listed["nested"]["x"], expected)
    # The integrations' hyperparameters follow the same rule.
    assert _same(clean_value(value), expected if not isinstance(expected, dt.datetime) else value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(c[1], c[2]) for c in CASES if c[3]],
    ids=[c[0] for c in CASES if c[3]],
)
def test_outside_config_the_same_values_are_accepted(store: str, value: Any, expected: Any) -> None:
    with tracker.init_run(project="p", store=store, system_metrics=False, quiet=True) as run:
        run["params/x"] = value
    r = tracker.read_run(run.id, store=store)
    assert _same(r["params/x"].fetch(), expected)
    assert _same(r.fields()["params/x"], expected)


def test_an_object_is_the_same_text_in_every_run(store: str) -> None:
    first, second = Opaque(), Opaque()  # both alive: two different addresses
    assert repr(first) != repr(second)
    ids = []
    for obj in (first, second):
        with tracker.init_run(
            project="p", store=store, config={"obj": obj}, system_metrics=False, quiet=True
        ) as run:
            run["config/assigned"] = obj
            run["config/bound"] = obj.__init__  # a bound method's repr names its object
        ids.append(run.id)
    a, b = (tracker.read_run(i, store=store).fields() for i in ids)
    for path in ("config/obj", "config/assigned", "config/bound"):
        assert a[path] == b[path], path
        assert "0x" not in a[path]
    assert a["config/obj"] == f"<{__name__}.Opaque object>"
    # Equal text, so `tracker compare` has nothing to flag, and a filter finds both.
    found = tracker.list_runs(store=store, config={"obj": Opaque()})
    assert sorted(r["id"] for r in found) == sorted(ids)


def test_outside_config_an_object_is_refused_naming_the_key(store: str) -> None:
    with tracker.init_run(project="p", store=store, system_metrics=False, quiet=True) as run:
        run["good"] = 1
        with pytest.raises(TypeError, match=r"Opaque under 'model/obj'.*str\(value\)"):
            run["model/obj"] = Opaque()
        with pytest.raises(TypeError, match=r"'model/objs' holds a .*Opaque in its list"):
            run["model/objs"] = [1, Opaque()]
        with pytest.raises(TypeError, match=r"Opaque under 'model/d/obj'"):
            run["model/d"] = {"fine": 1, "obj": Opaque()}  # refused whole: nothing stored
        with pytest.raises(ValueError, match=r"'model/big'.*64-bit"):
            run["model/big"] = 2**70
        with pytest.raises(ValueError, match=r"'model/text'.*surrogate"):
            run["model/text"] = ["a\udc80"]
    r = tracker.read_run(run.id, store=store)
    assert [p for p in r.paths() if p.startswith("model/")] == []
    assert r["good"].fetch() == 1


def test_a_too_long_list_is_refused_outside_config_and_text_under_it(store: str) -> None:
    long = list(range(MAX_LIST_TEXT // 2))
    with tracker.init_run(project="p", store=store, system_metrics=False, quiet=True) as run:
        with pytest.raises(ValueError, match=r"'weights' is a list whose JSON text.*series"):
            run["weights"] = long
        with pytest.raises(ValueError, match=r"'weights' is an array of \d+ elements"):
            run["weights"] = np.zeros(MAX_LIST_TEXT + 1)
        run["config/weights"] = long
    kept = tracker.read_run(run.id, store=store)["config/weights"].fetch()
    assert isinstance(kept, str) and kept.startswith("[0, 1, 2") and len(kept) <= 1000


def test_series_points_are_still_float_or_str(store: str) -> None:
    with tracker.init_run(project="p", store=store, system_metrics=False, quiet=True) as run:
        with pytest.raises(TypeError, match="'loss'"):
            run.log({"loss": [1.0, 2.0]})
        with pytest.raises(TypeError, match="'loss'"):
            run["loss"].append(None)
        run["field"] = [1.0]
        with pytest.raises(TypeError, match="'field' already holds a single value"):
            run.log({"field": 1.0})


def test_a_dict_assigned_reads_back_as_the_dict(store: str) -> None:
    params = {"lr": 0.1, "opt": {"name": "adam", "betas": (0.9, 0.99)}, "none": None}
    with tracker.init_run(project="p", store=store, system_metrics=False, quiet=True) as run:
        run["params"] = params
        run["config"] = {"model": {"layers": [64, 32], "act": "relu"}}
    r = tracker.read_run(run.id, store=store)
    assert r["params"].fetch() == {
        "lr": 0.1,
        "opt": {"name": "adam", "betas": [0.9, 0.99]},
        "none": None,
    }
    assert r["params/opt"].fetch() == {"name": "adam", "betas": [0.9, 0.99]}
    assert r["config/model"].fetch() == {"layers": [64, 32], "act": "relu"}
    # Stored one value per key, as before: each path reads on its own too.
    assert r["params/opt/name"].fetch() == "adam"
    with pytest.raises(KeyError, match="'param'"):
        r["param"].fetch()  # a prefix of a name is not a parent path


def test_dataclasses_and_namespaces_are_dicts_everywhere(store: str) -> None:
    @dataclasses.dataclass
    class Optim:
        lr: float = 0.1
        betas: tuple = (0.9, 0.99)

    config = {"optim": Optim(), "args": argparse.Namespace(seed=1, tags=["a"])}
    with tracker.init_run(
        project="p", store=store, config=config, system_metrics=False, quiet=True
    ) as run:
        run["params"] = Optim()
    r = tracker.read_run(run.id, store=store)
    assert r["config"].fetch() == {
        "optim": {"lr": 0.1, "betas": [0.9, 0.99]},
        "args": {"seed": 1, "tags": ["a"]},
    }
    assert r["params"].fetch() == {"lr": 0.1, "betas": [0.9, 0.99]}


def test_list_runs_filters_compare_by_the_same_rule(store: str) -> None:
    def make(config: dict[str, Any]) -> str:
        with tracker.init_run(
            project="f", store=store, config=config, system_metrics=False, quiet=True
        ) as run:
            pass
        return run.id

    a = make(
        {
            "betas": (0.9, 0.99),
            "scheduler": None,
            "data": Path("/data/a"),
            "color": Color.RED,
            "names": {"y", "x"},
            "lr": 1,
            "loss": math.nan,
            "when": WHEN,
        }
    )
    b = make({"betas": [0.9, 0.999], "scheduler": "cosine", "data": "/data/b", "lr": 0.5})

    def ids(**config: Any) -> list[str]:
        return [r["id"] for r in tracker.list_runs(project="f", store=store, config=config)]

    assert ids(betas=[0.9, 0.99]) == [a]  # a list, a tuple: the same
    assert ids(betas=(0.9, 0.999)) == [b]
    assert ids(scheduler=None) == [a]
    assert ids(scheduler="None") == []  # the text is not the null
    assert ids(data=Path("/data/a")) == [a] and ids(data="/data/b") == [b]
    assert ids(color=Color.RED) == [a] and ids(color="red") == [a]
    assert ids(names=["x", "y"]) == [a] and ids(names={"x", "y"}) == [a]
    assert ids(lr=1.0) == [a]  # numbers compare as numbers
    assert ids(loss=math.nan) == [a]
    assert ids(when=WHEN) == [a]
    assert ids(betas=[0.99, 0.9]) == []  # a list's order counts
    assert ids(betas=[0.9, 0.99], scheduler="cosine") == []
    with pytest.raises(ValueError, match=r"config= filter: field path 'config/a//b' has an empty"):
        ids(**{"a//b": 1})
    with pytest.raises(ValueError, match="status='finshed': use one of running, finished"):
        tracker.list_runs(store=store, status="finshed")


def test_a_store_written_before_lists_and_none_had_kinds_reads_the_same(store: str) -> None:
    # What earlier versions journaled for config={"scheduler": None, "betas": [0.9, 0.99],
    # "names": ["a", "b"]}: each value as its text, kind "str".
    with tracker.init_run(project="old", store=store, system_metrics=False, quiet=True) as run:
        for path, text in (
            ("config/scheduler", "None"),
            ("config/betas", "[0.9, 0.99]"),
            ("config/names", "[a, b]"),
            ("config/data", "PosixPath('/data/a')"),
        ):
            run._enqueue(ops.set_value(path, "str", text, 0.0))
    r = tracker.read_run(run.id, store=store)
    # Read as stored: the text, not a null or a list.
    assert r["config/scheduler"].fetch() == "None"
    assert r.fields()["config/betas"] == "[0.9, 0.99]"
    assert r["config"].fetch()["names"] == "[a, b]"

    def ids(**config: Any) -> list[str]:
        return [x["id"] for x in tracker.list_runs(project="old", store=store, config=config)]

    # Filters written for the values find the text older versions stored for them.
    assert ids(scheduler=None) == [run.id]
    assert ids(betas=[0.9, 0.99]) == [run.id]
    assert ids(names=["a", "b"]) == [run.id]
    assert ids(data=Path("/data/a")) == [run.id]
    assert ids(scheduler=None, betas=(0.9, 0.99)) == [run.id]


def test_new_kinds_travel_through_the_journal(store: str) -> None:
    # An offline run reaches the store only from its journal: replayed by read_run.
    run = tracker.init_run(
        project="p",
        store=store,
        mode="offline",
        config={"betas": (0.9, 0.99), "none": None},
        system_metrics=False,
        quiet=True,
    )
    run["params"] = {"sizes": np.array([1, 2]), "empty": None}
    run.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = tracker.read_run(run.id, store=store)
    assert {p: v for p, v in r.fields().items() if not p.startswith("sys/")} == {
        "config/betas": [0.9, 0.99],
        "config/none": None,
        "params/sizes": [1, 2],
        "params/empty": None,
    }
    db = sqlite3.connect(Path(store) / "store.db")
    kinds = dict(db.execute("SELECT path, kind FROM fields WHERE run_id=?", (run.id,)).fetchall())
    db.close()
    assert kinds["config/betas"] == "list" and kinds["config/none"] == "none"


def test_credentials_inside_lists_are_masked(store: str) -> None:
    config = {
        "dbs": ["postgres://u:hunter2@h/db", "sqlite:///x"],
        "servers": [{"host": "h", "password": "hunter2"}],
        "api_keys": ["k1", "k2"],
    }
    with tracker.init_run(
        project="p", store=store, config=config, system_metrics=False, quiet=True
    ) as run:
        run["config/later"] = [{"db_password": "hunter2", "n": 1}]
    fields = tracker.read_run(run.id, store=store).fields()
    assert fields["config/dbs"] == ["postgres://u:********@h/db", "sqlite:///x"]
    assert fields["config/servers"] == [{"host": "h", "password": "********"}]
    assert fields["config/api_keys"] == "********"
    assert fields["config/later"] == [{"db_password": "********", "n": 1}]
    assert "hunter2" not in repr(fields)


def test_torch_tensors_of_several_elements_are_lists(store: str) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed")
    with tracker.init_run(
        project="p",
        store=store,
        config={"mean": torch.tensor([0.5, 0.25]), "one": torch.tensor([3])},
        system_metrics=False,
        quiet=True,
    ) as run:
        run["stats/std"] = torch.ones(2, 1)
        run["config/dtype"] = torch.float32
        with pytest.raises(TypeError, match="torch.dtype under 'stats/dtype'"):
            run["stats/dtype"] = torch.float32
    fields = tracker.read_run(run.id, store=store).fields()
    assert fields["config/mean"] == [0.5, 0.25]
    assert fields["config/one"] == 3
    assert fields["stats/std"] == [[1.0], [1.0]]
    assert fields["config/dtype"] == "torch.float32"
