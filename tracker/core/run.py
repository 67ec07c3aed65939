"""The run object: what a training script holds and calls.

``Run.log`` is the hottest path in tracker. Its fast path checks that every key is a
path already validated as a float series and every value a plain float or int (two
set operations in C), copies the dict and appends one tuple to the writer's deque.
Anything else takes ``_log_slow``, which validates and converts each item and raises
at the call with the path and the problem, before anything is queued: a rejected call
leaves no trace, and the rest of the run is untouched.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import numbers
import os
import threading
import time
import traceback
import warnings
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import events as _events
from . import lifecycle, ops
from .files import describe
from .paths import as_mapping, check_path, flatten
from .secrets import mask_field, mask_text
from .tensors import FAST_TYPES, batch_device_values
from .values import (
    FILE,
    Deferred,
    check_text,
    encode_field,
    is_config_path,
    plain_value,
    series_point,
)

if TYPE_CHECKING:
    from pathlib import Path

_time = time.time
# float, int, and numpy scalar types once seen: immutable numbers the writer packs.
_FAST_TYPES = FAST_TYPES
# Steps are stored as SQLite INTEGERs (signed 64-bit).
_STEP_LIMIT = 2**63
FINAL_STATUSES = ("finished", "failed", "terminated")

# Kinds a path can have within one run; a path keeps the kind it first had.
_FIELD, _FLOAT, _STR = "field", "float", "str"


class _Sink:
    def append(self, op: Any) -> None:
        pass

    def __len__(self) -> int:
        return 0


class NullWriter:
    """The ``ops.Writer`` of a disabled run (and of a forked child's copy of a run):
    accepts everything, keeps nothing."""

    max_queue = 1 << 62

    def __init__(self) -> None:
        self.queue = _Sink()
        self.series_last: dict[str, int] = {}
        self.lower_warned: set[str] = set()

    def wait_for_room(self) -> None:
        pass

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass

    def submit_sync(self, op: Any) -> None:
        pass


class Handle:
    """A path inside a run: ``run["train/loss"]``. Assign with ``run[path] = value``."""

    __slots__ = ("_run", "_path")

    def __init__(self, run: Run, path: str) -> None:
        self._run = run
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def append(
        self,
        value: Any,
        step: int | None = None,
        timestamp: float | _dt.datetime | None = None,
    ) -> None:
        """Append one point to this series (float or str).

        Without ``step`` the series' own counter is used (one more than its last step).

        Example::

            run["eval/accuracy"].append(0.91, step=100)
        """
        self._run._append(self._path, value, step, timestamp)

    def extend(self, values: list[Any], steps: list[int] | None = None) -> None:
        """Append several points, with matching ``steps`` or the series' own counter."""
        if steps is not None and len(steps) != len(values):
            raise ValueError(f"extend({self._path!r}): {len(values)} values but {len(steps)} steps")
        for i, value in enumerate(values):
            self._run._append(self._path, value, None if steps is None else steps[i], None)

    def assign(self, value: Any) -> None:
        """Same as ``run[path] = value``."""
        self._run[self._path] = value

    def track_files(self, path_or_uri: str) -> dict[str, Any]:
        """Record a reference to a file, directory or remote URI: URI, size, content hash.

        The files stay where they are; only the description is stored, and returned.

        Example::

            run["model/checkpoint"].track_files("checkpoints/last.ckpt")
        """
        return self._run._track_files(self._path, path_or_uri)

    def __repr__(self) -> str:
        return f"<tracker field {self._path!r} of run {self._run.id}>"


class Run:
    """One experiment run. Create it with ``tracker.init_run``.

    Example::

        run = tracker.init_run(project="mnist", config={"lr": 1e-3})
        run.log({"train/loss": 0.25})
        run["eval/accuracy"] = 0.97
        run.close()
    """

    # The store directory, set by open_run on a run it opens in a store (absent on a
    # disabled run or a non-writer rank's: readers use getattr with a default).
    _store_root: Path

    def __init__(
        self,
        *,
        run_id: str,
        project: str,
        name: str | None,
        writer: ops.Writer,
        sync: bool = False,
        rank: int = 0,
        world_size: int = 1,
        is_writer: bool = True,
        next_step: int = 0,
        series_next: dict[str, int] | None = None,
        kinds: dict[str, str] | None = None,
        close_timeout: float | None = None,
    ) -> None:
        self.id = run_id
        self.project = project
        self.name = name
        self.rank = rank
        self.world_size = world_size
        self.is_writer = is_writer
        self._writer = writer
        self._enqueue = writer.submit_sync if sync else writer.queue.append
        # Back-pressure reads the queue's length after each log call; a sync or disabled
        # run has no backlog (an empty tuple is never over the limit).
        self._queue = () if sync else writer.queue
        self._counter = itertools.count(next_step)
        # The highest step of each series as the writer knows it, shared with it.
        self._series_last = writer.series_last
        self._lower_warned = writer.lower_warned
        self._step_lock = threading.Lock()
        self._pid = os.getpid()
        self._step = next_step
        self._series_next: dict[str, int] = dict(series_next or {})
        self._kinds: dict[str, str] = dict(kinds or {})
        self._float_paths: set[str] = {p for p, k in self._kinds.items() if k == _FLOAT}
        self._close_timeout = close_timeout
        self._closed = False
        self._on_close: list[Any] = []
        self.status = "running"
        lifecycle.register(self)

    # -- logging --------------------------------------------------------------------------

    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
        """Append one point to each series named in ``data``, all at ``step``.

        Without ``step`` the run's own counter is used: one step per ``log`` call. When
        the caller logs faster than the background writer can make it durable, this
        waits for the writer rather than let the backlog outgrow the flush interval.

        Example::

            run.log({"train/loss": loss, "train/lr": lr}, step=global_step)
        """
        # Every key a known float series and every value a plain number: queue the call
        # as it is (two C-level set operations); anything else is checked value by value.
        fast = (
            type(data) is dict
            and self._float_paths.issuperset(data)
            and _FAST_TYPES.issuperset(map(type, data.values()))
        )
        if step is None:
            # Taking the step and queueing the call under one lock keeps threads that
            # share a run from queueing steps out of order (the store keeps a series'
            # steps rising), as well as from sharing a step.
            with self._step_lock:
                step = next(self._counter)
                if step < self._step:
                    step = self._resync_counter()
                if fast:
                    # ops.log_call, inline; ``fast`` means data is a dict.
                    self._enqueue((step, _time(), data.copy()))  # type: ignore[attr-defined]
                else:
                    self._log_slow(data, step, _time())
        else:
            if type(step) is int and 0 <= step < _STEP_LIMIT:
                if step >= self._step:
                    self._step = step + 1
                elif step < self._step - 1:
                    self._check_lower(data, step)  # not the newest step: maybe a lower one
            else:
                step = self._check_step(step)
                if step < self._step - 1:
                    self._check_lower(data, step)
            if fast:
                self._enqueue((step, _time(), data.copy()))  # type: ignore[attr-defined]
            else:
                self._log_slow(data, step, _time())
        if len(self._queue) > self._writer.max_queue:
            self._writer.wait_for_room()

    def _resync_counter(self) -> int:
        # An explicit step went past the implicit counter: restart it above that step.
        # (Called with _step_lock held.)
        step = self._step
        self._counter = itertools.count(step + 1)
        return step

    def _next_step(self) -> int:
        """The step after the highest this run has used (explicit or counted), unconsumed."""
        with self._step_lock:
            counted = next(self._counter)
            self._counter = itertools.count(counted)  # put it back
        return max(self._step, counted, max(self._series_last.values(), default=-1) + 1)

    def _check_lower(self, data: Any, step: int) -> None:
        # Lower steps are stored; the first one of each series is worth one warning.
        last_of = self._series_last
        warned = self._lower_warned
        try:
            keys = list(data)
        except TypeError:
            return  # not a mapping: _log_slow says so
        for key in keys:
            last = last_of.get(key)
            if last is not None and step < last and key not in warned:
                warned.add(key)
                warn_lower_step(key, step, last, 4)

    def _check_step(self, step: Any) -> int:
        step = _valid_step(step)
        if step >= self._step:
            self._step = step + 1
        return step

    def _log_slow(self, data: Mapping[str, Any], step: int, ts: float) -> None:
        if not isinstance(data, Mapping):
            raise TypeError(f"log() takes a dict of path -> value, got {type(data).__name__}")
        out: dict[str, Any] = {}
        new: list[tuple[str, str]] = []
        deferred: list[Deferred] = []
        text = False
        kinds = self._kinds
        for path, value in data.items():
            if path not in self._float_paths:
                check_path(path)
            point = series_point(path, value)
            if type(point) is Deferred:
                kind = _FLOAT
                deferred.append(point)
            elif type(point) is str:
                kind = _STR
                text = True
                point = mask_field(path, point)  # text may carry credentials, as fields do
            else:
                kind = _FLOAT
            known = kinds.get(path)
            if known is None:
                new.append((path, kind))
            elif known != kind:
                raise _kind_error(path, known, kind)
            out[path] = point
        # Only now, with every item accepted, does anything change.
        for path, kind in new:
            kinds[path] = kind
            if kind == _FLOAT:
                self._float_paths.add(path)
        if deferred:
            # Every device scalar of this call: one stack, one copy to the host.
            pending = [p for p in deferred if p.needs_batch]
            if pending:
                batch_device_values(pending)
            self._enqueue(ops.log_deferred(step, ts, out))
        elif text:
            self._enqueue(ops.log_text_call(step, ts, out))
        else:
            self._enqueue(ops.log_call(step, ts, out))

    def _append(self, path: str, value: Any, step: int | None, timestamp: Any) -> None:
        check_path(path)
        point = series_point(path, value)
        kind = _FLOAT if type(point) is Deferred or type(point) is float else _STR
        if kind == _STR:
            point = mask_field(path, point)  # text may carry credentials, as fields do
        known = self._kinds.get(path)
        if known is not None and known != kind:
            raise _kind_error(path, known, kind)
        if step is None:
            step = self._series_next.get(path, 0)
        else:
            step = _valid_step(step)
            last = self._series_last.get(path)
            if last is not None and step < last and path not in self._lower_warned:
                self._lower_warned.add(path)
                warn_lower_step(path, step, last, 4)
        if timestamp is None:
            ts = _time()
        elif isinstance(timestamp, _dt.datetime):
            ts = timestamp.timestamp()
        elif isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
            ts = float(timestamp)
        else:
            raise TypeError(
                f"timestamp for {path!r} must be a float (seconds since the epoch) or a datetime"
            )
        if known is None:
            self._kinds[path] = kind
            if kind == _FLOAT:
                self._float_paths.add(path)
        self._series_next[path] = max(self._series_next.get(path, 0), step + 1)
        if type(point) is Deferred:
            if point.needs_batch:
                batch_device_values([point])
            self._enqueue(ops.log_deferred(step, ts, {path: point}))
        else:
            call = ops.log_text_call if kind == _STR else ops.log_call
            self._enqueue(call(step, ts, {path: point}))

    # -- single values --------------------------------------------------------------------

    def __getitem__(self, path: str) -> Handle:
        return Handle(self, check_path(path))

    def __setitem__(self, path: str, value: Any) -> None:
        """Assign a single value; a dict (a ``Namespace``, a dataclass instance) becomes
        one value per key, under ``path/key``. docs/config-values.md gives the rule."""
        check_path(path)
        nested = as_mapping(value)
        items = flatten(nested, path) if nested is not None else {path: value}
        self._assign_many(items)

    def _assign_many(self, items: Mapping[str, Any]) -> None:
        ts = _time()
        queued = []
        for path, value in items.items():
            check_path(path)
            # One rule for every path (values.plain_value); under config/ nothing is
            # refused: a value with no kind of its own is kept as stable text.
            plain = plain_value(path, value, lenient=is_config_path(path))
            # Every single value comes through here (run[path] = ..., config=, the
            # environment, integrations' hyperparameters): a secret-looking path masks
            # its value, and credentials inside any text are masked whatever the path,
            # text inside lists included. A masked number is stored as the mask text.
            kind, stored = encode_field(mask_field(path, plain))
            known = self._kinds.get(path)
            if known is not None and known != _FIELD:
                raise _kind_error(path, known, _FIELD)
            queued.append(ops.set_value(path, kind, stored, ts))
        for op in queued:
            self._kinds[op[1]] = _FIELD
            self._enqueue(op)

    def _track_files(self, path: str, path_or_uri: str) -> dict[str, Any]:
        known = self._kinds.get(path)
        if known is not None and known not in (_FIELD, FILE):
            raise _kind_error(path, known, "file reference")
        info = describe(path_or_uri)
        if isinstance(info.get("uri"), str):
            info["uri"] = mask_text(info["uri"])  # a signed or user:pass@ URL is a secret
        self._kinds[path] = FILE
        self._enqueue(ops.file_ref(path, info))
        return info

    # -- events -----------------------------------------------------------------------------

    def alert(self, title: str, text: str = "", level: str = "warning") -> None:
        """Record an event of your own; it is stored in the run (``tracker events RUN``)
        and, with ``TRACKER_ALERT_WEBHOOK`` set, posted to that webhook.

        Example::

            if val_acc < 0.5 and epoch > 10:
                run.alert("accuracy stuck", f"val_acc={val_acc:.3f} at epoch {epoch}",
                          level="warning")
        """
        if type(title) is not str or not title.strip():
            raise ValueError(f"alert: title must be a non-empty str, got {title!r}")
        if type(text) is not str:
            raise TypeError(f"alert({title!r}): text must be a str, got {type(text).__name__}")
        if level not in _events.LEVELS:
            raise ValueError(
                f"alert({title!r}): level must be one of {', '.join(_events.LEVELS)}, got {level!r}"
            )
        last = self._next_step() - 1
        title, text = mask_text(title), mask_text(text)
        message = f"{title}: {text}" if text else title
        event = _events.make_event(
            "alert",
            step=last if last >= 0 else None,
            rank=self.rank,
            level=level,
            message=message,
            title=title,
            text=text,
        )
        self._enqueue(_events.queued_event(event))

    def watch(
        self,
        path: str,
        *,
        nonfinite: bool = True,
        zscore: float | None = None,
        window: int = 200,
        above: float | None = None,
        below: float | None = None,
        cooldown: float = 600,
    ) -> None:
        """Watch the series ``path`` on every rank; what fires becomes an event.

        ``zscore``: a point further than this many standard deviations from the
        ``window`` points before it is a spike. ``above``/``below``: a threshold.
        ``nonfinite=False`` silences the NaN/inf event that every series has by default.
        Each rule fires at most once per ``cooldown`` seconds (of the points' timestamps)
        per series (path and rank). Checking runs on the writer, never on this thread.

        Example::

            run.watch("train/loss", zscore=6, window=200)
            run.watch("gpu/temp", above=85, cooldown=300)
        """
        from .watch import check_rule

        rule = check_rule(
            check_path(path),
            nonfinite=nonfinite,
            zscore=zscore,
            window=window,
            above=above,
            below=below,
            cooldown=cooldown,
        )
        # The writer of the run watches every rank's points; a non-writer rank (and a
        # disabled run) has no watcher, and the same script's call on the writer rank
        # registers the rule there.
        watcher = getattr(self._writer, "watcher", None)
        if watcher is not None:
            watcher.add_rule(rule)

    # -- tags -----------------------------------------------------------------------------

    def add_tags(self, *tags: str) -> None:
        """Add tags to the run (``run.add_tags("baseline", "v2")``)."""
        self._enqueue(ops.tags_added(_check_tags(tags)))

    def remove_tags(self, *tags: str) -> None:
        """Remove tags from the run; tags it does not have are ignored."""
        self._enqueue(ops.tags_removed(_check_tags(tags)))

    # -- durability and end ---------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything logged so far is durable in the store.

        Raises ``TimeoutError`` after ``timeout`` seconds, and ``WriterError`` when the
        writer could not make it durable (the cause is in the message).
        """
        self._writer.flush(timeout)

    def close(self, status: str = "finished", *, error: str | None = None) -> None:
        """Make everything durable and mark the run ``finished``, ``failed`` or
        ``terminated``. Closing twice does nothing."""
        if self._closed:
            return
        if os.getpid() != self._pid:
            self._detach_after_fork()  # a forked child never closes its parent's run
            return
        if status not in FINAL_STATUSES:
            raise ValueError(f"close(status={status!r}): use one of {', '.join(FINAL_STATUSES)}")
        self._closed = True
        lifecycle.unregister(self)
        lifecycle.closing_started()
        try:
            self._close(status, error)
        finally:
            lifecycle.closing_ended()  # a SIGTERM that came meanwhile takes effect here

    def _close(self, status: str, error: str | None) -> None:
        for callback in self._on_close:
            try:
                callback()
            except Exception:  # noqa: BLE001 - closing must go on
                pass
        self.status = status
        if error is not None:
            # A traceback quotes source lines and exception messages, which often hold a
            # database URL or connection string. Masked here, it is masked for the status
            # row too, and for rank 0 when this is another rank (ranks/<r>/traceback).
            error = mask_text(error)
            self._enqueue(ops.set_value("sys/failure/traceback", "str", error, _time()))
        self._enqueue(ops.set_status(status, _time(), error))
        self._writer.close(self._close_timeout)
        # Later calls have nowhere to go: say so once instead of dropping them silently.
        # Swapping the bound method keeps the open run's hot path free of a closed check.
        self._enqueue = self._after_close

    def _after_close(self, op: Any) -> None:
        if not getattr(self, "_warned_closed", False):
            self._warned_closed = True
            warnings.warn(
                f"tracker: run {self.id} is closed ({self.status}); logging to it does "
                "nothing (open it again with tracker.init_run(run_id=...) to continue it)",
                RuntimeWarning,
                stacklevel=3,
            )

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("terminated", error="".join(traceback.format_exception(exc_type, exc, tb)))
        else:
            self.close("failed", error="".join(traceback.format_exception(exc_type, exc, tb)))

    def __repr__(self) -> str:
        return f"<tracker.Run {self.id} project={self.project!r} rank={self.rank} {self.status}>"

    # -- forked children -------------------------------------------------------------------

    def _detach_after_fork(self) -> None:
        """In a forked child: this run belongs to the parent; log nothing, close nothing."""
        parent = self._pid
        self._pid = os.getpid()
        self._writer = NullWriter()
        self._queue = ()
        self._closed = True
        self._on_close = []
        self._enqueue = self._in_forked_child
        self._forked_from = parent

    def _in_forked_child(self, op: Any) -> None:
        if not getattr(self, "_warned_fork", False):
            self._warned_fork = True
            warnings.warn(
                f"tracker: run {self.id} belongs to process {self._forked_from}; this forked "
                f"child (pid {os.getpid()}) cannot write to it, so what it logs is not "
                "recorded. Log from the parent, or open a run of the child's own with "
                "tracker.init_run(...) (for example with fork_from or a group tag)",
                RuntimeWarning,
                stacklevel=3,
            )

    # -- for system metrics and the rank coordinator --------------------------------------

    def _log_system(self, metrics: Mapping[str, float]) -> None:
        """Log a system-metrics sample. Its step is the sample's number: every ``sys/``
        path shares one sample counter (kept under ``"sys/"``), apart from the run's
        training steps."""
        if self._closed:
            return
        ts = _time()
        step = self._series_next.get("sys/", 0)
        self._series_next["sys/"] = step + 1
        self._enqueue(ops.log_call(step, ts, {k: float(v) for k, v in metrics.items()}))

    def _ingest(self, op: Any) -> None:
        """Queue an already-validated op (another rank's, via ``coordinator.receive``)."""
        self._enqueue(op)


def warn_lower_step(path: str, step: int, last: int, stacklevel: int) -> None:
    """The one warning a series gets for a step lower than its last (it is stored)."""
    warnings.warn(
        f"tracker: step {step} of {path!r} is lower than its last step {last}; the point is "
        "stored, and reads sort by step (a restarted step counter? to start over from a "
        "checkpoint, pass init_run(resume_from_step=...)). Warned once per series.",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


def _valid_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an int, got {type(step).__name__}: {step!r}")
    step = int(step)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step >= _STEP_LIMIT:
        raise ValueError(f"step must be < 2**63 (a signed 64-bit integer), got {step}")
    return step


def _kind_error(path: str, known: str, new: str) -> TypeError:
    what = {
        _FIELD: "a single value",
        _FLOAT: "a float series",
        _STR: "a str series",
        FILE: "a file reference",
    }
    return TypeError(
        f"{path!r} already holds {what.get(known, known)}; it cannot also hold {what.get(new, new)}"
    )


def _check_tags(tags: tuple[Any, ...]) -> list[str]:
    out = []
    for tag in tags:
        if isinstance(tag, list | tuple | set):
            out.extend(_check_tags(tuple(tag)))
            continue
        if not isinstance(tag, str) or not tag or len(tag) > 256:
            raise ValueError(f"tag {tag!r}: tags are non-empty str of at most 256 characters")
        out.append(check_text(f"tag {tag!r}", tag))
    return out
