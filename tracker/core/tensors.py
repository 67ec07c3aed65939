"""Framework values on the hot path: numpy scalars, CPU tensors and device tensors.

Training loops log tensors (``loss.detach()``, Lightning metrics) and numpy scalars
(Keras, XGBoost, scikit-learn) far more than Python floats. Two things keep them cheap:

- **A converter per exact type**, found once per type (walking the class hierarchy to
  tell numpy from torch from TensorFlow) and then looked up in a dict. numpy scalar types
  are immutable, so after the first call they join ``FAST_TYPES`` and ``Run.log`` passes
  them to the writer untouched, as it does floats; the writer packs them with numpy.
- **Device scalars batched.** A device tensor cannot be read on the caller's thread
  without synchronising the device. All the device scalars of one ``log`` call become one
  ``torch.stack`` (a single kernel, and a copy, so later in-place updates of the logged
  tensors do not change what is stored), copied into pinned host memory with
  ``non_blocking=True`` on the caller's current stream, followed by a recorded event.
  The writer thread waits on that event alone, never on the device, and reads every
  value of the batch in one go. TensorFlow and JAX values are immutable: they are kept by
  reference and read on the writer thread, one stack per batch of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Types whose values Run.log may queue untouched (immutable numbers the writer packs).
# numpy scalar types are added the first time one is converted.
FAST_TYPES: set[type] = {float, int}

_FRAMEWORKS = frozenset(("numpy", "torch", "tensorflow", "tf_keras", "keras", "jax", "jaxlib"))
_IMMUTABLE_DEVICE = ("tensorflow", "tf_keras", "keras", "jax", "jaxlib")


class Deferred:
    """A value read later, on the writer thread (device tensors, lazy frameworks).

    ``obj`` is the value itself, or with ``index`` set, the ``DeviceBatch`` it was
    copied into.
    """

    __slots__ = ("obj", "index")

    def __init__(self, obj: Any, index: int | None = None) -> None:
        self.obj = obj
        self.index = index

    def resolve(self) -> float:
        if self.index is not None:
            return self.obj.value(self.index)
        obj = self.obj
        item = getattr(obj, "item", None)
        value = item() if item is not None else float(obj)
        return float(value)

    @property
    def needs_batch(self) -> bool:
        """A torch device tensor not yet copied: ``batch_device_values`` takes it."""
        return self.index is None and _framework_of(type(self.obj)) == "torch"


class DeviceBatch:
    """The device scalars of one call, stacked and copied to the host as one operation."""

    __slots__ = ("host", "event", "values")

    def __init__(self, tensors: list[Any]) -> None:
        import torch

        # reshape(()) is a view (no kernel); stack is the one kernel, and a copy.
        stacked = torch.stack([t.detach().reshape(()) for t in tensors])
        self.event = None
        if stacked.is_cuda and _cuda_available():
            host = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
            host.copy_(stacked, non_blocking=True)  # on the caller's current stream
            event = torch.cuda.Event()
            event.record()  # the current stream: the writer waits for this copy alone
            self.event = event
        else:
            # Another device (or a test double that reports one): a plain copy.
            host = stacked.detach().to("cpu", copy=True)
        self.host = host
        self.values: list[float] | None = None

    def value(self, index: int) -> float:
        if self.values is None:
            if self.event is not None:
                self.event.synchronize()
            self.values = [float(v) for v in self.host.double().tolist()]
        return self.values[index]


_CUDA: bool | None = None


def _cuda_available() -> bool:
    global _CUDA
    if _CUDA is None:
        import torch

        _CUDA = bool(torch.cuda.is_available())
    return _CUDA


def batch_device_values(points: list[Deferred]) -> None:
    """Copy the pending torch device tensors among ``points`` in one batch per
    (device, dtype) group, pointing each ``Deferred`` at its slot."""
    groups: dict[tuple[Any, Any], list[Deferred]] = {}
    for point in points:
        tensor = point.obj
        groups.setdefault((tensor.device, tensor.dtype), []).append(point)
    for members in groups.values():
        batch = DeviceBatch([p.obj for p in members])
        for i, point in enumerate(members):
            point.obj, point.index = batch, i


def resolve_many(values: list[Deferred]) -> list[Any]:
    """Read many deferred values; TensorFlow/JAX ones with one stack per framework.

    Returns, for each value, its float or the exception that reading it raised.
    """
    out: list[Any] = [None] * len(values)
    stacks: dict[str, list[int]] = {}
    for i, value in enumerate(values):
        root = "" if value.index is not None else _framework_of(type(value.obj))
        if root in _IMMUTABLE_DEVICE:
            stacks.setdefault(root, []).append(i)
            continue
        out[i] = _resolve_one(value)
    for root, indices in stacks.items():
        if len(indices) > 1:
            try:
                read = _stack_read(root, [values[i].obj for i in indices])
            except Exception:  # noqa: BLE001 - mixed shapes or devices: one at a time
                read = None
            if read is not None:
                for i, v in zip(indices, read, strict=True):
                    out[i] = float(v)
                continue
        for i in indices:
            out[i] = _resolve_one(values[i])
    return out


def _resolve_one(value: Deferred) -> Any:
    try:
        return value.resolve()
    except Exception as exc:  # noqa: BLE001 - reported by the caller, per value
        return exc


def _stack_read(root: str, objs: list[Any]) -> list[float] | None:
    if root in ("tensorflow", "tf_keras", "keras"):
        import tensorflow as tf

        flat = [tf.reshape(tf.cast(o, tf.float64), ()) for o in objs]
        return [float(v) for v in tf.stack(flat).numpy().tolist()]
    if root in ("jax", "jaxlib"):
        import jax.numpy as jnp

        flat = [jnp.reshape(o, ()).astype(jnp.float32) for o in objs]
        return [float(v) for v in jnp.stack(flat).tolist()]
    return None


# -- converters, one per exact type ------------------------------------------------------

# type -> converter(path, value) returning a float, a str or a Deferred, or raising.
_CONVERTERS: dict[type, Callable[[str, Any], Any]] = {}


def convert(path: str, value: Any) -> Any:
    """A framework value as a series point: float, ``Deferred``, or TypeError."""
    conv = _CONVERTERS.get(type(value))
    if conv is None:
        conv = _CONVERTERS[type(value)] = _converter_for(type(value))
    return conv(path, value)


def _converter_for(cls: type) -> Callable[[str, Any], Any]:
    root = _framework_of(cls)
    if root == "numpy":
        import numpy as np

        if issubclass(cls, np.generic):
            if np.dtype(cls).kind in "fiub":
                FAST_TYPES.add(cls)  # immutable: Run.log may queue it as it is
                return _numpy_number
            return _numpy_other
        return _numpy_array
    if root == "torch":
        return _torch_value
    if root in _IMMUTABLE_DEVICE:
        return _immutable_device_value
    return _unsupported


def _numpy_number(path: str, value: Any) -> float:
    return float(value)


def _numpy_other(path: str, value: Any) -> Any:
    item = value.item()
    if isinstance(item, complex):
        raise TypeError(
            f"value for {path!r} is a complex number ({value!r}); log its real part, "
            "imaginary part or magnitude as floats"
        )
    return item  # a str, a datetime...: the caller decides


def _numpy_array(path: str, value: Any) -> Any:
    size = getattr(value, "size", 1)
    if size != 1:
        raise TypeError(
            f"value for {path!r} is a numpy array of {size} elements; log a scalar (one element)"
        )
    # A 0-d array is mutable: read it now.
    return _numpy_other(path, value.reshape(()))


def _torch_value(path: str, value: Any) -> Any:
    if not value.is_cpu:  # CUDA, MPS, XLA...: never read on the caller's thread
        if value.numel() != 1:
            raise TypeError(
                f"value for {path!r} is a tensor of {value.numel()} elements; "
                "log a scalar (one element)"
            )
        # Read on the writer thread after one batched copy (see batch_device_values).
        return Deferred(value)
    try:
        item = value.item()  # a CPU tensor may change in place later: read it now
    except RuntimeError:
        raise TypeError(
            f"value for {path!r} is a tensor of {value.numel()} elements; log a scalar "
            "(one element)"
        ) from None
    if isinstance(item, complex):
        raise TypeError(f"value for {path!r} is a complex tensor; log a real value")
    return item


def _immutable_device_value(path: str, value: Any) -> Any:
    shape = getattr(value, "shape", ())
    n = 1
    for dim in tuple(shape):
        n *= int(dim) if dim is not None else 0
    if n != 1:
        raise TypeError(
            f"value for {path!r} is a {type(value).__name__} of shape {tuple(shape)}; "
            "log a scalar (one element)"
        )
    # Immutable: keeping a reference is enough, and reading it on the writer thread
    # keeps any device wait off the training thread.
    return Deferred(value)


def _unsupported(path: str, value: Any) -> Any:
    raise TypeError(
        f"cannot log {type(value).__module__}.{type(value).__qualname__} under {path!r}: "
        "supported values are int, float, bool, str, datetime, numpy scalars and "
        "one-element tensors (and nested dicts of these for assignment)"
    )


def _framework_of(cls: type) -> str:
    # Walk the MRO so that subclasses (nn.Parameter, user tensor subclasses) count too.
    for klass in cls.__mro__:
        root = (klass.__module__ or "").partition(".")[0]
        if root in _FRAMEWORKS:
            return root
    return ""


def torch_point(path: str, value: Any) -> Any:
    """``convert`` for torch tensors, without the type lookup (the caller did it)."""
    return _torch_value(path, value)


def framework_of(cls: type) -> str:
    """The framework (numpy, torch, tensorflow, ...) a type belongs to, or ""."""
    return _framework_of(cls)
