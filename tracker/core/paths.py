"""Field paths: validation, flattening of nested dicts into ``a/b/c`` paths, and back."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

MAX_PATH_LENGTH = 1024
# Nesting deeper than this is a cycle or a mistake, and would exhaust Python's stack.
MAX_DEPTH = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PLAIN = frozenset((float, int, str, bool, type(None), list, tuple))


def check_path(path: object) -> str:
    """Return ``path`` if it is a valid field path, else raise naming the problem."""
    if type(path) is not str:
        raise TypeError(f"field path must be a str, got {type(path).__name__}: {path!r}")
    if not path:
        raise ValueError("field path is empty")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(
            f"field path {path[:40]!r}... is {len(path)} characters long; "
            f"the limit is {MAX_PATH_LENGTH}"
        )
    if path[0] == "/":
        raise ValueError(
            f"field path {path!r} starts with '/'; paths are relative, like 'train/loss'"
        )
    if _CONTROL.search(path):
        raise ValueError(f"field path {path!r} contains a control character")
    if not path.isascii():
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"field path {path!r} holds a lone surrogate, which cannot be stored as UTF-8"
            ) from None
    for part in path.split("/"):
        if part == "":
            raise ValueError(f"field path {path!r} has an empty part (a doubled or trailing '/')")
        if part == "..":
            raise ValueError(f"field path {path!r} contains a '..' part")
    return path


def as_mapping(value: Any) -> Mapping[Any, Any] | None:
    """``value`` as a mapping when it is one or stands for one (an ``argparse.Namespace``,
    a dataclass instance: the forms configs come in), else None.

    >>> import argparse
    >>> as_mapping(argparse.Namespace(lr=0.1)), as_mapping([1])
    ({'lr': 0.1}, None)
    """
    if type(value) in _PLAIN:
        return None  # the common case, and the cheapest answer (run[path] = 0.5)
    if isinstance(value, Mapping):
        return value
    # Neither can be an instance of a module nobody imported: no import here.
    argparse = sys.modules.get("argparse")
    if argparse is not None and isinstance(value, argparse.Namespace):
        return vars(value)
    dataclasses = sys.modules.get("dataclasses")
    if dataclasses is not None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    return None


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings (``Namespace`` objects and dataclass instances too, see
    ``as_mapping``) into ``{"a/b": v}``; non-str keys become their ``str()``.

    >>> flatten({"opt": {"lr": 0.1, "betas": [0.9, 0.99]}}, "config")
    {'config/opt/lr': 0.1, 'config/opt/betas': [0.9, 0.99]}
    """
    out: dict[str, Any] = {}
    mapping = as_mapping(value)
    if mapping is None:
        raise TypeError(f"flatten() takes a dict, got {type(value).__name__}")
    _flatten_into(out, mapping, prefix, 0)
    return out


def _flatten_into(out: dict[str, Any], value: Mapping[Any, Any], prefix: str, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise ValueError(
            f"{prefix[:60]!r}...: nested more than {MAX_DEPTH} levels deep (a dict that "
            "contains itself?); flatten it before logging"
        )
    for key, item in value.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        nested = as_mapping(item)
        if nested is not None:
            if nested:
                _flatten_into(out, nested, path, depth + 1)
            # An empty dict records nothing: there is no value to hold.
        else:
            out[path] = item


def unflatten(flat: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The nested dict of ``{"a/b": v}`` paths (the ones below ``prefix``, without it).

    A path that is both a value and the parent of others keeps both: the deeper ones
    stay flat under their remaining path, so nothing is dropped.

    >>> unflatten({"p/lr": 0.1, "p/opt/name": "adam"}, "p")
    {'lr': 0.1, 'opt': {'name': 'adam'}}
    >>> unflatten({"a": 1, "a/b": 2})
    {'a': 1, 'a/b': 2}
    """
    start = prefix + "/" if prefix else ""
    out: dict[str, Any] = {}
    for path in sorted(flat):
        if not path.startswith(start) or path == start:
            continue
        parts = path[len(start) :].split("/")
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict) or _is_leaf(flat, start, parts[: i + 1]):
                # ``part`` holds a value itself: the rest stays flat beside it.
                node["/".join(parts[i:])] = flat[path]
                break
            node = nxt
        else:
            node[parts[-1]] = flat[path]
    return out


def _is_leaf(flat: Mapping[str, Any], start: str, parts: list[str]) -> bool:
    return start + "/".join(parts) in flat
