"""The embedded store under its historical name: ``Store`` is ``stores.SQLiteStore``.

The store interface is ``stores.base.Store``; ``stores.open_store`` opens one.
"""

from __future__ import annotations

from .stores.base import chunk_crc, chunk_problem, decode_str_values, resolve_store_path
from .stores.sqlite import DB_NAME, SCHEMA_VERSION
from .stores.sqlite import SQLiteStore as Store

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "Store",
    "chunk_crc",
    "chunk_problem",
    "decode_str_values",
    "resolve_store_path",
]
