"""Accepted values, rejected values and paths: each error names the path and the problem,
and a rejected call leaves the rest of the run intact."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import tracker
from tracker.core import values


def test_numpy_scalars_and_zero_d_arrays(store: str) -> None:
    with tracker.init_run(project="p", store=store) as run:
        run.log(
            {
                "f32": np.float32(0.5),
                "i64": np.int64(7),
                "zero_d": np.array(2.5),
                "b": np.bool_(True),
            }
        )
        run["field/np"] = np.float64(1.25)
        run["field/npint"] = np.int32(4)
    r = tracker.read_run(run.id, store=store)
    assert r["f32"].fetch_values().value.tolist() == [0.5]
    assert r["i64"].fetch_values().value.tolist() == [7.0]
    assert r["zero_d"].fetch_values().value.tolist() == [2.5]
    assert r["b"].fetch_values().value.tolist() == [1.0]
    assert r["field/np"].fetch() == 1.25
    assert r["field/npint"].fetch() == 4


def test_nan_and_inf_are_stored_as_they_are(store: str) -> None:
    with tracker.init_run(project="p", store=store) as run:
        run.log({"x": float("nan"), "y": float("inf")})
        run.log({"x": 1.0, "y": float("-inf")})
        run["f"] = float("nan")
    r = tracker.read_run(run.id, store=store)
    x = r["x"].fetch_values().value
    assert math.isnan(x[0]) and x[1] == 1.0
    assert r["y"].fetch_values().value.tolist() == [math.inf, -math.inf]
    assert math.isnan(r["f"].fetch())


def test_torch_cpu_tensors_of_one_element(store: str) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed")
    with tracker.init_run(project="p", store=store) as run:
        loss = torch.tensor(0.25, requires_grad=True) * 2
        run.log({"loss": loss, "one": torch.ones(1, 1)})
        run["final"] = torch.tensor(3)
        with pytest.raises(TypeError, match=r"'vec'.*4 elements"):
            run.log({"vec": torch.ones(4)})
    r = tracker.read_run(run.id, store=store)
    assert r["loss"].fetch_values().value.tolist() == [0.5]
    assert r["one"].fetch_values().value.tolist() == [1.0]
    assert r["final"].fetch() == 3


def test_accelerator_values_are_read_on_the_writer_thread(store: str) -> None:
    read_on: list[str] = []

    class DeviceScalar:
        """Looks like a JAX array on a device: immutable, read by item() (pure logic)."""

        shape = ()

        def item(self) -> float:
            read_on.append(threading.current_thread().name)
            return 4.5

    DeviceScalar.__module__ = "jax.fake"
    run = tracker.init_run(project="p", store=store)
    run.log({"gpu/loss": DeviceScalar()})
    run["gpu/final"] = DeviceScalar()
    assert read_on == []  # nothing read on the calling thread
    run.flush()
    run.close()
    assert len(read_on) == 2 and all(n.startswith("tracker-writer") for n in read_on)
    r = tracker.read_run(run.id, store=store)
    assert r["gpu/loss"].fetch_values().value.tolist() == [4.5]
    assert r["gpu/final"].fetch() == 4.5


def test_cuda_tensor_is_deferred_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed")
    t = torch.tensor(1.5)
    calls = []

    class FakeDevice:
        type = "cuda"

    class FakeCuda(torch.Tensor):
        pass

    fake = t.as_subclass(FakeCuda)
    # What a CUDA tensor reports (torch answers is_cuda/is_cpu without asking .device).
    monkeypatch.setattr(FakeCuda, "device", property(lambda self: FakeDevice()), raising=False)
    monkeypatch.setattr(FakeCuda, "is_cuda", property(lambda self: True), raising=False)
    monkeypatch.setattr(FakeCuda, "is_cpu", property(lambda self: False), raising=False)
    monkeypatch.setattr(FakeCuda, "item", lambda self: calls.append("item") or 1.5)
    point = values.series_point("loss", fake)
    assert isinstance(point, values.Deferred)
    assert calls == []  # no read (no device sync) on the caller's thread
    assert point.resolve() == 1.5


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ([1, 2], "list"),
        ({1, 2}, "set"),
        (None, "NoneType"),
        (object(), "object"),
        (np.ones(3), "numpy array of 3 elements"),
        (b"bytes", "bytes"),
    ],
)
def test_bad_series_values_raise_typeerror_naming_path_and_type(
    store: str, value: object, type_name: str
) -> None:
    with tracker.init_run(project="p", store=store) as run:
        run.log({"good": 1.0})
        with pytest.raises(TypeError) as err:
            run.log({"ok/before": 2.0, "bad/value": value, "ok/after": 3.0})
        assert "'bad/value'" in str(err.value) and type_name in str(err.value)
        run.log({"good": 4.0})
    r = tracker.read_run(run.id, store=store)
    # The rejected call left nothing behind; the good calls around it are all there.
    assert r["good"].fetch_values().value.tolist() == [1.0, 4.0]
    assert "ok/before" not in r.paths() and "ok/after" not in r.paths()


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "empty"),
        ("a/../b", "'..'"),
        ("/abs", "starts with '/'"),
        ("bad\x00char", "control character"),
        ("tab\there", "control character"),
        ("x" * 1025, "1025 characters"),
        ("a//b", "empty part"),
        ("trailing/", "empty part"),
    ],
)
def test_bad_paths_raise_valueerror_naming_them(store: str, path: str, problem: str) -> None:
    with tracker.init_run(project="p", store=store) as run:
        run.log({"good": 1.0})
        with pytest.raises(ValueError, match=problem):
            run.log({path: 1.0})
        with pytest.raises(ValueError, match=problem):
            run[path] = 1
        with pytest.raises(ValueError, match=problem):
            run[path].append(1.0)
        run.log({"good": 2.0})
    r = tracker.read_run(run.id, store=store)
    assert r["good"].fetch_values().value.tolist() == [1.0, 2.0]
    assert [p for p in r.paths() if not p.startswith("sys/")] == ["good"]


def test_non_str_path_and_non_dict_log(store: str) -> None:
    with tracker.init_run(project="p", store=store) as run:
        with pytest.raises(TypeError, match="str"):
            run.log({1: 1.0})
        with pytest.raises(TypeError, match="dict"):
            run.log([("a", 1.0)])
        with pytest.raises(TypeError, match="step must be an int"):
            run.log({"a": 1.0}, step=1.5)
        with pytest.raises(ValueError, match="step must be >= 0"):
            run.log({"a": 1.0}, step=-1)


def test_kind_conflicts_are_refused(store: str) -> None:
    with tracker.init_run(project="p", store=store) as run:
        run.log({"series": 1.0})
        run["field"] = 1
        run["text"].append("hi")
        with pytest.raises(TypeError, match="'series' already holds a float series"):
            run["series"] = 2
        with pytest.raises(TypeError, match="'field' already holds a single value"):
            run.log({"field": 2.0})
        with pytest.raises(TypeError, match="'text' already holds a str series"):
            run.log({"text": 1.0})
        run.log({"series": 2.0})
    r = tracker.read_run(run.id, store=store)
    assert r["series"].fetch_values().value.tolist() == [1.0, 2.0]
    assert r["field"].fetch() == 1


def test_datetime_is_refused_as_series_point_but_fine_as_field(store: str) -> None:
    import datetime as dt

    with tracker.init_run(project="p", store=store) as run:
        with pytest.raises(TypeError, match="'when'"):
            run.log({"when": dt.datetime.now()})
        run["when"] = dt.date(2026, 1, 1)
    assert tracker.read_run(run.id, store=store)["when"].fetch().year == 2026


def test_tags_must_be_strings(store: str) -> None:
    with tracker.init_run(project="p", store=store) as run:
        with pytest.raises(ValueError, match="tag"):
            run.add_tags("")
        with pytest.raises(ValueError, match="tag"):
            run.add_tags(3)
