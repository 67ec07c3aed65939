"""Value checking and conversion: what may be stored, and in which form.

Single values (fields) keep their kind: int, float, bool, str or datetime. Series points
are float or str. numpy scalars, 0-d arrays and one-element tensors are accepted; a tensor
that lives on an accelerator is not read here (that would synchronise the device on the
caller's thread) but wrapped in ``Deferred`` and read by the writer thread.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Any

from .tensors import Deferred, batch_device_values, convert, framework_of, torch_point

__all__ = ["Deferred", "check_text", "decode_field", "field_value", "readable", "series_point"]

# Kinds of field values as stored.
INT, FLOAT, BOOL, STR, DATETIME = "int", "float", "bool", "str", "datetime"
FILE = "file"

# Integers are stored as SQLite INTEGERs: signed 64-bit.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def check_text(what: str, text: str) -> str:
    """Return ``text`` if it can be stored (UTF-8), else raise ValueError naming ``what``.

    A lone surrogate (``"a\\udc80b"``, what ``os.fsdecode`` makes of undecodable bytes)
    has no UTF-8 form: SQLite would refuse it at the writer, long after the call.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise ValueError(
            f"{what} holds {bad!r} at position {exc.start}, a lone surrogate that cannot be "
            "stored as UTF-8; decode it properly (or use errors='replace')"
        ) from None
    return text


def _check_int(path: str, value: int) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(
            f"value for {path!r} is {value}, outside the signed 64-bit range the store holds; "
            "store it as a str (or a float) instead"
        )
    return value


def _tensor_scalar(path: str, value: Any) -> Any:
    """A numpy, torch, TensorFlow or JAX value of exactly one element: a Python scalar,
    a ``Deferred`` (device values), or TypeError. See ``tensors.py``."""
    return convert(path, value)


def _framework_of(cls: type) -> str:
    return framework_of(cls)


def series_point(path: str, value: Any) -> Any:
    """Convert one series point to float, str or ``Deferred``, or raise TypeError.

    One dict lookup by exact type finds the conversion; a type seen for the first time
    is classified once (``_point_converter``).
    """
    t = type(value)
    if t is float:
        return value
    conv = _POINT_CONVERTERS.get(t)
    if conv is None:
        conv = _POINT_CONVERTERS[t] = _point_converter(t)
    return conv(path, value)


def _point_converter(cls: type) -> Any:
    root = framework_of(cls)
    if root == "torch":
        return _torch_point  # the common case of training loops: one call less
    if root:
        return _framework_point  # numpy (np.float64 too), TensorFlow, JAX
    if issubclass(cls, bool | int | float):
        return _as_float
    if issubclass(cls, str):
        return _text_point
    if issubclass(cls, _dt.datetime | _dt.date):
        return _datetime_point
    return _framework_point  # raises the "cannot log" TypeError


def _framework_point(path: str, value: Any) -> Any:
    converted = convert(path, value)
    if type(converted) is Deferred or type(converted) is float:
        return converted
    if isinstance(converted, str):
        return check_text(f"value for {path!r}", converted)
    if isinstance(converted, _dt.datetime | _dt.date):
        return _datetime_point(path, converted)
    return _as_float(path, converted)


def _torch_point(path: str, value: Any) -> Any:
    converted = torch_point(path, value)
    if type(converted) is float or type(converted) is Deferred:
        return converted
    return _as_float(path, converted)  # an int or bool tensor


def _text_point(path: str, value: Any) -> str:
    return check_text(f"value for {path!r}", str(value))


def _datetime_point(path: str, value: Any) -> Any:
    raise TypeError(
        f"cannot append a {type(value).__name__} to series {path!r}: series hold float or "
        "str; assign datetimes as single values (run[path] = value)"
    )


def _as_float(path: str, value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"value for {path!r} is an int too large for a float (it has "
            f"{len(str(abs(int(value))))} digits); series hold float64 values"
        ) from None


def field_value(path: str, value: Any) -> tuple[str, Any]:
    """Return ``(kind, stored value)`` for a single value, or raise TypeError."""
    t = type(value)
    if t is bool:
        return BOOL, value
    if t is int:
        return INT, _check_int(path, value)
    if t is float:
        return FLOAT, value
    if t is str:
        return STR, check_text(f"value for {path!r}", value)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.astimezone()  # a naive datetime means local time
        return DATETIME, value.timestamp()
    if isinstance(value, _dt.date):
        return DATETIME, _dt.datetime(value.year, value.month, value.day).astimezone().timestamp()
    if isinstance(value, bool):
        return BOOL, bool(value)
    if isinstance(value, int):
        return INT, _check_int(path, int(value))
    if isinstance(value, float):
        return FLOAT, float(value)
    if isinstance(value, str):
        return STR, check_text(f"value for {path!r}", str(value))
    if framework_of(type(value)) == "numpy" and hasattr(value, "item"):
        # A single value keeps its kind: a numpy int stays an int (and is range-checked).
        if getattr(value, "size", 1) != 1:
            raise TypeError(
                f"value for {path!r} is a numpy array of {value.size} elements; "
                "assign a scalar (one element)"
            )
        return field_value(path, value.reshape(()).item() if value.ndim else value.item())
    converted = _tensor_scalar(path, value)
    if type(converted) is Deferred:
        if converted.needs_batch:
            batch_device_values([converted])  # a copy, safe from later in-place updates
        return FLOAT, converted
    return field_value(path, converted)


def decode_field(kind: str, value: Any) -> Any:
    """A single value as a store gives it back (``Store.fields``) -> what was assigned."""
    if kind == BOOL:
        return bool(value)
    if kind == DATETIME:
        return _dt.datetime.fromtimestamp(value, tz=_dt.timezone.utc)
    if kind == FILE:
        return json.loads(value)
    if kind == FLOAT:
        # SQLite stores a NaN REAL as NULL; the kind says it was a float.
        return math.nan if value is None else float(value)
    return value


def readable(value: Any) -> Any:
    """Make a config value storable: unsupported values become readable text.

    Used for ``config=`` and framework hyperparameters, where lists, None and objects are
    common and refusing them would only get in the user's way.
    """
    if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        return str(int(value))  # beyond 64 bits: kept exactly, as its digits
    if isinstance(value, str):
        # A config string may come from undecodable bytes; keep it, readable, not refused.
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or isinstance(value, bool | int | float | _dt.datetime):
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
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a config value must never stop init_run
        text = f"<{type(value).__qualname__} object; repr() raised {type(exc).__name__}>"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 1000 else text[:997] + "..."


_POINT_CONVERTERS: dict[type, Any] = {
    int: _as_float,
    bool: _as_float,
    str: _text_point,
}
