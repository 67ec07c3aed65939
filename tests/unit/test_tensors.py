"""The values training loops log: numpy scalars, CPU tensors, device tensors (batched).

No GPU here: a torch.Tensor subclass that reports a CUDA device stands in for one, so
that the batching logic (one stack and one copy per call, one read per batch on the
writer) runs in CI. The real device path is checked on a GPU machine (benchmarks/).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

import tracker
from tracker.core import tensors
from tracker.core.batch import columnize
from tracker.core.tensors import FAST_TYPES, Deferred, DeviceBatch

torch = pytest.importorskip("torch", reason="the tensor tests need torch (CI installs it)")


class FakeDeviceTensor(torch.Tensor):
    """A CPU tensor that says it lives on a CUDA device."""

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True

    @property
    def is_cpu(self) -> bool:  # type: ignore[override]
        return False


def _device(value: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype).as_subclass(FakeDeviceTensor)


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[DeviceBatch]:
    made: list[DeviceBatch] = []
    real_init = DeviceBatch.__init__

    def init(self: DeviceBatch, members: list) -> None:
        real_init(self, members)
        made.append(self)

    monkeypatch.setattr(DeviceBatch, "__init__", init)
    return made


def test_device_scalars_of_one_call_become_one_batch(store: str, batches: list) -> None:
    run = tracker.init_run(project="t", store=store, system_metrics=False)
    loss = _device(0.25)
    acc = _device(0.75)
    run.log({"loss": loss, "acc": acc, "lr": 0.1}, step=0)
    assert len(batches) == 1  # two device scalars: one stack, one copy
    # In-place updates after the call do not change what is stored.
    loss.add_(100.0)
    acc.mul_(0.0)
    run.log({"loss": loss, "acc": acc}, step=1)
    run.close()
    r = tracker.read_run(run.id, store=store)
    assert r["loss"].fetch_values().value.tolist() == [0.25, 100.25]
    assert r["acc"].fetch_values().value.tolist() == [0.75, 0.0]
    assert r["lr"].fetch_values().value.tolist() == [pytest.approx(0.1)]
    assert len(batches) == 2


def test_each_dtype_and_device_gets_its_own_batch(store: str, batches: list) -> None:
    with tracker.init_run(project="t", store=store, system_metrics=False) as run:
        run.log(
            {
                "a": _device(1.5),
                "b": _device(2.5),
                "c": _device(3.0, torch.float64),
                "d": _device(7.0, torch.bfloat16),
            }
        )
    assert len(batches) == 3
    r = tracker.read_run(run.id, store=store)
    assert [r[k].fetch() for k in "abcd"] == [1.5, 2.5, 3.0, 7.0]


def test_a_batch_is_read_once_on_the_writer(batches: list) -> None:
    values = [Deferred(_device(float(i))) for i in range(5)]
    tensors.batch_device_values(values)
    (batch,) = batches
    reads = []
    real = batch.host.double

    class Host:
        def double(self):  # counts the one read of the host buffer
            reads.append(1)
            return real()

    batch.host = Host()
    ops = columnize([("logd", 3, time.time(), {f"m{i}": v for i, v in enumerate(values)})], 1)
    (op,) = ops
    assert op[0] == "logs" and op[1] == 1  # as a non-writer rank ships it
    cols = op[3][0]
    assert np.frombuffer(cols[4], dtype=np.float64).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert len(reads) == 1


def test_mixed_dicts_read_back_exactly(store: str) -> None:
    values = {
        "float": 0.1,
        "int": 3,
        "np_f32": np.float32(0.3),
        "np_f64": np.float64(0.7),
        "np_i64": np.int64(-5),
        "np_bool": np.bool_(True),
        "cpu_tensor": torch.tensor(1.25),
        "cpu_1elem": torch.tensor([2.5]),
        "device": _device(0.5),
        "np_0d": np.array(4.5),
    }
    with tracker.init_run(project="t", store=store, system_metrics=False) as run:
        for step in range(3):
            run.log(values, step=step)
        cpu = torch.tensor(9.0)
        run.log({"cpu_tensor": cpu}, step=3)
        cpu.add_(1.0)  # after the call: not what was logged
    r = tracker.read_run(run.id, store=store)
    expected = {
        "float": 0.1,
        "int": 3.0,
        "np_f32": float(np.float32(0.3)),
        "np_f64": 0.7,
        "np_i64": -5.0,
        "np_bool": 1.0,
        "cpu_tensor": 1.25,
        "cpu_1elem": 2.5,
        "device": 0.5,
        "np_0d": 4.5,
    }
    for key, value in expected.items():
        assert r[key].fetch_values().value[:3].tolist() == [value] * 3, key
    assert r["cpu_tensor"].fetch_values().value[-1] == 9.0


def test_numpy_scalars_take_the_fast_path_after_their_first_call(store: str) -> None:
    run = tracker.init_run(project="t", store=store, system_metrics=False)
    run.log({"x": np.float32(1.0)}, step=0)  # the first call classifies the type
    assert np.float32 in FAST_TYPES
    queue = run._writer.queue
    run._writer.flush()
    run.log({"x": np.float32(2.0)}, step=1)
    queued = queue[-1] if queue else None
    if queued is not None:  # the writer may already have taken it
        assert type(queued[0]) is int and type(queued[2]["x"]) is np.float32
    run.close()
    assert tracker.read_run(run.id, store=store)["x"].fetch_values().value.tolist() == [1.0, 2.0]


def test_bad_tensors_are_refused_at_the_call(store: str) -> None:
    run = tracker.init_run(project="t", store=store, system_metrics=False)
    with pytest.raises(TypeError, match="'v' is a tensor of 3 elements"):
        run.log({"v": torch.ones(3)})
    with pytest.raises(TypeError, match="'d' is a tensor of 2 elements"):
        run.log({"d": torch.ones(2).as_subclass(FakeDeviceTensor)})
    with pytest.raises(TypeError, match="complex"):
        run.log({"c": np.complex64(1 + 2j)})
    with pytest.raises(TypeError, match="numpy array of 4 elements"):
        run.log({"a": np.zeros(4)})
    run.close()


def test_a_device_tensor_assigned_as_a_field_is_copied(store: str, batches: list) -> None:
    with tracker.init_run(project="t", store=store, system_metrics=False) as run:
        value = _device(3.5)
        run["best/score"] = value
        value.add_(1.0)
    assert len(batches) == 1
    assert tracker.read_run(run.id, store=store)["best/score"].fetch() == 3.5


def test_tensorflow_values_are_read_on_the_writer_in_one_stack(store: str) -> None:
    tf = pytest.importorskip("tensorflow", reason="needs tensorflow (CI installs it)")
    stacks = []
    real = tensors._stack_read

    def counting(root: str, objs: list) -> list[float] | None:
        stacks.append(len(objs))
        return real(root, objs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tensors._stack_read = counting  # type: ignore[assignment]
        try:
            with tracker.init_run(project="t", store=store, system_metrics=False) as run:
                run.log({"a": tf.constant(1.5), "b": tf.constant(2), "c": tf.constant([3.0])})
        finally:
            tensors._stack_read = real  # type: ignore[assignment]
    assert stacks == [3]
    r = tracker.read_run(run.id, store=store)
    assert [r[k].fetch() for k in "abc"] == [1.5, 2.0, 3.0]
