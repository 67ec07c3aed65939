"""Value checking and conversion: what may be stored, and in which form.

Single values (fields) keep their kind: int, float, bool, str, datetime, None ("none")
or a list ("list", stored as JSON text). ``plain_value`` is the one rule that turns what
a caller passes into one of these, for ``run[path] = value``, ``init_run(config=...)``,
integrations' hyperparameters and ``list_runs(config=...)`` filters alike
(docs/config-values.md has it as a table). Under ``config/`` nothing is refused: what
has no kind of its own is kept as stable text.

Series points are float or str. numpy scalars, 0-d arrays and one-element tensors are
accepted; a tensor that lives on an accelerator is not read here (that would synchronise
the device on the caller's thread) but wrapped in ``Deferred`` and read by the writer
thread.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import math
import os
import re
import types
from collections.abc import Mapping
from typing import Any

from .paths import MAX_DEPTH, as_mapping, check_path, flatten
from .tensors import Deferred, batch_device_values, convert, framework_of, torch_point

__all__ = [
    "Deferred",
    "check_text",
    "config_filter",
    "decode_field",
    "encode_field",
    "field_value",
    "is_config_path",
    "plain_value",
    "readable",
    "series_point",
    "stable_text",
]

# Kinds of field values as stored. "none" and "list" came later than the others: a
# store written before them holds None and lists of config values as text ("str").
INT, FLOAT, BOOL, STR, DATETIME = "int", "float", "bool", "str", "datetime"
NONE, LIST = "none", "list"
FILE = "file"

# Integers are stored as SQLite INTEGERs: signed 64-bit.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# A list is one value, read whole by every listing of runs: big data belongs in a series
# or a file. This many characters of JSON text at most.
MAX_LIST_TEXT = 100_000


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


# -- single values: one rule for every path -------------------------------------------------


def is_config_path(path: str) -> bool:
    """Whether ``path`` holds configuration (``config`` or below it): there a value the
    store has no kind for is kept as stable text instead of refused."""
    return path == "config" or path.startswith("config/")


def field_value(path: str, value: Any, *, lenient: bool = False) -> tuple[str, Any]:
    """Return ``(kind, stored value)`` for a single value, or raise TypeError/ValueError.

    ``lenient`` is the config rule: what would be refused becomes stable text instead
    (see ``plain_value``).
    """
    return encode_field(plain_value(path, value, lenient=lenient))


def plain_value(path: str, value: Any, *, lenient: bool = False) -> Any:
    """One single value (not a dict: those are flattened into paths) in the form tracker
    keeps it: None, bool, int, float, str, a datetime or date, a list (of None, bool,
    int, float, str, lists and str-keyed dicts of these), or a ``Deferred``.

    - numbers, text and datetimes as they are; numpy scalars and one-element arrays or
      tensors as their number (an accelerator tensor is a ``Deferred``, read on the
      writer thread, except with ``lenient``, where it is read now);
    - list, tuple, set, frozenset (sets sorted), numpy arrays and tensors of other sizes
      as lists, their items converted by this same rule (datetimes as ISO text, dicts,
      dataclass instances and ``Namespace`` objects as dicts);
    - paths as their text; an Enum member as its value when that is a number or text,
      else as ``ClassName.MEMBER``; functions and classes as their qualified name;
    - anything else, and what the store cannot hold (an int beyond 64 bits, a lone
      surrogate, a list whose JSON text exceeds ``MAX_LIST_TEXT``): refused with
      TypeError or ValueError naming ``path``, or with ``lenient`` (config values, which
      must never stop a training script) kept as stable text: an int's digits, the text
      with the bad characters escaped, or the object's repr without memory addresses.

    Converting a converted value gives it back unchanged.
    """
    t = type(value)
    if t is float or t is bool or value is None:
        return value
    if t is int:
        return _plain_int(path, value, lenient)
    if t is str:
        return _plain_text(path, value, lenient)
    if t is list or t is tuple:
        return _plain_list(path, value, lenient)
    return _plain_other(path, value, lenient)


def _plain_int(path: str, value: int, lenient: bool) -> Any:
    if INT_MIN <= value <= INT_MAX:
        return value
    if lenient:
        return str(value)  # kept exactly, as its digits
    return _check_int(path, value)  # raises


def _plain_text(path: str, value: str, lenient: bool) -> str:
    if lenient:
        # A config string may come from undecodable bytes: kept, escaped, not refused.
        return value if value.isascii() else _escaped(value)
    return check_text(f"value for {path!r}", value)


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _plain_other(path: str, value: Any, lenient: bool) -> Any:
    if isinstance(value, enum.Enum):
        # Before the number and text checks: an IntEnum is an int, a str mix-in a str.
        return plain_value(path, _enum_plain(value), lenient=lenient)
    if isinstance(value, _dt.datetime | _dt.date):
        return value
    if type(value) is Deferred:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _plain_int(path, int(value), lenient)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return _plain_text(path, str.__str__(value), lenient)
    if isinstance(value, os.PathLike):
        return _plain_text(path, os.fsdecode(os.fspath(value)), lenient)
    if isinstance(value, list | tuple | set | frozenset):
        return _plain_list(path, value, lenient)
    if framework_of(type(value)):
        return _plain_framework(path, value, lenient)
    if as_mapping(value) is not None:
        raise TypeError(
            f"value for {path!r} is a {type(value).__name__}: dicts are stored as one "
            f"value per key; assign it with run[{path!r}] = ... (which flattens it)"
        )
    name = _callable_name(value)
    if name is not None:
        return name
    if lenient:
        return stable_text(value)
    raise _cannot_store(path, value)


def _enum_plain(member: enum.Enum) -> Any:
    inner = member.value
    if isinstance(inner, bool | int | float | str) and not isinstance(inner, enum.Enum):
        return inner
    return f"{type(member).__qualname__}.{member.name}"


def _callable_name(value: Any) -> str | None:
    """A function, method or class by its qualified name (``Net.forward``); a builtin
    (``torch.tanh``, ``np.tanh``) by its plain name; None for anything else (a callable
    instance has no name of its own)."""
    if not callable(value):
        return None
    name = None
    if not isinstance(value, types.BuiltinFunctionType):
        name = getattr(value, "__qualname__", None)
    if not isinstance(name, str) or not name:
        name = getattr(value, "__name__", None)
    return name if isinstance(name, str) and name else None


def _cannot_store(path: str, value: Any) -> TypeError:
    cls = type(value)
    return TypeError(
        f"cannot store a {cls.__module__}.{cls.__qualname__} under {path!r}: single values "
        "are int, float, bool, str, datetime, None, lists (list, tuple, set, arrays) and "
        "dicts of these; assign str(value) to keep its text (under config/ any object is "
        "kept as its text)"
    )


def _framework_size(value: Any) -> int | None:
    """Elements in a numpy, torch, TensorFlow or JAX value; None for one that is not an
    array (``torch.float32``, a device)."""
    numel = getattr(value, "numel", None)
    if callable(numel):
        return int(numel())
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    try:
        dims = tuple(shape)
    except TypeError:
        return None
    n = 1
    for dim in dims:
        n *= int(dim) if dim is not None else 0
    return n


def _plain_framework(path: str, value: Any, lenient: bool) -> Any:
    size = _framework_size(value)
    if size is None:
        name = _callable_name(value)
        if name is not None:
            return name
        if lenient:
            return stable_text(value)
        raise _cannot_store(path, value)
    if size != 1:
        return _plain_list(path, value, lenient)
    if lenient:
        try:
            item = _read_item(value)
        except Exception:  # noqa: BLE001 - a config value must never stop a script
            return stable_text(value)
        if isinstance(item, complex):
            return stable_text(item)
        return plain_value(path, item, lenient=True)
    if framework_of(type(value)) == "numpy":
        # Its own item, not convert()'s float: a numpy int stays an int, range-checked.
        item = _read_item(value)
        if isinstance(item, complex):
            raise TypeError(
                f"value for {path!r} is a complex number ({value!r}); store its real part, "
                "imaginary part or magnitude"
            )
        return plain_value(path, item)
    converted = convert(path, value)  # a Python scalar, or a Deferred for device values
    if type(converted) is Deferred:
        if converted.needs_batch:
            batch_device_values([converted])  # a copy, safe from later in-place updates
        return converted
    return plain_value(path, converted)


def _builtin_scalar(item: Any) -> Any:
    """``longdouble(x).item()`` (and ``clongdouble``) give back the numpy type itself, which
    would send the conversion round again: a float or complex of Python then (a
    ``longdouble`` loses the bits beyond float64, as Lightning's own sanitising does)."""
    import numpy as np

    if isinstance(item, np.generic):
        if isinstance(item, np.complexfloating):
            return complex(item)
        if isinstance(item, np.floating):
            return float(item)
        if isinstance(item, np.integer):
            return int(item)
        if isinstance(item, np.bool_):
            return bool(item)
    return item


def _read_item(value: Any) -> Any:
    """The Python scalar of a one-element framework value, read now."""
    root = framework_of(type(value))
    if root == "numpy":
        item = value.reshape(()).item() if getattr(value, "ndim", 0) else value.item()
        return _builtin_scalar(item)
    if root == "torch":
        return value.detach().reshape(()).item()
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    import numpy as np

    return np.asarray(value).reshape(()).item()


def _as_python_list(value: Any) -> list[Any]:
    """A numpy array or tensor as nested Python lists (read now, copied to the host)."""
    root = framework_of(type(value))
    if root == "torch":
        return value.detach().cpu().tolist()
    tolist = getattr(value, "tolist", None)
    if root == "numpy" and callable(tolist):
        return tolist()
    import numpy as np

    return np.asarray(value).tolist()


def _plain_list(path: str, value: Any, lenient: bool) -> Any:
    if framework_of(type(value)):
        size = _framework_size(value) or 0
        if size > MAX_LIST_TEXT:  # each element takes a character or more
            if lenient:
                return stable_text(value)
            raise _too_long(path, f"an array of {size} elements")
        try:
            items: Any = _as_python_list(value)
        except Exception as exc:  # unreadable: text under config/, else refused
            if lenient:
                return stable_text(value)
            raise TypeError(
                f"value for {path!r} is a {type(value).__name__} that cannot be read as a "
                f"list ({type(exc).__name__}: {exc})"
            ) from exc
    else:
        items = value
    try:
        out = _plain_items(path, items, lenient, 0)
    except _TooDeep:
        if lenient:
            return stable_text(value)
        raise ValueError(
            f"value for {path!r} is nested more than {MAX_DEPTH} levels deep (a list that "
            "contains itself?)"
        ) from None
    text = _list_json(out)
    if len(text) > MAX_LIST_TEXT:
        if lenient:
            return stable_text(value)
        raise _too_long(path, f"a list whose JSON text is {len(text)} characters")
    return out


class _TooDeep(Exception):
    pass


def _too_long(path: str, what: str) -> ValueError:
    return ValueError(
        f"value for {path!r} is {what}; a single value holds at most {MAX_LIST_TEXT} "
        "characters of JSON. Log it as a series (run.log), or save it to a file and "
        "record that with run[path].track_files(...)"
    )


def _plain_items(path: str, items: Any, lenient: bool, depth: int) -> list[Any]:
    if depth >= MAX_DEPTH:
        raise _TooDeep
    if isinstance(items, set | frozenset):
        converted = [_plain_item(path, v, lenient, depth + 1) for v in items]
        return _sorted(converted)
    return [_plain_item(path, v, lenient, depth + 1) for v in items]


def _sorted(items: list[Any]) -> list[Any]:
    """A set's items in an order that is the same every run (set order is not)."""
    try:
        return sorted(items)
    except TypeError:  # mixed kinds: by kind, then by their JSON text
        return sorted(items, key=lambda v: (type(v).__name__, _list_json(v)))


def _plain_item(path: str, value: Any, lenient: bool, depth: int) -> Any:
    """One item inside a list: as ``plain_value``, but what JSON cannot hold as such is
    text (datetimes as ISO 8601), dicts are JSON objects, and ints have no size limit."""
    t = type(value)
    if t is float or t is bool or t is int or value is None:
        return value
    if t is str:
        return _plain_text(path, value, lenient)
    if isinstance(value, enum.Enum):
        return _plain_item(path, _enum_plain(value), lenient, depth)
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return _plain_text(path, str.__str__(value), lenient)
    if isinstance(value, os.PathLike):
        return _plain_text(path, os.fsdecode(os.fspath(value)), lenient)
    if isinstance(value, list | tuple | set | frozenset):
        return _plain_items(path, value, lenient, depth)
    mapping = as_mapping(value)
    if mapping is not None:
        if depth >= MAX_DEPTH:
            raise _TooDeep
        return {
            _plain_text(path, str(k), lenient): _plain_item(path, v, lenient, depth + 1)
            for k, v in mapping.items()
        }
    if framework_of(type(value)):
        size = _framework_size(value)
        if size == 1:
            try:
                return _plain_item(path, _read_item(value), lenient, depth)
            except Exception:  # noqa: BLE001 - unreadable: refused or text below
                pass
        elif size is not None:
            try:
                return _plain_items(path, _as_python_list(value), lenient, depth)
            except _TooDeep:
                raise
            except Exception:  # noqa: BLE001 - unreadable: refused or text below
                pass
    name = _callable_name(value)
    if name is not None:
        return name
    if lenient:
        return stable_text(value)
    cls = type(value)
    raise TypeError(
        f"value for {path!r} holds a {cls.__module__}.{cls.__qualname__} in its list: list "
        "items are int, float, bool, str, datetime, None, lists and dicts of these; "
        "convert it first (under config/ any object is kept as its text)"
    )


def _list_json(value: Any) -> str:
    # One text for one value: dict keys sorted, the separators fixed, NaN and infinities
    # as JSON's NaN/Infinity (which json.loads reads back as floats).
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_LONG_HEX = re.compile(r"0x[0-9a-fA-F]{8,}")


def stable_text(value: Any) -> str:
    """An object as text that is the same every run: its repr without memory addresses
    (``<mymod.Foo object>``, not ``<mymod.Foo object at 0x7f...>``), at most 1000
    characters.

    >>> stable_text(object())
    '<object object>'
    """
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a config value must never stop a script
        text = f"<{type(value).__qualname__} object; repr() raised {type(exc).__name__}>"
    if not isinstance(text, str):
        text = f"<{type(value).__qualname__} object>"
    # A default repr says where the object lives; that differs every run, and would
    # make `tracker compare` flag a config that did not change.
    text = _LONG_HEX.sub("0x...", _ADDRESS.sub("", text))
    text = _escaped(text)
    return text if len(text) <= 1000 else text[:997] + "..."


def encode_field(value: Any) -> tuple[str, Any]:
    """A value from ``plain_value`` as ``(kind, stored value)``: None under "none",
    lists as JSON text under "list", datetimes as their timestamp."""
    t = type(value)
    if t is bool:
        return BOOL, value
    if t is int:
        return INT, value
    if t is float:
        return FLOAT, value
    if t is str:
        return STR, value
    if value is None:
        return NONE, None
    if t is list:
        return LIST, _list_json(value)
    if t is Deferred:
        return FLOAT, value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.astimezone()  # a naive datetime means local time
        return DATETIME, value.timestamp()
    if isinstance(value, _dt.date):
        return DATETIME, _dt.datetime(value.year, value.month, value.day).astimezone().timestamp()
    raise TypeError(f"{type(value).__name__} is not a converted value (plain_value first)")


def decode_field(kind: str, value: Any) -> Any:
    """A single value as a store gives it back (``Store.fields``) -> what was assigned.

    Kinds this version does not know come back as stored.
    """
    if kind == BOOL:
        return bool(value)
    if kind == DATETIME:
        return _dt.datetime.fromtimestamp(value, tz=_dt.timezone.utc)
    if kind == FILE or kind == LIST:
        return json.loads(value)
    if kind == FLOAT:
        # SQLite stores a NaN REAL as NULL; the kind says it was a float.
        return math.nan if value is None else float(value)
    if kind == NONE:
        return None
    return value


def readable(value: Any) -> Any:
    """A config value as tracker keeps it (``plain_value`` with the config rule): never
    refused; lists as lists, objects as stable text."""
    return plain_value("config", value, lenient=True)


# -- list_runs(config=...) filters -------------------------------------------------------------


def config_filter(config: Mapping[str, Any]) -> dict[str, list[tuple[str, Any]]]:
    """``list_runs(config=...)`` as the store compares it: for each ``config/...`` path,
    the ``(kind, stored value)`` pairs a run's field may have to match.

    A value is converted by the config rule, so it matches what ``init_run(config=...)``
    and ``run["config/..."] = ...`` stored for it; a value that older versions stored as
    text (None, lists, paths, enums) also matches that text, so runs of older stores are
    found. Raises ValueError naming a key that is not a valid path.
    """
    out: dict[str, list[tuple[str, Any]]] = {}
    for path, value in flatten(config, "config").items():
        try:
            check_path(path)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config= filter: {exc}") from None
        wanted = [field_value(path, value, lenient=True)]
        legacy = _legacy_text(value)
        if legacy is not None and (STR, legacy) not in wanted:
            wanted.append((STR, legacy))
        out[path] = wanted
    return out


def _legacy_text(value: Any) -> str | None:
    """The text earlier versions stored for a config value the store had no kind for
    (None, a list, any object), or None where they stored the value itself."""
    if value is None:
        return "None"
    if isinstance(value, bool | int | float | str | _dt.datetime):
        return None
    if framework_of(type(value)) in ("numpy", "torch") and _framework_size(value) == 1:
        return None  # stored as its number
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return "[" + ", ".join(_legacy_short(v) for v in items) + "]"
    return _legacy_short(value)


def _legacy_short(value: Any) -> str:
    if isinstance(value, str):
        return _escaped(value)
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - as earlier versions wrote it, near enough
        return f"<{type(value).__qualname__} object>"
    text = _escaped(text)
    return text if len(text) <= 1000 else text[:997] + "..."


_POINT_CONVERTERS: dict[type, Any] = {
    int: _as_float,
    bool: _as_float,
    str: _text_point,
}
