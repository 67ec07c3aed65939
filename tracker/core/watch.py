"""Watching a run's points, on the writer thread: NaN/inf, spikes, thresholds, silence.

The writer hands every batch of journal operations to ``Watcher.scan`` before it
journals them, so detection costs the training thread nothing. The common batch (every
value finite, no rule on its series) costs one vectorised sum per column group: a sum
of finite float64 values is finite unless it overflows, and only a batch whose sum is
not finite is looked at value by value.

Rules (``Run.watch``) apply to a path on every rank; a rule's state (the rolling window
of a z-score, the last time it fired) is kept per series, that is per (path, rank).
Cooldowns are measured on the points' own timestamps, so a replay or an import gives
the same events as the live run did.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import events as ev
from . import ops
from .batch import group_order

# A z-score needs some history before a point can stand out from it.
MIN_WINDOW = 10


@dataclass(frozen=True)
class Rule:
    """What ``Run.watch(path, ...)`` asked for."""

    path: str
    nonfinite: bool = True
    zscore: float | None = None
    window: int = 200
    above: float | None = None
    below: float | None = None
    cooldown: float = 600.0


def check_rule(
    path: str,
    *,
    nonfinite: bool = True,
    zscore: float | None = None,
    window: int = 200,
    above: float | None = None,
    below: float | None = None,
    cooldown: float = 600.0,
) -> Rule:
    """A ``Rule``, or a ``TypeError``/``ValueError`` naming the argument that is wrong."""
    if type(nonfinite) is not bool:
        raise TypeError(f"watch({path!r}): nonfinite must be True or False, got {nonfinite!r}")
    for name, value in (("zscore", zscore), ("above", above), ("below", below)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"watch({path!r}): {name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"watch({path!r}): {name} must be finite, got {value!r}")
    if zscore is not None and zscore <= 0:
        raise ValueError(f"watch({path!r}): zscore must be above 0, got {zscore!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < MIN_WINDOW:
        raise ValueError(f"watch({path!r}): window must be an int of at least {MIN_WINDOW}")
    if isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or cooldown < 0:
        raise ValueError(f"watch({path!r}): cooldown must be a number of seconds ≥ 0")
    return Rule(
        path=path,
        nonfinite=nonfinite,
        zscore=None if zscore is None else float(zscore),
        window=window,
        above=None if above is None else float(above),
        below=None if below is None else float(below),
        cooldown=float(cooldown),
    )


@dataclass
class _SeriesState:
    window: np.ndarray = field(default_factory=lambda: np.empty(0))
    fired: dict[str, float] = field(default_factory=dict)  # kind -> point time it fired


class Watcher:
    """Finds events in the batches a run's writer journals.

    ``scan(journal_ops)`` returns the new events (dicts, see ``events.make_event``); the
    writer stores them with ``events.events_op`` in the same journal record.
    """

    def __init__(self, *, nonfinite: bool = True, silent_after: float | None = None) -> None:
        self.nonfinite = nonfinite
        self.rules: dict[str, Rule] = {}
        self._lock = threading.Lock()  # rules are added on the training thread
        self._nonfinite_seen: set[tuple[str, int]] = set()
        self._states: dict[tuple[str, int], _SeriesState] = {}
        self.silent_after = ev.silent_after() if silent_after is None else silent_after
        self._last_points = 0.0  # monotonic time of the last batch with training points
        self._last_step: int | None = None
        self._silent = False

    def add_rule(self, rule: Rule) -> None:
        with self._lock:
            rules = dict(self.rules)
            rules[rule.path] = rule
            self.rules = rules  # swapped whole: scan reads it without the lock

    # -- the batch scan ----------------------------------------------------------------------

    def scan(self, journal_ops: list[Any], now: float | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        rules = self.rules
        active = False
        for op in journal_ops:
            if op[0] != ops.LOGS:
                continue
            rank = op[1]
            # (path, rank) -> (position among the op's calls, step, value, ts)
            first_bad: dict[tuple[str, int], tuple[int, int, Any, float]] = {}
            for group in op[3]:
                keys = group[1]
                if not keys:
                    continue
                if not keys[0].startswith("sys/") or not all(k.startswith("sys/") for k in keys):
                    active = True
                    if group[0] == ops.COLS:
                        self._last_step = int(np.frombuffer(group[2], dtype=np.int64)[-1])
                if not self.nonfinite and not rules:
                    continue  # watching is off (TRACKER_WATCH=0): only silence is kept
                if group[0] == ops.COLS:
                    self._scan_cols(group, rank, rules, first_bad, found)
                else:
                    self._scan_rows(group, rank, rules, first_bad, found)
            for (path, r), (_pos, step, value, ts) in first_bad.items():
                self._nonfinite_seen.add((path, r))
                found.append(
                    ev.make_event(
                        "nonfinite",
                        path=path,
                        step=step,
                        rank=r,
                        level="warning",
                        message=f"{path} is {_show(value)} at step {step} on rank {r} "
                        "(its first non-finite value)",
                        time=ts,
                        value=value,
                    )
                )
        self._silence(active, found, time.monotonic() if now is None else now)
        return found

    def _wants_nonfinite(self, path: str, rank: int, rules: dict[str, Rule]) -> bool:
        if (path, rank) in self._nonfinite_seen or path == ev.EVENTS_PATH:
            return False
        rule = rules.get(path)
        if rule is not None:
            return rule.nonfinite
        # System metrics are sampled, not trained: a sensor reading NaN is no alarm.
        return self.nonfinite and not path.startswith("sys/")

    def _scan_cols(
        self,
        group: Any,
        rank: int,
        rules: dict[str, Rule],
        first_bad: dict[tuple[str, int], tuple[int, int, Any, float]],
        found: list[dict[str, Any]],
    ) -> None:
        keys = group[1]
        values = np.frombuffer(group[4], dtype=np.float64)
        ruled = [j for j, k in enumerate(keys) if k in rules] if rules else ()
        with np.errstate(over="ignore", invalid="ignore"):
            total = values.sum()
        if math.isfinite(total) and not ruled:
            return  # the common case: every value finite and nothing else asked for
        steps = np.frombuffer(group[2], dtype=np.int64)
        n = len(steps)
        matrix = values.reshape(n, len(keys))
        ts = np.frombuffer(group[3], dtype=np.float64)
        if not math.isfinite(total):
            bad = ~np.isfinite(matrix)
            order = group_order(group, n)
            for j in np.flatnonzero(bad.any(axis=0)).tolist():
                path = keys[j]
                if not self._wants_nonfinite(path, rank, rules):
                    continue
                i = int(np.argmax(bad[:, j]))
                pos = int(order[i])
                seen = first_bad.get((path, rank))
                if seen is None or pos < seen[0]:
                    first_bad[(path, rank)] = (
                        pos,
                        int(steps[i]),
                        float(matrix[i, j]),
                        float(ts[i]),
                    )
        for j in ruled:
            self._apply_rule(rules[keys[j]], rank, steps, ts, matrix[:, j], found)

    def _scan_rows(
        self,
        group: Any,
        rank: int,
        rules: dict[str, Rule],
        first_bad: dict[tuple[str, int], tuple[int, int, Any, float]],
        found: list[dict[str, Any]],
    ) -> None:
        # Rows hold text (or values numpy would not take): rare, so plain Python.
        keys, steps, ts, rows, order = group[1], group[2], group[3], group[4], group[5]
        for j, path in enumerate(keys):
            column = [row[j] for row in rows]
            if path in rules:
                nums = [(i, v) for i, v in enumerate(column) if _is_number(v)]
                if nums:
                    idx = [i for i, _ in nums]
                    self._apply_rule(
                        rules[path],
                        rank,
                        np.asarray([steps[i] for i in idx], dtype=np.int64),
                        np.asarray([ts[i] for i in idx], dtype=np.float64),
                        np.asarray([float(v) for _, v in nums], dtype=np.float64),
                        found,
                    )
            if not self._wants_nonfinite(path, rank, rules):
                continue
            for i, value in enumerate(column):
                if type(value) is float and not math.isfinite(value):
                    pos = i if order is None else int(order[i])
                    seen = first_bad.get((path, rank))
                    if seen is None or pos < seen[0]:
                        first_bad[(path, rank)] = (pos, int(steps[i]), value, float(ts[i]))
                    break

    # -- rules -------------------------------------------------------------------------------

    def _apply_rule(
        self,
        rule: Rule,
        rank: int,
        steps: np.ndarray,
        ts: np.ndarray,
        values: np.ndarray,
        found: list[dict[str, Any]],
    ) -> None:
        state = self._states.get((rule.path, rank))
        if state is None:
            state = self._states[(rule.path, rank)] = _SeriesState()
        finite = np.isfinite(values)
        if not finite.all():
            steps, ts, values = steps[finite], ts[finite], values[finite]
        if not len(values):
            return
        points = (steps, ts, values)
        if rule.above is not None:
            self._fire_where(
                rule,
                state,
                rank,
                "threshold",
                "above",
                values > rule.above,
                points,
                f"above {rule.above:g}",
                found,
            )
        if rule.below is not None:
            self._fire_where(
                rule,
                state,
                rank,
                "threshold",
                "below",
                values < rule.below,
                points,
                f"below {rule.below:g}",
                found,
            )
        if rule.zscore is not None:
            history = state.window
            joined = np.concatenate([history, values])
            scores = _rolling_z(joined, len(history), rule.window)
            with np.errstate(invalid="ignore"):
                spikes = np.abs(scores) > rule.zscore
            self._fire_where(
                rule,
                state,
                rank,
                "spike",
                "spike",
                spikes,
                points,
                f"against the {rule.window} points before it",
                found,
                scores=scores,
            )
            state.window = joined[-rule.window :].copy()

    def _fire_where(
        self,
        rule: Rule,
        state: _SeriesState,
        rank: int,
        kind: str,
        which: str,
        mask: np.ndarray,
        points: tuple[np.ndarray, np.ndarray, np.ndarray],
        why: str,
        found: list[dict[str, Any]],
        scores: np.ndarray | None = None,
    ) -> None:
        hits = np.flatnonzero(mask)
        if not len(hits):
            return
        steps, ts, values = points
        # One event per cooldown: after a firing, skip to the first hit past the cooldown
        # (a sorted search, so a threshold crossed for a million points costs no loop).
        hit_ts = np.maximum.accumulate(ts[hits])
        last = state.fired.get(which)
        k = 0 if last is None else int(np.searchsorted(hit_ts, last + rule.cooldown, "left"))
        while k < len(hits):
            i = int(hits[k])
            value = float(values[i])
            step = int(steps[i])
            extra: dict[str, Any] = {"value": value}
            reason = why
            if scores is not None:
                extra["zscore"] = round(float(scores[i]), 3)
                reason = f"z = {scores[i]:.1f} {why}"
            found.append(
                ev.make_event(
                    kind,
                    path=rule.path,
                    step=step,
                    rank=rank,
                    level="warning",
                    message=f"{rule.path} = {value:.6g} at step {step} on rank {rank}: {reason}",
                    time=float(ts[i]),
                    **extra,
                )
            )
            state.fired[which] = float(hit_ts[k])
            k = max(k + 1, int(np.searchsorted(hit_ts, hit_ts[k] + rule.cooldown, "left")))

    # -- silence -----------------------------------------------------------------------------

    def note_activity(self, now: float) -> None:
        """Training points arrived that this watcher does not scan (other ranks' points,
        which a distributed run's ingest process takes): the run is not silent."""
        self._last_points = now
        self._silent = False

    def idle(self, now: float) -> list[dict[str, Any]]:
        """Events due when no batch came (the writer calls this every cycle)."""
        found: list[dict[str, Any]] = []
        self._silence(False, found, now)
        return found

    def _silence(self, active: bool, found: list[dict[str, Any]], now: float) -> None:
        """The whole run logged no training points for ``silent_after`` seconds."""
        if active:
            self._last_points = now
            self._silent = False
            return
        if self._silent or not self._last_points:
            return  # already said, or nothing logged yet: a run that never logs is not silent
        quiet = now - self._last_points
        if quiet >= self.silent_after:
            self._silent = True
            found.append(
                ev.make_event(
                    "silent_run",
                    step=self._last_step,
                    level="warning",
                    message=f"the run has logged no points for {quiet:.0f} s "
                    f"(TRACKER_RANK_SILENT_AFTER={self.silent_after:g})",
                    silent_for=round(quiet, 1),
                )
            )


def _rolling_z(values: np.ndarray, start: int, window: int) -> np.ndarray:
    """z-scores of ``values[start:]``, each against the up to ``window`` values before it
    (NaN where fewer than ``MIN_WINDOW`` come before it)."""
    n = len(values)
    idx = np.arange(start, n)
    lo = np.maximum(idx - window, 0)
    count = idx - lo
    # Shifted by a typical value first, so cumulative sums keep their precision.
    shift = values[: max(start, 1)].mean() if n else 0.0
    x = values - shift
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (c1[idx] - c1[lo]) / count
        var = (c2[idx] - c2[lo]) / count - mean * mean
        std = np.sqrt(np.maximum(var, 0.0))
        # A flat history: any move off it is a spike, but float noise is not.
        floor = 1e-9 * np.maximum(np.abs(mean + shift), 1.0)
        z = (x[idx] - mean) / np.maximum(std, floor)
    z[count < MIN_WINDOW] = np.nan
    return z


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) or (
        hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iuf"
    )


def _show(value: Any) -> str:
    return "NaN" if value != value else ("+inf" if value > 0 else "-inf")
