"""Fixtures of the fault suite: real full disks, real forks, real kills, real bit flips.

A full disk is a small tmpfs mounted for the test. Mounting needs root (CI runs as
root); elsewhere those tests skip and say why.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _mount_tmpfs(where: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``where``; return why it could not be done, or None."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs to fill needs root (CI runs as root)"
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return f"mount -t tmpfs failed here: {proc.stderr.strip() or proc.returncode}"
    return None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``small_disk("8m")`` mounts a tmpfs of that size and returns its path."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        why = _mount_tmpfs(where, size)
        if why is not None:
            pytest.skip(why)
        mounted.append(where)
        return where

    yield make
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system holding ``directory`` to the last byte; return the filler."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        block = b"\0" * (1 << 16)
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        # Then the last partial block, byte by byte.
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass
    return filler


def stored_points(store: str | Path, path_like: str = "%", run_id: str | None = None) -> int:
    """Points the store holds for series whose path matches ``path_like`` (SQL LIKE)."""
    db = sqlite3.connect(Path(store) / "store.db")
    try:
        sql = (
            "SELECT coalesce(sum(n), 0) FROM chunks JOIN series USING(series_id) "
            "WHERE path LIKE ? AND path NOT LIKE 'sys/%'"
        )
        args: list[object] = [path_like]
        if run_id is not None:
            sql += " AND run_id=?"
            args.append(run_id)
        return db.execute(sql, args).fetchone()[0]
    finally:
        db.close()
