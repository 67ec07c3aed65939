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
    "store_kind",
]


def open_store(
    location: str | os.PathLike[str] | None = None,
    *,
    create: bool = True,
    readonly: bool = False,
) -> Store:
    """The store at ``location``: created if missing (unless ``create=False``), or opened
    read-only (``readonly=True``: never writes, see ``Store.for_writing``).

    ``postgresql://...`` is a team server's database (``postgres.py``), ``http(s)://...``
    a team server (``http.py``), anything else a directory of the embedded store."""
    kind = store_kind(location)
    url = os.fspath(location) if location is not None else os.environ.get("TRACKER_STORE", "")
    if kind == "postgresql":
        from .postgres import PostgresStore

        return PostgresStore(url, create=create, readonly=readonly)
    if kind == "http":
        from .http import HTTPStore

        return HTTPStore(url, create=create, readonly=readonly)
    return SQLiteStore(location, create=create, readonly=readonly)


def store_kind(location: str | os.PathLike[str] | None) -> str:
    """ "postgresql", "http" or "directory": which store a location names (the default
    location, $TRACKER_STORE, is read here when ``location`` is None)."""
    if location is None:
        location = os.environ.get("TRACKER_STORE") or ".tracker"
    text = os.fspath(location)
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    if text.startswith(("http://", "https://")):
        return "http"
    return "directory"


def diagnose(location: str | os.PathLike[str] | Path | None) -> tuple[list[Check], Store | None]:
    """The checks of the store itself (exists, intact, a schema this tracker reads), and
    the store opened read-only where they leave anything to check."""
    if store_kind(location) == "http":
        from .http import check_server

        url = os.fspath(location) if location is not None else os.environ["TRACKER_STORE"]
        return check_server(url)
    if store_kind(location) == "postgresql":
        from .postgres import check_postgres

        url = os.fspath(location) if location is not None else os.environ["TRACKER_STORE"]
        return check_postgres(url)
    return check_database(resolve_store_path(location))
