"""The append-only journal: framed, checksummed records, one file per writer session.

Every operation is written here before the store sees it. A segment starts with
``MAGIC`` (6 bytes) and holds records. The current format (version 2) frames a record as

    SYNC (4 bytes) | u32 LE payload length | u32 LE CRC-32 of (length bytes + payload) | payload

and the payload is a pickled list of operations made only of builtin values (the
unpickler below refuses anything else, so a journal cannot run code).

Why the sync marker: a record that is damaged in the middle of a segment (a flipped
bit, a partial write the writer could not cut back) must not cost the records after
it. The reader looks for the next marker (``mmap.find``) and takes the first candidate
whose length fits, whose checksum matches and whose payload decodes. The checksum
covers the length bytes too, so a corrupted length cannot send the reader off to a
wrong end. A damaged region followed by intact records is *mid-segment corruption*
(the records in it are lost; ``SegmentScan.skipped`` says where and how much); one that
runs to the end of the file is a *torn tail*, what a crash mid-write leaves.

Version 1 segments (``MAGIC_V1``, records ``u32 length | u32 CRC-32 of payload |
payload`` without a marker) are still read, exactly as before: the reader stops at
their first bad record, since without a marker there is nothing reliable to resync to.
New segments are always written in version 2.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import pickle
import re
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAGIC = b"TRKJ\x02\n"
MAGIC_V1 = b"TRKJ\x01\n"
# Both versions' headers have the same length, so ``len(MAGIC)`` is where records start.
HEADER_LEN = len(MAGIC)
assert len(MAGIC_V1) == HEADER_LEN

# Any 4 bytes would be correct (every candidate is checked by length, checksum and
# decoding); high, distinct bytes are rare in pickled text and small ints, so a resync
# meets few false candidates.
SYNC = b"\xd7\x4a\x9c\xe1"
_LEN_CRC = struct.Struct("<II")
_HEADER_V1 = _LEN_CRC
_HEADER_V2 = len(SYNC) + _LEN_CRC.size
_PROTOCOL = 5
_SEGMENT_NAME = re.compile(r"^(\d{20})-")


class _BuiltinsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"journal record refers to {module}.{name}; refusing it")


def frame(payload: bytes) -> bytes:
    """One version-2 record around ``payload`` (already pickled)."""
    length = struct.pack("<I", len(payload))
    return SYNC + length + struct.pack("<I", zlib.crc32(payload, zlib.crc32(length))) + payload


def encode(ops: list[Any]) -> bytes:
    """One version-2 record holding ``ops``, ready to append to a segment."""
    return frame(pickle.dumps(ops, protocol=_PROTOCOL))


def decode(payload: bytes) -> list[Any]:
    """The ops in a record's payload (or any pickle of builtin data); refuses classes."""
    return _BuiltinsOnly(io.BytesIO(payload)).load()


@dataclass
class SegmentScan:
    """What reading a segment found. ``read_records(..., stats=scan)`` fills one in.

    ``skipped`` lists damaged regions that intact records follow: the ops in them are
    lost. ``torn_tail`` is the region after the last intact record that holds no
    intact record (a crash mid-write, or a partial write): nothing after it to lose.
    A scan that started at ``start > 0`` says nothing about bytes before ``start``.
    """

    path: Path | None = None
    version: int = 0  # 1 or 2; 0 when the file is not (or not yet) a journal segment
    size: int = 0
    start: int = 0
    records: int = 0
    intact_bytes: int = 0  # bytes of intact records, framing included
    end: int = 0  # just past the last intact record (the header's end if none)
    skipped: list[tuple[int, int]] = field(default_factory=list)  # (offset, length)
    torn_tail: tuple[int, int] | None = None  # (offset, length)

    @property
    def skipped_bytes(self) -> int:
        return sum(length for _, length in self.skipped)

    @property
    def corrupt(self) -> bool:
        """Whether records were lost in the middle of the segment."""
        return bool(self.skipped)

    def where_skipped(self, most: int = 5) -> str:
        """The first ``most`` damaged regions, as "N bytes at offset O, ..."."""
        return ", ".join(f"{n} bytes at offset {off}" for off, n in self.skipped[:most])


