"""The append-only journal: framed, checksummed records, one file per writer session.

Every operation is written here before the store sees it. A record is

    u32 little-endian payload length | u32 CRC-32 of the payload | payload

and the payload is a pickled list of operations made only of builtin values (the
unpickler below refuses anything else, so a journal cannot run code). A record whose
length runs past the end of the file, or whose checksum does not match, is a torn tail:
the reader stops there. Each writer session appends to a segment of its own, so a
segment never continues after a tail that a crash left half-written.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAGIC = b"TRKJ\x01\n"
_HEADER = struct.Struct("<II")
_PROTOCOL = 5


class _BuiltinsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        raise pickle.UnpicklingError(f"journal record refers to {module}.{name}; refusing it")


def encode(ops: list[Any]) -> bytes:
    payload = pickle.dumps(ops, protocol=_PROTOCOL)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> list[Any]:
    return _BuiltinsOnly(io.BytesIO(payload)).load()


class JournalWriter:
    """Appends records to one segment file; ``sync()`` makes them durable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.offset = os.fstat(self._fd).st_size
        if self.offset == 0:
            self._write(MAGIC)
            self._sync_dir(path.parent)
        self.dirty = False

    def append(self, ops: list[Any]) -> tuple[int, int]:
        """Write one record; return its (start, end) offsets in the segment."""
        start = self.offset
        self._write(encode(ops))
        self.dirty = True
        return start, self.offset

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.offset += len(data)

    def sync(self) -> None:
        if self.dirty:
            os.fsync(self._fd)
            self.dirty = False

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1

    @staticmethod
    def _sync_dir(directory: Path) -> None:
        # A new file's directory entry must be durable too, or a machine crash can lose it.
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def read_records(path: Path, start: int = 0) -> Iterator[tuple[int, list[Any]]]:
    """Yield ``(end_offset, ops)`` for each intact record at or after ``start``.

    Stops silently at a torn or corrupt tail: everything before it is intact. The
    segment is memory-mapped, so replaying a large journal does not read it into memory.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < len(MAGIC):
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[: len(MAGIC)] != MAGIC:
                return
            pos = max(start, len(MAGIC))
            while pos + _HEADER.size <= size:
                length, crc = _HEADER.unpack_from(data, pos)
                body_start = pos + _HEADER.size
                body_end = body_start + length
                if body_end > size:
                    return
                payload = data[body_start:body_end]
                if zlib.crc32(payload) != crc:
                    return
                try:
                    ops = decode(payload)
                except Exception:  # noqa: BLE001 - a record we cannot read ends the segment
                    return
                yield body_end, ops
                pos = body_end
