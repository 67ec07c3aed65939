"""Value checking and conversion: what may be stored, and in which form.

Single values (fields) keep their kind: int, float, bool, str or datetime. Series points
are float or str. numpy scalars, 0-d arrays and one-element tensors are accepted; a tensor
that lives on an accelerator is not read here (that would synchronise the device on the
caller's thread) but wrapped in ``Deferred`` and read by the writer thread.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

# Kinds of field values as stored.
INT, FLOAT, BOOL, STR, DATETIME = "int", "float", "bool", "str", "datetime"
FILE = "file"


class Deferred:
    """A value read later, on the writer thread (accelerator tensors, lazy frameworks)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def resolve(self) -> float:
        obj = self.obj
        item = getattr(obj, "item", None)
        value = item() if item is not None else float(obj)
        if type(value) is bool:
            return float(value)
        return float(value)


def _tensor_scalar(path: str, value: Any) -> Any:
    """Handle torch / TensorFlow / JAX / numpy arrays of exactly one element.

    Returns a Python scalar, a ``Deferred``, or raises TypeError.
    """
    root = _framework_of(type(value))
    if root == "numpy":
        size = getattr(value, "size", 1)
        if size != 1:
            raise TypeError(
                f"value for {path!r} is a numpy array of {size} elements; "
                "log a scalar (one element)"
            )
        return value.item() if getattr(value, "ndim", 0) == 0 else value.reshape(()).item()
    if root == "torch":
        numel = value.numel()
        if numel != 1:
            raise TypeError(
                f"value for {path!r} is a tensor of {numel} elements; log a scalar (one element)"
            )
        if value.device.type == "cpu":
            return value.item()
        # detach().clone() is queued on the device stream without waiting for it, and
        # protects the value from in-place updates made after this call (loss += ...).
        return Deferred(value.detach().clone())
    if root in ("tensorflow", "tf_keras", "keras", "jax", "jaxlib"):
        shape = getattr(value, "shape", ())
        n = 1
        for dim in tuple(shape):
            n *= int(dim) if dim is not None else 0
        if n != 1:
            raise TypeError(
                f"value for {path!r} is a {type(value).__name__} of shape {tuple(shape)}; "
                "log a scalar (one element)"
            )
        # These tensors are immutable: keeping a reference is enough, and reading it on
        # the writer thread keeps any device wait off the training thread.
        return Deferred(value)
    raise TypeError(_bad_type(path, value))


_FRAMEWORKS = frozenset(("numpy", "torch", "tensorflow", "tf_keras", "keras", "jax", "jaxlib"))


def _framework_of(cls: type) -> str:
    # Walk the MRO so that subclasses (nn.Parameter, user tensor subclasses) count too.
    for klass in cls.__mro__:
        root = (klass.__module__ or "").partition(".")[0]
        if root in _FRAMEWORKS:
            return root
    return ""


def _bad_type(path: str, value: Any) -> str:
    return (
        f"cannot log {type(value).__module__}.{type(value).__qualname__} under {path!r}: "
        "supported values are int, float, bool, str, datetime, numpy scalars and "
        "one-element tensors (and nested dicts of these for assignment)"
    )


def series_point(path: str, value: Any) -> Any:
    """Convert one series point to float, str or ``Deferred``, or raise TypeError."""
    t = type(value)
    if t is float:
        return value
    if t is int or t is bool:
        return float(value)
    if t is str:
        return value
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, _dt.datetime | _dt.date):
        raise TypeError(
            f"cannot append a {t.__name__} to series {path!r}: series hold float or str; "
            "assign datetimes as single values (run[path] = value)"
        )
    converted = _tensor_scalar(path, value)
    if type(converted) is Deferred:
        return converted
    if isinstance(converted, str):
        return converted
    return float(converted)


def field_value(path: str, value: Any) -> tuple[str, Any]:
    """Return ``(kind, stored value)`` for a single value, or raise TypeError."""
    t = type(value)
    if t is bool:
        return BOOL, value
    if t is int:
        return INT, value
    if t is float:
        return FLOAT, value
    if t is str:
        return STR, value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.astimezone()  # a naive datetime means local time
        return DATETIME, value.timestamp()
    if isinstance(value, _dt.date):
        return DATETIME, _dt.datetime(value.year, value.month, value.day).astimezone().timestamp()
    if isinstance(value, bool):
        return BOOL, bool(value)
    if isinstance(value, int):
        return INT, int(value)
    if isinstance(value, float):
        return FLOAT, float(value)
    if isinstance(value, str):
        return STR, str(value)
    converted = _tensor_scalar(path, value)
    if type(converted) is Deferred:
        return FLOAT, converted
    return field_value(path, converted)


def readable(value: Any) -> Any:
    """Make a config value storable: unsupported values become readable text.

    Used for ``config=`` and framework hyperparameters, where lists, None and objects are
    common and refusing them would only get in the user's way.
    """
    if value is None or isinstance(value, bool | int | float | str | _dt.datetime):
        return "None" if value is None else value
    root = _framework_of(type(value))
    if root in ("numpy", "torch") and getattr(value, "size", None) is not None:
        try:
            size = value.numel() if root == "torch" else value.size
            if size == 1:
                return value.item()
        except Exception:  # noqa: BLE001 - fall back to text below
            pass
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return "[" + ", ".join(_short(v) for v in items) + "]"
    return _short(value)


def _short(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return value
    text = repr(value)
    return text if len(text) <= 1000 else text[:997] + "..."
