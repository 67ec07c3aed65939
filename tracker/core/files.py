"""File references: what ``track_files`` records (URI, size, content hash), never a copy."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

_REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "hdfs://", "http://", "https://")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe(path_or_uri: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe a file, a directory or a remote URI without copying it.

    A file gives its size and SHA-256; a directory its total size, file count and one
    hash over the sorted (relative path, file hash) pairs; a remote URI only itself.
    """
    text = os.fspath(path_or_uri)
    if text.startswith(_REMOTE_SCHEMES):
        return {"uri": text, "size": None, "hash": None, "files": None}
    if text.startswith("file://"):
        text = text[len("file://") :]
    path = Path(text).expanduser().absolute()
    if path.is_file():
        return {
            "uri": path.as_uri(),
            "size": path.stat().st_size,
            "hash": "sha256:" + _sha256(path),
            "files": 1,
        }
    if path.is_dir():
        total = 0
        count = 0
        h = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = file.relative_to(path).as_posix()
            digest = _sha256(file)
            h.update(f"{rel}\0{digest}\n".encode())
            total += file.stat().st_size
            count += 1
        return {
            "uri": path.as_uri(),
            "size": total,
            "hash": "sha256:" + h.hexdigest(),
            "files": count,
        }
    raise FileNotFoundError(
        f"track_files: {text!r} is neither a file, a directory nor a remote URI"
    )
