"""Closing runs when the process ends: normal exit, uncaught exception, SIGTERM.

One registry for the whole process, so each hook is installed once however many runs
are open, and a run closed by hand simply leaves the registry.

A child made by ``os.fork`` (``multiprocessing`` with the fork start method, DataLoader
workers) inherits the registry, the hooks and the runs' lock descriptors. It must not
close its parent's runs when it exits: that would write a status for a run it does not
own and unlock the parent's writer lock (an flock belongs to the open file, which the
child shares). So a forked child starts with an empty registry, and each inherited run
is detached: it drops what the child logs, saying so once.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import traceback
from types import TracebackType
from typing import Any, Protocol


class _Closable(Protocol):
    def close(self, status: str = ..., *, error: str | None = ...) -> None: ...


# Strong references: a run the script dropped without closing must still be closed
# (and its queue written) at exit, not silently left to read as crashed.
_open: set[Any] = set()
_lock = threading.RLock()  # re-entrant: the SIGTERM handler may run inside register()
_installed = False
_previous_excepthook = sys.excepthook
_previous_sigterm: Any = None
# Closes under way in this process, and a SIGTERM that came during one: the close
# finishes first (it is bounded by its timeouts), then the process ends as SIGTERM asked.
# Dying in the middle would lose what the close was about to send or make durable.
_closing = 0
_deferred_sigterm: tuple[int, Any] | None = None


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()  # the parent's may have been held by another thread
    runs = list(_open)
    _open.clear()
    for run in runs:
        detach = getattr(run, "_detach_after_fork", None)
        if detach is not None:
            detach()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def register(run: _Closable) -> None:
    global _installed
    with _lock:
        _open.add(run)
        if _installed:
            return
        _installed = True
    atexit.register(_close_all, "finished", None)
    _install_excepthook()
    _install_sigterm()


def find_open(store_root: Any, run_id: str) -> Any | None:
    """The run ``run_id`` of store ``store_root`` that this process has open, if any."""
    pid = os.getpid()
    with _lock:
        for run in _open:
            if (
                getattr(run, "id", None) == run_id
                and getattr(run, "_store_root", None) == store_root
                and getattr(run, "_pid", pid) == pid
            ):
                return run
    return None


def unregister(run: _Closable) -> None:
    with _lock:
        _open.discard(run)


def closing_started() -> None:
    global _closing
    with _lock:
        _closing += 1


def closing_ended() -> None:
    global _closing, _deferred_sigterm
    with _lock:
        _closing -= 1
        due = _deferred_sigterm if _closing == 0 else None
        if due is not None:
            _deferred_sigterm = None
    if due is not None:
        _terminate(*due)


def _close_all(status: str, error: str | None) -> None:
    with _lock:
        # A signal can reach a fresh child before the fork hook above has run: runs
        # another process opened are never closed from here.
        pid = os.getpid()
        runs = [run for run in _open if getattr(run, "_pid", pid) == pid]
    for run in runs:
        try:
            run.close(status, error=error)
        except Exception as exc:  # noqa: BLE001 - keep closing the others
            print(f"tracker: closing run failed: {exc}", file=sys.stderr)


def _install_excepthook() -> None:
    global _previous_excepthook
    _previous_excepthook = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        status = "terminated" if issubclass(exc_type, KeyboardInterrupt) else "failed"
        _close_all(status, "".join(traceback.format_exception(exc_type, exc, tb)))
        _previous_excepthook(exc_type, exc, tb)

    sys.excepthook = hook


def _install_sigterm() -> None:
    global _previous_sigterm
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):
        return
    if previous is signal.SIG_IGN:
        return  # someone chose to ignore SIGTERM; respect that
    _previous_sigterm = previous

    def handler(signum: int, frame: Any) -> None:
        global _deferred_sigterm
        _close_all("terminated", "received SIGTERM")
        with _lock:
            if _closing:
                # A close was under way when the signal came (this handler runs on top
                # of it): it ends the process once it is done.
                _deferred_sigterm = (signum, frame)
                return
        _terminate(signum, frame)

    try:
        signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        pass


def _terminate(signum: int, frame: Any) -> None:
    if callable(_previous_sigterm):
        _previous_sigterm(signum, frame)
    else:
        # Die the way SIGTERM kills a process, so the exit status tells the launcher.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
