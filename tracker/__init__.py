"""tracker: experiment tracking built for distributed training.

>>> import tracker
>>> run = tracker.init_run(project="gpt-small", config={"lr": 3e-4})
>>> run.log({"train/loss": 2.31})
>>> run.close()

Public names are loaded on first use (PEP 562), so ``import tracker`` stays cheap and
imports no ML framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "init_run",
    "read_run",
    "list_runs",
    "Run",
    "TrackerError",
    "RunNotFoundError",
    "RunExistsError",
    "RunInUseError",
    "StoreError",
    "CorruptDataError",
    "WriterError",
    "__version__",
]

_LAZY = {
    "init_run": ("tracker.api", "init_run"),
    "read_run": ("tracker.core.reader", "read_run"),
    "list_runs": ("tracker.core.reader", "list_runs"),
    "Run": ("tracker.core.run", "Run"),
    "TrackerError": ("tracker.core.errors", "TrackerError"),
    "RunNotFoundError": ("tracker.core.errors", "RunNotFoundError"),
    "RunExistsError": ("tracker.core.errors", "RunExistsError"),
    "RunInUseError": ("tracker.core.errors", "RunInUseError"),
    "StoreError": ("tracker.core.errors", "StoreError"),
    "CorruptDataError": ("tracker.core.errors", "CorruptDataError"),
    "WriterError": ("tracker.core.errors", "WriterError"),
}

if TYPE_CHECKING:
    from .api import init_run
    from .core.errors import (
        CorruptDataError,
        RunExistsError,
        RunInUseError,
        RunNotFoundError,
        StoreError,
        TrackerError,
        WriterError,
    )
    from .core.reader import list_runs, read_run
    from .core.run import Run


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'tracker' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
