"""Stores: where runs are kept, behind one protocol (``base.Store``).

``open_store`` opens the store at a location (a ``store=`` argument, $TRACKER_STORE or
``./.tracker``); ``diagnose`` runs ``tracker doctor``'s checks of the store itself. The
embedded SQLite store (``sqlite.py``) is the one kind today; ``base.py`` says what
another must implement.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import Applier, Check, Chunk, SeriesInfo, Store, resolve_store_path
from .sqlite import SQLiteStore, check_database

__all__ = [
    "Applier",
    "Check",
    "Chunk",
    "SQLiteStore",
    "SeriesInfo",
    "Store",
    "diagnose",
    "open_store",
    "resolve_store_path",
]


def open_store(
    location: str | os.PathLike[str] | None = None,
    *,
    create: bool = True,
    readonly: bool = False,
) -> Store:
    """The store at ``location``: created if missing (unless ``create=False``), or opened
    read-only (``readonly=True``: never writes, see ``Store.for_writing``)."""
    return SQLiteStore(location, create=create, readonly=readonly)


def diagnose(location: str | os.PathLike[str] | Path | None) -> tuple[list[Check], Store | None]:
    """The checks of the store itself (exists, intact, a schema this tracker reads), and
    the store opened read-only where they leave anything to check."""
    return check_database(resolve_store_path(location))
