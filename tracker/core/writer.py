"""The background writer: drains the run's queue into the journal, then the store.

The training thread's only work is ``deque.append``. This thread wakes every
``flush_interval`` (or at once on ``flush()``), takes what is queued, reads any deferred
tensor values, turns log calls into columns (``batch.py``), appends one journal record per chunk, applies the chunk to the store,
and fsyncs the journal at most once per ``fsync_interval`` (and on flush/close).

It yields the GIL between chunks (``time.sleep(0)``): a writer that kept the GIL
through a large backlog would stall the training thread for whole switch intervals.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from .apply import RunApplier
from .batch import columnize
from .errors import WriterError
from .journal import JournalWriter
from .replay import replay_run
from .store import Store

log = logging.getLogger("tracker")

CHUNK_OPS = 20_000


class Writer:
    """Owns one journal segment of one run and, unless offline, applies it to the store."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        apply_to_store: bool = True,
        threaded: bool = True,
        flush_interval: float = 0.5,
        fsync_interval: float = 1.0,
        heartbeat_interval: float = 5.0,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.queue: collections.deque[Any] = collections.deque()
        self.flush_interval = flush_interval
        self.fsync_interval = fsync_interval
        self.heartbeat_interval = heartbeat_interval
        self._lock_fd = store.hold_writer_lock(run_id)
        segment = store.journal_dir(run_id) / f"{time.time_ns():020d}-{os.getpid()}.jnl"
        self.journal = JournalWriter(Path(segment))
        self.applier = RunApplier(store, run_id) if apply_to_store else None
        self._store_behind = False
        self._pending: list[Any] = []  # ops not yet journaled (after a write error)
        self._errors: dict[str, int] = {}
        self.error: BaseException | None = None
        self._last_fsync = time.monotonic()
        self._last_heartbeat = 0.0
        self._cv = threading.Condition()
        self._flush_requested = 0
        self._flush_done = 0
        self._wake = threading.Event()
        self._stopping = False
        self._sync_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(
                target=self._loop, name=f"tracker-writer-{run_id}", daemon=True
            )
            self._thread.start()

    # -- called from user threads --------------------------------------------------------

    def submit_sync(self, op: Any) -> None:
        """Sync mode: journal, fsync and apply ``op`` before returning."""
        with self._sync_lock:
            self.queue.append(op)
            self._cycle(durable=True)
            if self.error is not None:
                err, self.error = self.error, None
                raise WriterError(f"tracker could not write run {self.run_id}: {err}") from err

    def flush(self, timeout: float | None = None) -> None:
        if self._thread is None:
            with self._sync_lock:
                self._cycle(durable=True)
        else:
            with self._cv:
                self._flush_requested += 1
                target = self._flush_requested
            self._wake.set()
            with self._cv:
                done = self._cv.wait_for(
                    lambda: self._flush_done >= target or not self._thread.is_alive(), timeout
                )
            if not done:
                raise TimeoutError(
                    f"tracker: flush of run {self.run_id} timed out after {timeout}s"
                )
        if self.error is not None:
            err = self.error
            raise WriterError(f"tracker could not make run {self.run_id} durable: {err}") from err

    def close(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout)
            if self._thread.is_alive():
                warnings.warn(
                    f"tracker: the writer of run {self.run_id} did not finish within "
                    f"{timeout}s; what it had not written is still in its journal",
                    RuntimeWarning,
                    stacklevel=2,
                )
        else:
            with self._sync_lock:
                self._cycle(durable=True)
        try:
            self.journal.close()
        finally:
            if self._lock_fd >= 0:
                self.store.release_lock(self._lock_fd)
                self._lock_fd = -1

    # -- the writer thread -----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            with self._cv:
                requested = self._flush_requested
            stopping = self._stopping
            try:
                self._cycle(durable=requested > self._flush_done or stopping)
            except BaseException as exc:  # noqa: BLE001 - the thread must never die silently
                self._record_error("writer", exc)
            with self._cv:
                self._flush_done = requested
                self._cv.notify_all()
            if stopping and not self.queue:
                return

    def _cycle(self, durable: bool) -> None:
        queue = self.queue
        popleft = queue.popleft
        while queue or self._pending:
            n = min(len(queue), CHUNK_OPS)
            ops = self._pending + columnize([popleft() for _ in range(n)])
            self._pending = []
            if not ops:
                break
            try:
                start, end = self.journal.append(ops)
            except OSError as exc:
                # Keep the ops in memory and try again next cycle: a full disk that frees
                # up must not have cost the points logged meanwhile.
                self._pending = ops
                self._record_error("journal", exc)
                break
            self._apply(ops, end)
            if queue:
                time.sleep(0)  # let the training thread run between chunks
        now = time.monotonic()
        if self.journal.dirty and (durable or now - self._last_fsync >= self.fsync_interval):
            try:
                self.journal.sync()
                self._last_fsync = now
            except OSError as exc:
                self._record_error("journal", exc)
        if self.applier is not None and now - self._last_heartbeat >= self.heartbeat_interval:
            self._last_heartbeat = now
            try:
                with self.store.write() as conn:
                    conn.execute(
                        "UPDATE runs SET heartbeat=? WHERE run_id=?", (time.time(), self.run_id)
                    )
            except Exception as exc:  # noqa: BLE001
                self._record_error("store", exc)
        if not self._pending and not self._store_behind and durable:
            self.error = None

    def _apply(self, ops: list[Any], end: int) -> None:
        if self.applier is None:
            return
        try:
            if self._store_behind:
                # An earlier batch failed to apply; the journal holds it. Catch up from
                # the journal, which includes the batch just written.
                replay_run(self.store, self.run_id, applier=self.applier)
                self._store_behind = False
            else:
                self.applier.apply(ops, (self.journal.path.name, end))
        except Exception as exc:  # noqa: BLE001
            self._store_behind = True
            self._record_error("store", exc)

    def _record_error(self, where: str, exc: BaseException) -> None:
        self.error = exc
        key = f"{where}:{type(exc).__name__}:{getattr(exc, 'errno', '')}"
        self._errors[key] = self._errors.get(key, 0) + 1
        if self._errors[key] == 1:
            what = {
                "journal": "append to its journal (the points stay in memory and are retried)",
                "store": "apply to the store (the journal has the points; they are replayed later)",
                "writer": "run its writer",
            }[where]
            msg = f"tracker: run {self.run_id} could not {what}: {type(exc).__name__}: {exc}"
            log.error(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=1)
