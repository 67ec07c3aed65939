"""The journal part of a store: segment files and writer locks in the store's directory.

Layout, under the store's directory::

    journal/<run-id>/<seg>.jnl    append-only journal segments, one per writer session
    journal/<run-id>/lock         held (exclusive flock) by the run's live writer; holds host:pid

Any store with a local directory inherits ``JournalFiles`` for this part of the
``Store`` protocol; it needs ``root`` and ``journal_root`` set.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ..errors import RunInUseError, StoreError
from .base import store_error


class JournalFiles:
    """Journal segments and the writer lock of each run, under ``journal_root``."""

    root: Path
    journal_root: Path

    def journal_dir(self, run_id: str) -> Path:
        return self.journal_root / run_id

    def segments(self, run_id: str) -> list[Path]:
        """The run's journal segments, oldest first."""
        directory = self.journal_dir(run_id)
        try:
            if not directory.is_dir():
                return []
            return sorted(directory.glob("*.jnl"))
        except OSError as exc:
            raise store_error("read the journal directory", directory, self.root, exc) from exc

    def journal_runs(self) -> list[str]:
        """Ids of the runs that have a journal directory, sorted."""
        try:
            if not self.journal_root.is_dir():
                return []
            return sorted(d.name for d in self.journal_root.iterdir() if d.is_dir())
        except OSError as exc:
            raise store_error("read", self.journal_root, self.root, exc) from exc

    def hold_writer_lock(self, run_id: str) -> int:
        """Take the run's lock as its one writer; return the fd to release later.

        The lock is an exclusive flock, so it dies with its process: a crashed or killed
        writer never blocks the next one (elastic restarts continue the run), while a
        live one is named in the error. A forked child inherits the fd but never
        releases it (``lifecycle`` detaches children), so the parent keeps its lock.
        """
        directory = self.journal_dir(run_id)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(
                f"cannot create the journal of run {run_id} in {directory}: {exc}; "
                "check that the store directory is writable"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.lock_holder(run_id)
            who = f"process {holder}" if holder else "another live process"
            raise RunInUseError(
                f"run {run_id} is being written by {who} (store {self.root}); two writers "
                "of one run would lose points. Wait for it to finish, or open another run "
                "(a different run_id, or fork_from=(run_id, step))",
                holder,
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock run {run_id} in {directory}: {exc}") from exc
        # Who holds it, for the error a second writer gets: "host:pid".
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()}:{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        return fd

    def lock_holder(self, run_id: str) -> str | None:
        """``host:pid`` of the last process that took the run's writer lock, if recorded."""
        try:
            text = (self.journal_dir(run_id) / "lock").read_text().strip()
        except OSError:
            return None
        return text or None

    @staticmethod
    def release_lock(fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def exclusive_if_idle(self, run_id: str) -> Iterator[bool]:
        """Yield True while holding the run's lock exclusively, or False if a writer lives."""
        lock_path = self.journal_dir(run_id) / "lock"
        if not lock_path.exists():
            yield True
            return
        fd = os.open(lock_path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def writer_alive(self, run_id: str) -> bool:
        with self.exclusive_if_idle(run_id) as idle:
            return not idle
