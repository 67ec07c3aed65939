"""Field paths: validation and flattening of nested dicts into ``a/b/c`` paths."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_PATH_LENGTH = 1024
# Nesting deeper than this is a cycle or a mistake, and would exhaust Python's stack.
MAX_DEPTH = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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


def flatten(value: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into ``{"a/b": v}``; non-str keys become their ``str()``."""
    out: dict[str, Any] = {}
    _flatten_into(out, value, prefix, 0)
    return out


def _flatten_into(out: dict[str, Any], value: Mapping[Any, Any], prefix: str, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise ValueError(
            f"{prefix[:60]!r}...: nested more than {MAX_DEPTH} levels deep (a dict that "
            "contains itself?); flatten it before logging"
        )
    for key, item in value.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(item, Mapping):
            if item:
                _flatten_into(out, item, path, depth + 1)
            # An empty dict records nothing: there is no value to hold.
        else:
            out[path] = item
