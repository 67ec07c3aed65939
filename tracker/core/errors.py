"""The exceptions tracker raises, as one tree so that callers can catch broadly or narrowly.

    TrackerError
    ├── RunNotFoundError        (read_run / resume="must" with an unknown id)
    ├── RunExistsError          (resume="never" with an id already used)
    ├── StoreError              (the store cannot be opened, written or understood)
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


class StoreError(TrackerError):
    """The store cannot be opened, written or understood."""


class WriterError(TrackerError):
    """The background writer could not make logged data durable."""