class JournalWriter:
    """Appends records to one segment file; ``sync()`` makes them durable.

    An append that fails (a full disk) is cut back off the segment before the error is
    re-raised, so a half-written record never sits between intact ones and the caller
    can simply retry. If even the cut fails, the next append starts a new segment in
    the same directory; ``path`` is always the segment the last record went to.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dirty = False
        self._fd = -1
        self._broken = False  # the segment's tail could not be cut back: do not append to it
        self._open(path, exclusive=False)

    def _open(self, path: Path, *, exclusive: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_EXCL if exclusive else 0)
        fd = os.open(path, flags, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                data = memoryview(MAGIC)
                while data:
                    data = data[os.write(fd, data) :]
                self._sync_dir(path.parent)
                size = HEADER_LEN
            else:
                with open(path, "rb") as f:
                    head = f.read(HEADER_LEN)
                if head != MAGIC:
                    # Appending v2 records to a v1 (or foreign) file would make it unreadable.
                    raise ValueError(f"{path} is not a version-2 journal segment; not appending")
        except BaseException:
            os.close(fd)
            if exclusive:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        self._fd, self.path, self.offset = fd, path, size

    def append(self, ops: list[Any]) -> tuple[int, int]:
        """Write one record; return its (start, end) offsets in the segment."""
        if self._broken:
            self._new_segment()
        record = encode(ops)
        start = self.offset
        try:
            self._write(record)
        except BaseException:
            # Cut the partial record off, so the segment ends on a record boundary and
            # the retry lands right after the last good record.
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._broken = True
            self.offset = start
            raise
        self.offset = start + len(record)
        self.dirty = True
        return start, self.offset

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _new_segment(self) -> None:
        """Leave a segment whose tail could not be cut back for a new one beside it."""
        if self.dirty:
            os.fsync(self._fd)  # what is in the old segment must still become durable
            self.dirty = False
        directory = self.path.parent
        # Named as the writer names segments, and never sorting before the current one:
        # replay applies segments in name order.
        match = _SEGMENT_NAME.match(self.path.name)
        floor = int(match.group(1)) + 1 if match else 0
        name = f"{max(time.time_ns(), floor):020d}-{os.getpid()}.jnl"
        old_fd = self._fd
        self._open(directory / name, exclusive=True)
        self._broken = False
        with contextlib.suppress(OSError):
            os.close(old_fd)

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


def read_records(
    path: Path, start: int = 0, stats: SegmentScan | None = None
) -> Iterator[tuple[int, list[Any]]]:
    """Yield ``(end_offset, ops)`` for each intact record at or after ``start``.

    ``start`` is 0 or an end offset this function yielded before. In a version-2
    segment a damaged record is skipped and reading goes on at the next intact one; a
    version-1 segment ends at its first bad record. ``stats``, if given, is filled in
    as the records are read (complete once the iterator is exhausted). The segment is
    memory-mapped, so replaying a large journal does not read it into memory.
    """
    scan = stats if stats is not None else SegmentScan()
    scan.path = Path(path)
    scan.start = start
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        scan.size = size
        scan.end = max(start, HEADER_LEN)
        if size < HEADER_LEN:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            head = data[:HEADER_LEN]
            if head == MAGIC:
                scan.version = 2
                yield from _read_v2(data, size, scan.end, scan)
            elif head == MAGIC_V1:
                scan.version = 1
                yield from _read_v1(data, size, scan.end, scan)


def scan_segment(path: Path) -> SegmentScan:
    """Read a whole segment and return what was intact, skipped and torn in it."""
    scan = SegmentScan()
    for _ in read_records(path, 0, scan):
        pass
    return scan


def _read_v1(
    data: mmap.mmap, size: int, pos: int, scan: SegmentScan
) -> Iterator[tuple[int, list[Any]]]:
    while pos + _HEADER_V1.size <= size:
        length, crc = _HEADER_V1.unpack_from(data, pos)
        body_start = pos + _HEADER_V1.size
        body_end = body_start + length
        if body_end > size:
            break
        payload = data[body_start:body_end]
        if zlib.crc32(payload) != crc:
            break
        try:
            ops = decode(payload)
        except Exception:  # noqa: BLE001 - a record we cannot read ends a v1 segment
            break
        scan.records += 1
        scan.intact_bytes += body_end - pos
        scan.end = body_end
        yield body_end, ops
        pos = body_end
    if pos < size:
        # Without sync markers there is no telling what follows; the rest is the tail.
        scan.torn_tail = (pos, size - pos)


def _record_v2(data: mmap.mmap, size: int, pos: int) -> tuple[int, list[Any]] | None:
    """The record at ``pos`` as ``(end, ops)``, or None if there is no intact one."""
    body_start = pos + _HEADER_V2
    if body_start > size or data[pos : pos + len(SYNC)] != SYNC:
        return None
    length, crc = _LEN_CRC.unpack_from(data, pos + len(SYNC))
    body_end = body_start + length
    if body_end > size:
        return None
    payload = data[body_start:body_end]
    length_bytes = data[pos + len(SYNC) : pos + len(SYNC) + 4]
    if zlib.crc32(payload, zlib.crc32(length_bytes)) != crc:
        return None
    try:
        ops = decode(payload)
    except Exception:  # noqa: BLE001 - undecodable counts as damaged; resync past it
        return None
    return body_end, ops


def _read_v2(
    data: mmap.mmap, size: int, pos: int, scan: SegmentScan
) -> Iterator[tuple[int, list[Any]]]:
    bad_from: int | None = None  # where the damaged region being skipped began
    while pos < size:
        record = _record_v2(data, size, pos)
        if record is None:
            if bad_from is None:
                bad_from = pos
            nxt = data.find(SYNC, pos + 1)
            if nxt < 0:
                break
            pos = nxt
            continue
        if bad_from is not None:
            scan.skipped.append((bad_from, pos - bad_from))
            bad_from = None
        end, ops = record
        scan.records += 1
        scan.intact_bytes += end - pos
        scan.end = end
        yield end, ops
        pos = end
    if bad_from is not None:
        scan.torn_tail = (bad_from, size - bad_from)
