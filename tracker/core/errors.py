"""The exceptions tracker raises, as one tree so that callers can catch broadly or narrowly.

    TrackerError
    ├── RunNotFoundError        (read_run / resume="must" with an unknown id)
    ├── RunExistsError          (resume="never" with an id already used)
    │   └── RunInUseError       (another live process is writing that run)
    ├── StoreError              (the store cannot be opened, written or understood)
    │   └── CorruptDataError    (stored data fails its check: a chunk's checksum or size)
    └── WriterError             (the background writer failed; raised by flush/close)

Bad values and paths raise the built-in TypeError and ValueError at the call that
passed them, so that ordinary Python error handling applies.
"""

from __future__ import annotations


class TrackerError(Exception):
    """Base class of every error tracker raises on purpose."""


class RunNotFoundError(TrackerError, KeyError):
    """No run with that id exists in the store."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class RunExistsError(TrackerError):
    """A run with that id exists and ``resume="never"`` forbids reusing it."""


class RunInUseError(RunExistsError):
    """Another live process writes this run; two writers of one run would lose points.

    ``holder`` names it as ``host:pid`` when known.
    """

    def __init__(self, message: str, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class StoreError(TrackerError):
    """The store cannot be opened, written or understood."""


class CorruptDataError(StoreError):
    """Stored data failed its check: a chunk's CRC-32 or its size does not match.

    What was damaged (the disk, a copy, a hand edit) is not the reader's to guess; the
    message names the run, the path, the rank and the chunk, and ``tracker doctor``
    lists every damaged chunk of the store.
    """

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        path: str | None = None,
        rank: int | None = None,
        chunk: int | None = None,
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.path = path
        self.rank = rank
        self.chunk = chunk


class WriterError(TrackerError):
    """The background writer could not make logged data durable."""


def one_line(exc: object) -> str:
    """An error as one line for a report, its type named unless it is one of tracker's."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, TrackerError) else f"{type(exc).__name__}: {text}"


def say_loudly(message: str, *, error: bool = True, stacklevel: int = 2) -> None:
    """Put ``message`` in the ``tracker`` log (error or warning) and raise it as a
    RuntimeWarning: a fault must reach whoever is looking, the log or the console."""
    import logging
    import warnings

    logger = logging.getLogger("tracker")
    (logger.error if error else logger.warning)(message)
    warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)
