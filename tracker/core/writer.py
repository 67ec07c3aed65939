"""The background writer: drains the run's queue into the journal, then the store.

The training thread's only work is ``deque.append``. This thread wakes every
``flush_interval`` (or at once on ``flush()``), takes what is queued, reads any deferred
tensor values, turns log calls into columns (``batch.py``), appends one journal record
per chunk, applies the chunk to the store, and fsyncs the journal at most once per
``fsync_interval`` (and on flush/close).

It yields the GIL between chunks (``time.sleep(0)``): a writer that kept the GIL
through a large backlog would stall the training thread for whole switch intervals.

What it guarantees when things go wrong:

- **Back-pressure.** A loop that logs faster than this thread can journal would build a
  queue that a SIGKILL loses whole. When the queue holds more than a quarter of a
  flush interval (1/8 s) of this thread's measured throughput (and more than 200,000 points' worth),
  ``Run.log`` waits (``wait_for_room``) until it is half drained. Ordinary training
  loops never get near it.
- **A journal that cannot be written** (disk full): the chunks stay in memory and are
  retried every cycle, up to ``max_unwritten_points``; past that new points are
  dropped and counted. ``flush()`` and ``close()`` raise ``WriterError`` with the counts.
- **A store that cannot be written**: the journal holds every record; the store catches
  up from it once it can (a replay from the offsets the store has applied), and the
  catch-up is checked against the journal's end before the run counts as up to date.

It also watches what it writes (``watch.py``): a batch's NaN/inf values, the user's
rules and a run gone silent become events, journaled in the same record as the points
that caused them and handed to the webhook (``alerts.py``) when one is configured.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import warnings
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from . import alerts
from . import events as ev
from .batch import columnize, count_points, group_order, group_steps
from .errors import WriterError, say_loudly
from .journal import JournalWriter
from .ops import COLS, LOGS
from .replay import replay_run
from .run import warn_lower_step
from .stores.base import Store
from .watch import Watcher

log = logging.getLogger("tracker")

CHUNK_OPS = 20_000
# Points kept in memory while the journal cannot be written, before new ones are dropped.
DEFAULT_MAX_UNWRITTEN_POINTS = 2_000_000
# Back-pressure. The queue may hold this many points' worth of log calls whatever the
# measured throughput (a few hundred thousand points take this thread tens of
# milliseconds), so that ordinary loops never wait; beyond that, this share of a flush
# interval of the writer's measured throughput. Throughput is measured in this thread's
# CPU time: wall time would count the time the training thread held the GIL, and a
# busy training thread would make the writer look slow and the limit needlessly low.
_FLOOR_POINTS = 200_000
_SHARE_OF_INTERVAL = 0.25
# Log calls the queue may hold before the writer has measured anything (its first
# chunk): generous, so that no loop waits in its first second.
_INITIAL_MAX_QUEUE = 100_000
# The longest wait between two catch-up attempts while the store lags its journal.
_MAX_RETRY_DELAY_S = 10.0
# Events that also become Python warnings, per run; the rest are only in the run.
_MAX_EVENT_WARNINGS = 20


def _has_text(batch: list[Any]) -> bool:
    """Whether a batch holds a text group (where events travel): one look per log op."""
    return any(op[0] == LOGS and any(g[0] != COLS for g in op[3]) for op in batch)


def _first_drop(steps: Any, last: int | None) -> tuple[int, int]:
    """The first step of ``steps`` lower than the one before it (or than ``last``), and
    the last step it fell below."""
    before = np.maximum.accumulate(steps)
    if last is not None:
        before = np.maximum(before, last)
        previous = np.concatenate(([last], before[:-1]))
    else:
        previous = np.concatenate(([steps[0]], before[:-1]))
    drops = np.flatnonzero(steps < previous)
    i = int(drops[0]) if len(drops) else 0
    return int(steps[i]), int(previous[i])


class Writer:
    """The journal writer, the ``ops.Writer`` of a run's writing process: owns one journal
    segment of one run and, unless offline, applies it to the store."""

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
        max_unwritten_points: int | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.queue: collections.deque[Any] = collections.deque()
        self.flush_interval = flush_interval
        self.fsync_interval = fsync_interval
        self.heartbeat_interval = heartbeat_interval
        self._lock_fd = store.hold_writer_lock(run_id)
        self._lock_pid = os.getpid()
        try:
            segment = store.journal_dir(run_id) / f"{time.time_ns():020d}-{os.getpid()}.jnl"
            self.journal = JournalWriter(Path(segment))
            self.applier = store.applier(run_id) if apply_to_store else None
        except BaseException:
            store.release_lock(self._lock_fd)  # or this process could never open it again
            raise
        self._store_behind = False
        # While the store lags, timed cycles retry the catch-up with backoff (a store
        # that is down, a server away, costs one attempt per delay, not one per cycle).
        self._retry_at = 0.0
        self._retry_delay = flush_interval
        # Chunks not journaled yet (after a write error), oldest first, and their points.
        self._pending: collections.deque[list[Any]] = collections.deque()
        self._pending_points = 0
        self._dropped_points = 0
        self._journal_failing = False
        self._last_record: tuple[str, int] | None = None  # (segment, end) of the last record
        if max_unwritten_points is None:
            max_unwritten_points = int(
                os.environ.get("TRACKER_MAX_UNWRITTEN_POINTS", DEFAULT_MAX_UNWRITTEN_POINTS)
            )
        self.max_unwritten_points = max_unwritten_points
        # Back-pressure: Run.log compares len(queue) with max_queue after each call.
        self.max_queue = _INITIAL_MAX_QUEUE
        self._room = threading.Condition()
        self._rate = 0.0  # log calls this thread journals per second of its own work
        # The highest step each of this process's series has had queued, and the series
        # already warned about a lower step: Run.log warns at the call from these, and
        # this thread for the calls it meets first (see _note_steps).
        self.series_last: dict[str, int] = {}
        self.lower_warned: set[str] = set()
        # Seconds each back-pressure wait took, the latest ones (for benchmarks).
        self.waits: collections.deque[float] = collections.deque(maxlen=100_000)
        self._errors: dict[str, int] = {}
        self.error: BaseException | None = None
        # Watching costs one vectorised sum per column group; TRACKER_WATCH=0 turns the
        # default NaN/inf watch off (for a benchmark's comparison, say).
        self.watcher = Watcher(nonfinite=os.environ.get("TRACKER_WATCH", "1") != "0")
        self.run_info: dict[str, Any] = {"id": run_id, "project": None, "name": None}
        self._notifier = alerts.notifier()
        self._event_warnings = 0
        self._last_fsync = time.monotonic()
        self._last_heartbeat = 0.0
        self._cv = threading.Condition()
        self._flush_requested = 0
        self._flush_done = 0
        self._wake = threading.Event()
        self._stopping = False
        self._sync_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # A store far away (a server): the writer thread only journals, and a shipper
        # thread sends from the journal, so that a slow server never slows the journal.
        self._remote = bool(
            threaded and self.applier is not None and getattr(store, "ships_from_journal", False)
        )
        self._ship_wake = threading.Event()
        # Orders "journaled a record, so behind" (writer) against "sent up to the last
        # record, so not behind" (shipper): without it a record could be left unsent.
        self._ship_lock = threading.Lock()
        self._ship_stop = False
        self._ship_failed = False  # the last send failed: flush() does not wait for it
        self._adopted = False  # catch-ups also cover the run's other segments
        self._shipper: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(
                target=self._loop, name=f"tracker-writer-{run_id}", daemon=True
            )
            self._thread.start()
        if self._remote:
            self._shipper = threading.Thread(
                target=self._ship_loop, name=f"tracker-shipper-{run_id}", daemon=True
            )
            self._shipper.start()

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
        thread = self._thread
        if thread is None:
            with self._sync_lock:
                self._cycle(durable=True)
        else:
            with self._cv:
                self._flush_requested += 1
                target = self._flush_requested
            self._wake.set()
            with self._cv:
                done = self._cv.wait_for(
                    lambda: self._flush_done >= target or not thread.is_alive(), timeout
                )
            if not done:
                raise TimeoutError(
                    f"tracker: flush of run {self.run_id} timed out after {timeout}s"
                )
            if self._remote:
                self._wait_shipped(timeout)
        if self.error is not None:
            err = self.error
            raise WriterError(
                f"tracker could not make run {self.run_id} durable: {self._what_is_missing()}"
            ) from err

    def adopt_segments(self) -> None:
        """Apply the run's other journal segments too, from now on (a distributed run's
        ingest process, once it has ended: what it could not apply, a store that was
        away, is then this writer's to catch up, at close as ever)."""
        self._adopted = True
        with self._ship_lock:
            self._store_behind = True
        self._wake.set()

    def wait_for_room(self) -> None:
        """Called by ``Run.log`` when the queue is over ``max_queue``: wait for the writer.

        Never waits on a writer that cannot make progress (its journal failing, its
        thread gone or stopping): those keep what they can and say so at flush/close.
        """
        thread = self._thread
        if thread is None or self._journal_failing or self._stopping:
            return
        started = time.perf_counter()
        low = self.max_queue // 2
        self._wake.set()
        with self._room:
            while (
                len(self.queue) > low
                and thread.is_alive()
                and not self._journal_failing
                and not self._stopping
            ):
                self._room.wait(0.05)
        self.waits.append(time.perf_counter() - started)

    def _what_is_missing(self) -> str:
        parts = []
        if self._pending_points:
            parts.append(
                f"{self._pending_points} point(s) are held in memory because its journal "
                f"{self.journal.path} cannot be written"
            )
        if self._dropped_points:
            parts.append(
                f"{self._dropped_points} point(s) were dropped because more than "
                f"{self.max_unwritten_points} waited for the journal "
                "(TRACKER_MAX_UNWRITTEN_POINTS)"
            )
        if self._store_behind:
            parts.append(
                f"the store {self.store.location} lags its journal, which holds every point; "
                "`tracker sync` applies it once the store can be written"
            )
        cause = f"{type(self.error).__name__}: {self.error}" if self.error else "unknown error"
        return "; ".join(parts + [f"last error: {cause}"])

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
        if self._shipper is not None:
            # Its last send covers what the writer journaled last; then close() itself
            # gives the server the rest of ``close_wait`` (``_wait_for_store``).
            self._ship_stop = True
            self._ship_wake.set()
            self._shipper.join(timeout)
        self._wait_for_store()
        if self._notifier is not None:
            # A NaN in the last steps is worth its alert: give delivery a few seconds.
            self._notifier.drain(alerts.CLOSE_WAIT_S)
        try:
            self.journal.close()
        except OSError as exc:
            self._record_error("journal", exc)
        finally:
            # Only the process that took the lock may release it: an flock is shared with
            # forked children, and their unlock would be the parent's.
            if self._lock_fd >= 0 and os.getpid() == self._lock_pid:
                self.store.release_lock(self._lock_fd)
                self._lock_fd = -1
        self.store.close()  # the calling thread's connection (opening the run used it)
        lost = self._pending_points + self._dropped_points
        if lost or (self.error is not None and self._store_behind):
            wait = getattr(self.store, "close_wait", None)
            if not lost and wait is not None:
                # A server's client: the spool holds every point, and training is over;
                # one line says what to do rather than an exception at the script's end.
                say_loudly(
                    f"tracker: run {self.run_id} is safe in its journal "
                    f"{self.journal.path.parent} but the server {self.store.root} did not "
                    f"take it within {wait:g}s (TRACKER_SERVER_CLOSE_TIMEOUT); "
                    f"`tracker sync --store {self.store.root}` sends it",
                    error=True,
                    stacklevel=2,
                )
                return
            if lost:
                what = (
                    f"{lost} point(s) logged to run {self.run_id} could not be written to its "
                    f"journal and are lost"
                )
            else:
                what = f"run {self.run_id} is safe in its journal but not yet in the store"
            raise WriterError(f"tracker: {what}: {self._what_is_missing()}") from self.error

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
                # Close this thread's database connection now: left to the garbage
                # collector, its close (a WAL checkpoint) would come at any later moment.
                self.store.close()
                return

    def _cycle(self, durable: bool) -> None:
        queue = self.queue
        popleft = queue.popleft
        if self._pending:
            self._journal_pending()
        while queue:
            started = time.thread_time()
            n = min(len(queue), CHUNK_OPS)
            ops = columnize([popleft() for _ in range(n)])
            if ops:
                self._watch(ops)
                self._note_steps(ops)
                if self._pending:
                    self._hold(ops)  # keep the order: nothing overtakes what waits
                else:
                    try:
                        _start, end = self.journal.append(ops)
                    except OSError as exc:
                        self._journal_failing = True
                        self._record_error("journal", exc)
                        self._hold(ops)
                    else:
                        self._apply(ops, end)
            if n >= 1000:
                self._measure(n, count_points(ops), time.thread_time() - started)
            self._notify_room()
            if queue:
                # A producer that keeps the queue full keeps this loop going: the fsync
                # schedule must hold inside it too.
                self._sync_journal(durable=False)
                time.sleep(0)  # let the training thread run between chunks
        now = time.monotonic()
        # Stored (and announced) with the next cycle's batch, like a run.alert.
        queue.extend(map(ev.queued_event, self.watcher.idle(now)))
        self._sync_journal(durable)
        if self._remote:
            self._ship_wake.set()  # the shipper sends and beats the heart: no network here
        elif self._store_behind and (durable or time.monotonic() >= self._retry_at):
            self._catch_up()
        if (
            self.applier is not None
            and not self._remote
            and now - self._last_heartbeat >= self.heartbeat_interval
        ):
            self._last_heartbeat = now
            try:
                self.store.heartbeat(self.run_id, time.time())
            except Exception as exc:  # noqa: BLE001
                self._record_error("store", exc)
        if (
            durable
            and not self._pending
            and not self._store_behind
            and not self._dropped_points
            and not self.journal.dirty
        ):
            self.error = None

    def _watch(self, batch: list[Any]) -> None:
        """Find events in ``batch``, add them to it, and announce every event it stores."""
        try:
            found = self.watcher.scan(batch)
            if found:
                batch.append(ev.events_op(found))
            # Every event this record stores: the watcher's, a silence found last cycle,
            # the ingest's (other ranks' points) and run.alert calls, from any rank.
            stored = ev.events_in(batch) if found or _has_text(batch) else found
            if stored:
                self._announce([e for e in stored if e.get("kind") != "alert"])
                if self._notifier is not None:
                    self._notifier.submit(self.run_info, stored)
        except Exception as exc:  # noqa: BLE001 - watching must never cost a point
            if not self._errors.get("watch"):
                self._errors["watch"] = 1
                say_loudly(
                    f"tracker: run {self.run_id}: watching its points failed "
                    f"({type(exc).__name__}: {exc}); the points are written as usual",
                    stacklevel=1,
                )

    def _announce(self, found: list[dict[str, Any]]) -> None:
        for event in found:
            if self._event_warnings >= _MAX_EVENT_WARNINGS:
                break
            self._event_warnings += 1
            tail = ""
            if self._event_warnings == _MAX_EVENT_WARNINGS:
                tail = "; further events are only in the run (`tracker events RUN`)"
            warnings.warn(
                f"tracker: run {self.run_id}: {event['message']}{tail}",
                RuntimeWarning,
                stacklevel=1,
            )

    def _note_steps(self, batch: list[Any]) -> None:
        """Keep ``series_last`` up to date; warn once per series of a lower step.

        Lower steps are stored (a fine-tuning pass, an evaluation of an earlier
        checkpoint), but they are usually a sign of a restarted counter, so the user hears
        of it once. ``Run.log`` warns at the call when it already knows the series' last
        step; a call made before this thread saw the one it follows is caught here.
        """
        for op in batch:
            if op[0] != LOGS or op[1] != 0:
                continue  # other ranks' calls are warned about on their own rank
            groups = op[3]
            if len(groups) == 1:
                self._note_group(groups[0][1], group_steps(groups[0]))
                continue
            # Several key sets: a series in more than one has its steps in call order
            # only once its pieces are merged.
            seen: dict[str, int] = {}
            for group in groups:
                for key in group[1]:
                    seen[key] = seen.get(key, 0) + 1
            pieces: dict[str, list[tuple[Any, Any]]] = {}
            for group in groups:
                steps = group_steps(group)
                alone = [k for k in group[1] if seen[k] == 1]
                if alone:
                    self._note_group(alone, steps)
                if len(alone) == len(group[1]):
                    continue
                order = group_order(group, len(steps))
                for key in group[1]:
                    if seen[key] > 1:
                        pieces.setdefault(key, []).append((steps, order))
            for key, parts in pieces.items():
                steps = np.concatenate([p[0] for p in parts])
                steps = steps[np.argsort(np.concatenate([p[1] for p in parts]), kind="stable")]
                self._note_group([key], steps)

    def _note_group(self, keys: Any, steps: Any) -> None:
        """Note ``steps`` (in call order) for every series in ``keys``.

        The common case, steps that only rise past every key's last, costs a few C-level
        passes over the keys, however many there are (100,000 series in one call).
        """
        if not len(steps) or not keys or keys[0].startswith("sys/"):
            return  # system metrics count samples on a clock of their own
        last_of = self.series_last
        high = int(steps.max())
        low = int(steps.min())
        lasts = list(map(last_of.get, keys))
        known = [last for last in lasts if last is not None]
        top = max(known) if known else None
        inside = len(steps) > 1 and bool((steps[1:] < steps[:-1]).any())
        if inside or (top is not None and low < top):
            for key, last in zip(keys, lasts, strict=True):
                if key in self.lower_warned:
                    continue
                if inside or (last is not None and low < last):
                    self.lower_warned.add(key)
                    warn_lower_step(key, *_first_drop(steps, last), 5)
        if top is None or high >= top:
            last_of.update(zip(keys, repeat(high)))
        else:
            for key, last in zip(keys, lasts, strict=True):
                if last is None or high > last:
                    last_of[key] = high

    def _sync_journal(self, durable: bool) -> None:
        now = time.monotonic()
        if self.journal.dirty and (durable or now - self._last_fsync >= self.fsync_interval):
            try:
                self.journal.sync()
                self._last_fsync = now
            except OSError as exc:
                self._record_error("journal", exc)

    def _hold(self, ops: list[Any]) -> None:
        """Keep a chunk the journal could not take, within the memory bound."""
        n = count_points(ops)
        if self._pending_points + n > self.max_unwritten_points:
            self._dropped_points += n
            if self._errors.get("dropped", 0) == 0:
                self._errors["dropped"] = 1
                msg = (
                    f"tracker: run {self.run_id}: more than {self.max_unwritten_points} points "
                    f"wait for a journal that cannot be written ({self.journal.path}); new "
                    "points are dropped and counted until it can (flush/close report them)"
                )
                say_loudly(msg, error=True, stacklevel=1)
            return
        self._pending.append(ops)
        self._pending_points += n

    def _journal_pending(self) -> None:
        """Write what waits in memory, oldest first; stop at the first failure."""
        while self._pending:
            ops = self._pending[0]
            try:
                _start, end = self.journal.append(ops)
            except OSError as exc:
                self._journal_failing = True
                self._record_error("journal", exc)
                return
            self._pending.popleft()
            self._pending_points -= count_points(ops)
            self._apply(ops, end)
        if self._journal_failing:
            self._journal_failing = False
            msg = f"tracker: run {self.run_id} can write its journal again; nothing held was lost"
            if self._dropped_points:
                msg = (
                    f"tracker: run {self.run_id} can write its journal again; "
                    f"{self._dropped_points} point(s) were dropped meanwhile"
                )
            log.warning(msg)

    def _measure(self, calls: int, points: int, busy: float) -> None:
        rate = calls / max(busy, 1e-4)
        self._rate = rate if self._rate == 0 else 0.7 * self._rate + 0.3 * rate
        per_call = max(1.0, points / calls)
        self._points_per_call = per_call
        floor = int(_FLOOR_POINTS / per_call)
        self.max_queue = max(floor, int(self._rate * self.flush_interval * _SHARE_OF_INTERVAL))

    def _notify_room(self) -> None:
        with self._room:
            self._room.notify_all()

    def _apply(self, ops: list[Any], end: int) -> None:
        if self._remote:
            with self._ship_lock:
                self._last_record = (self.journal.path.name, end)
                self._store_behind = True  # the shipper sends it from the journal
            return
        self._last_record = (self.journal.path.name, end)
        if self.applier is None or self._store_behind:
            return  # behind: the catch-up replays this record from the journal with the rest
        try:
            self.applier.apply(ops, (self.journal.path.name, end))
        except Exception as exc:  # noqa: BLE001
            self._store_behind = True
            self._record_error("store", exc)

    def _wait_for_store(self) -> None:
        """Give a store that can be waited for (a server's client: ``close_wait``
        seconds) that long to take what it lags, retrying with backoff."""
        wait = getattr(self.store, "close_wait", None)
        if not wait or not self._store_behind or self.applier is None:
            return
        if self._thread is not None and self._thread.is_alive():
            return  # the writer thread still works: nothing may apply beside it
        if self._shipper is not None and self._shipper.is_alive():
            return  # nor beside the shipper
        deadline = time.monotonic() + wait
        delay = 0.25
        while self._store_behind:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)
            self._catch_up()

    # -- the shipper thread (stores far away) ---------------------------------------------

    def _ship_loop(self) -> None:
        while True:
            stopping = self._ship_stop
            if self._store_behind and (stopping or time.monotonic() >= self._retry_at):
                try:
                    self._ship()
                except BaseException as exc:  # noqa: BLE001 - never die silently
                    self._record_error("store", exc)
            now = time.monotonic()
            if now - self._last_heartbeat >= self.heartbeat_interval and not self._ship_failed:
                self._last_heartbeat = now
                try:
                    self.store.heartbeat(self.run_id, time.time())
                except Exception as exc:  # noqa: BLE001
                    self._record_error("store", exc)
            with self._cv:
                self._cv.notify_all()  # flush() may wait for a send
            if stopping:
                self.store.close()  # this thread's connection
                return
            wait = self.flush_interval
            if self._ship_failed:
                wait = max(0.0, min(wait, self._retry_at - time.monotonic())) or wait
            self._ship_wake.wait(wait)
            self._ship_wake.clear()

    def _ship(self) -> None:
        """Send what the server lacks of the journal, as far as the writer had journaled
        when this started (what it journals meanwhile goes next time)."""
        with self._ship_lock:
            target = self._last_record
        failed_before = self._ship_failed
        if not self._catch_up_to(target):
            return
        with self._ship_lock:
            if self._last_record == target:
                self._store_behind = False  # a record journaled since keeps it True
        if not self._store_behind:
            if failed_before:
                log.warning("tracker: run %s: the server caught up with its journal", self.run_id)
            if not self._pending and not self._dropped_points:
                self.error = None

    def _catch_up_to(self, target: tuple[str, int] | None) -> bool:
        """Apply from the journal what the store lacks; whether it then holds ``target``
        (a failure is recorded, and timed retries back off)."""
        try:
            # Its own segment only: another live process may apply another (the ingest of
            # a distributed run), and two appliers of one segment could store a record twice.
            own = self.journal.path.name
            replay_run(self.store, self.run_id, applier=self.applier, segments={own})
            if self._adopted:
                # Record by record: exact even if their writer still applies them.
                others = {s.name for s in self.store.segments(self.run_id)} - {own}
                if others:
                    replay_run(
                        self.store,
                        self.run_id,
                        applier=self.applier,
                        segments=others,
                        record_by_record=True,
                    )
            applied = self.store.applied_offsets(self.run_id).get(target[0], 0) if target else 0
        except Exception as exc:  # noqa: BLE001
            self._ship_failed = True
            self._record_error("store", exc)
            self._retry_at = time.monotonic() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, _MAX_RETRY_DELAY_S)
            return False
        if target is not None and applied < target[1]:
            self._ship_failed = True
            self._record_error(
                "store",
                WriterError(f"the store applied {target[0]} up to byte {applied} of {target[1]}"),
            )
            return False
        self._ship_failed = False
        self._retry_delay = self.flush_interval
        return True

    def _wait_shipped(self, timeout: float | None) -> None:
        """flush(): wait while the shipper sends what was journaled (not while it fails:
        a server away must not hold up the training script)."""
        wait = getattr(self.store, "close_wait", None) or 30.0
        limit = wait if timeout is None else min(wait, timeout)
        self._ship_wake.set()
        shipper = self._shipper
        with self._cv:
            self._cv.wait_for(
                lambda: (
                    not self._store_behind
                    or self._ship_failed
                    or shipper is None
                    or not shipper.is_alive()
                ),
                limit,
            )

    def _catch_up(self) -> None:
        """Apply from the journal what the store lacks, then check it reached the end."""
        if self._catch_up_to(self._last_record):
            self._store_behind = False
            log.warning("tracker: run %s: the store caught up with its journal", self.run_id)

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
            say_loudly(msg, error=True, stacklevel=1)
