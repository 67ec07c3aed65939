"""Events: what watching a run found (a NaN, a spike, a silent rank) or the user raised.

An event is a dict with at least ``kind``, ``path``, ``step``, ``rank``, ``level``,
``message`` and ``time``. It is stored in its run as one point of the text series
``sys/events`` (rank 0; the point's step is the event's step, its value the event as
JSON), so events travel the way every point does: journaled first, replayed without
duplicates, shipped to a team server, exported and imported, with nothing added to any
store's schema. ``RunReader.events()`` and ``tracker events RUN`` read them back; the
writer hands each new one to ``alerts`` for the webhook.
"""

from __future__ import annotations

import json
import math
import os
import time as _time
from typing import Any

from . import ops

EVENTS_PATH = "sys/events"
KINDS = ("nonfinite", "spike", "threshold", "silent_rank", "silent_run", "alert")
LEVELS = ("info", "warning", "error")
DEFAULT_SILENT_AFTER_S = 300.0


def silent_after() -> float:
    """Seconds without points after which a rank or the run counts as silent
    (``TRACKER_RANK_SILENT_AFTER``, default 300)."""
    raw = os.environ.get("TRACKER_RANK_SILENT_AFTER", "")
    try:
        value = float(raw) if raw else DEFAULT_SILENT_AFTER_S
    except ValueError:
        value = DEFAULT_SILENT_AFTER_S
    return value if value > 0 else DEFAULT_SILENT_AFTER_S


def make_event(
    kind: str,
    *,
    path: str | None = None,
    step: int | None = None,
    rank: int | None = None,
    level: str = "warning",
    message: str = "",
    time: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One event as stored: the stable keys first, then ``extra`` (host, value, ...)."""
    if level not in LEVELS:
        raise ValueError(f"event level must be one of {', '.join(LEVELS)}, got {level!r}")
    event: dict[str, Any] = {
        "kind": kind,
        "path": path,
        "step": None if step is None else int(step),
        "rank": None if rank is None else int(rank),
        "level": level,
        "message": message,
        "time": _time.time() if time is None else float(time),
    }
    for key, value in extra.items():
        event[key] = _json_safe(value)
    return event


def _json_safe(value: Any) -> Any:
    # The value that fired (NaN, inf) must survive JSON, which has no such numbers.
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'nan', 'inf', '-inf'
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            return _json_safe(value.item())
        except (TypeError, ValueError):
            return str(value)
    return value


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), sort_keys=False, allow_nan=False)


def decode(text: Any) -> dict[str, Any] | None:
    """An event from its stored text; None for a point that is not one."""
    if not isinstance(text, str):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "kind" in event else None


def events_op(events: list[dict[str, Any]], rank: int = 0) -> tuple[Any, ...]:
    """The journal op that stores ``events`` (a "logs" op of one text group)."""
    steps = [0 if e.get("step") is None else int(e["step"]) for e in events]
    ts = [float(e["time"]) for e in events]
    rows = [[encode(e)] for e in events]
    return ops.logs(rank, len(events), [(ops.ROWS, (EVENTS_PATH,), steps, ts, rows, None)])


def queued_event(event: dict[str, Any]) -> tuple[Any, ...]:
    """The queued form (a text log call) of one event, for a run's writer queue."""
    step = 0 if event.get("step") is None else int(event["step"])
    return ops.log_text_call(step, float(event["time"]), {EVENTS_PATH: encode(event)})


def events_in(journal_ops: list[Any]) -> list[dict[str, Any]]:
    """The events that ``journal_ops`` store (from any rank), in order."""
    found: list[dict[str, Any]] = []
    for op in journal_ops:
        if op[0] != ops.LOGS:
            continue
        for group in op[3]:
            if group[0] != ops.ROWS or EVENTS_PATH not in group[1]:
                continue
            j = group[1].index(EVENTS_PATH)
            for row in group[4]:
                event = decode(row[j])
                if event is not None:
                    found.append(event)
    return found
