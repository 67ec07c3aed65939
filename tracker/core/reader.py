"""Reading runs back: ``read_run`` and ``list_runs``.

Readers open the store read-only and use only the ``Store`` protocol. Opening is the
one moment they may write: where the store can be written, ``read_run`` recovers the
run it opens, and ``list_runs`` every run it would list, if it reads as "running" with
no live writer (replayed from its journal and recorded as crashed: ``replay.py``);
where it cannot (a read-only mount, another user's store) runs read as they are
stored. A run whose recovery fails is warned about and read as stored: one bad run
never stops a listing. Nothing read afterwards (``RunReader.status`` included) writes.

Every chunk read is checked against its CRC-32 and its size (``CorruptDataError``).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from . import frames
from .downsample import (
    BLOCK,
    Blocks,
    Buckets,
    bucketize,
    decode_summary,
    merge_blocks,
    summarize,
    take_blocks,
)
from .errors import CorruptDataError, RunNotFoundError, StoreError, one_line
from .paths import check_path, unflatten
from .replay import recover_if_possible, recover_stale
from .stores import Store, open_store
from .stores.base import chunk_problem, decode_str_values
from .values import config_filter, decode_field

AGGREGATES = ("mean", "min", "max", "count")
STATUSES = ("running", "finished", "failed", "terminated", "crashed")
PER_STEP = (None, "first", "last")
# A running run whose writer lock cannot be checked (another host) counts as crashed
# once its heartbeat is this old.
STALE_HEARTBEAT_S = 120.0
# Chunk verification (CRC-32 and sizes) on every read. Private: only the benchmark turns
# it off, to measure what it costs.
_VERIFY_CHUNKS = True


def ancestry(store: Store, run_id: str, parent_id: str | None, fork_step: int | None) -> list:
    """``[(run id, last step it contributes or None), ...]`` from ``run_id`` up through
    its fork parents: the run itself (all of it), its parent up to the fork step, the
    grandparent up to the lower of the two fork steps, and so on."""
    lineage: list[tuple[str, int | None]] = [(run_id, None)]
    seen = {run_id}
    limit = None
    while parent_id and parent_id not in seen:
        seen.add(parent_id)
        assert fork_step is not None  # a run with a parent has a fork step (set together)
        limit = fork_step if limit is None else min(limit, fork_step)
        lineage.append((parent_id, limit))
        row = store.run(parent_id)
        if row is None:
            break
        parent_id, fork_step = row["parent_id"], row["fork_step"]
    return lineage


@dataclass(frozen=True)
class SeriesValues:
    """A series read back: numpy arrays ``step``, ``value`` and ``timestamp`` (seconds)."""

    step: np.ndarray
    value: np.ndarray
    timestamp: np.ndarray

    def __len__(self) -> int:
        return len(self.step)

    def to_pandas(self):
        """A DataFrame with columns step, value and timestamp (UTC datetimes).

        Needs pandas: ``pip install 'tracker-dl[pandas]'`` (else ImportError saying so).
        """
        pd = frames.require_pandas("SeriesValues.to_pandas()")

        return pd.DataFrame(
            {
                "step": self.step,
                "value": self.value,
                "timestamp": pd.to_datetime(self.timestamp, unit="s", utc=True),
            }
        )

    def __repr__(self) -> str:
        return frames.series_repr(self)

    def _repr_html_(self) -> str:
        """A notebook's view: the counts and the first and last points."""
        return frames.series_html(self)


class FieldReader:
    """One path of a run being read: ``r["config/lr"]``."""

    def __init__(self, run: RunReader, path: str) -> None:
        self._run = run
        self.path = path

    def fetch(self) -> Any:
        """The single value at this path (for a series: its last value); for a path
        that holds values below it (``run["params"] = {...}``), those as a nested dict."""
        # Single values are the run's own: a fork does not inherit its parent's.
        found = self._run._store.field(self._run.id, self.path)
        if found is not None:
            return decode_field(*found)
        values = self._run._series(self.path, 0)
        if values is not None and len(values):
            return values.value[-1].item() if values.value.dtype != object else values.value[-1]
        # A dict was assigned here: it is stored one value per key, and read back whole.
        below = self._run._store.fields(self._run.id, prefix=self.path + "/")
        if below:
            return unflatten({p: decode_field(k, v) for p, k, v in below}, self.path)
        raise KeyError(f"run {self._run.id} has no field {self.path!r}")

    # The result's type follows ``buckets``: points without it, buckets with it.
    @overload
    def fetch_values(
        self,
        rank: int | None = None,
        aggregate: str | None = None,
        buckets: None = None,
        *,
        per_step: str | None = None,
        include_superseded: bool = False,
    ) -> SeriesValues: ...

    @overload
    def fetch_values(
        self,
        rank: int | None,
        aggregate: str | None,
        buckets: int,
        *,
        per_step: str | None = None,
        include_superseded: bool = False,
    ) -> Buckets: ...

    @overload
    def fetch_values(
        self,
        rank: int | None = None,
        aggregate: str | None = None,
        *,
        buckets: int,
        per_step: str | None = None,
        include_superseded: bool = False,
    ) -> Buckets: ...

    @overload
    def fetch_values(
        self,
        rank: int | None = None,
        aggregate: str | None = None,
        buckets: int | None = None,
        *,
        per_step: str | None = None,
        include_superseded: bool = False,
    ) -> SeriesValues | Buckets: ...

    def fetch_values(
        self,
        rank: int | None = None,
        aggregate: str | None = None,
        buckets: int | None = None,
        *,
        per_step: str | None = None,
        include_superseded: bool = False,
    ) -> SeriesValues | Buckets:
        """The series at this path as numpy arrays, sorted by step, then write order.

        ``rank=None`` is the writer's own series (rank 0); ``rank=k`` what rank k logged;
        ``aggregate`` ("mean", "min", "max", "count") combines all ranks per step (each
        rank's last point of a step); ``buckets=N`` downsamples into at most N buckets
        keeping first/last/min/max/count. A step logged twice (``evaluate()`` twice at
        one step) has both points; ``per_step="last"`` (or ``"first"``) keeps one.
        Points that a rewind (``init_run(resume_from_step=s)``) superseded are hidden
        unless ``include_superseded=True``.

        Example::

            r["eval/loss"].fetch_values(per_step="last").value
        """
        if rank is not None and aggregate is not None:
            raise ValueError("fetch_values: pass rank= or aggregate=, not both")
        if per_step not in PER_STEP:
            raise ValueError(f"per_step={per_step!r}: use None, 'first' or 'last'")
        reduce = getattr(self._run._store, "series_reduced", None)
        if reduce is not None and (buckets is not None or aggregate is not None):
            # A server's store reduces the series where it is: its points never travel.
            if buckets is not None:
                bucketize(np.empty(0, np.int64), np.empty(0), buckets)  # checks buckets
            if aggregate is not None and aggregate not in AGGREGATES:
                raise ValueError(f"aggregate={aggregate!r}: use one of {', '.join(AGGREGATES)}")
            found = reduce(
                self._run.id,
                self.path,
                rank=rank,
                aggregate=aggregate,
                buckets=buckets,
                per_step=per_step,
                include_superseded=include_superseded,
            )
            if found is not None:
                kind, arrays = found
                if kind == "buckets":
                    return Buckets(**arrays)
                return SeriesValues(arrays["step"], arrays["value"], arrays["timestamp"])
        if aggregate is not None:
            series = self._run._aggregate(self.path, aggregate, include_superseded)
        else:
            series = self._run._series(
                self.path,
                0 if rank is None else int(rank),
                include_superseded=include_superseded,
                per_step=per_step,
            )
        if series is None:
            who = "" if rank is None else f" from rank {rank}"
            ranks = [k for p, k in self._run.series_keys() if p == self.path]
            if ranks and aggregate is None:  # the path exists, at other ranks: name them
                who = f" from rank {rank or 0}; it was logged by rank"
                who += f"{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
            raise KeyError(f"run {self._run.id} has no series {self.path!r}{who}")
        if buckets is not None:
            if series.value.dtype == object:
                raise TypeError(f"series {self.path!r} holds str values; it cannot be bucketed")
            return bucketize(series.step, series.value, buckets)
        return series


class RunReader:
    """Read access to one run. Get it with ``tracker.read_run(run_id)``."""

    def __init__(self, store: Store, run_id: str, row: Mapping[str, Any]) -> None:
        self._store = store
        self.id = run_id
        self._row = dict(row)
        # (run id, last step it contributes) from this run up through its fork parents.
        self._lineage = ancestry(store, run_id, row["parent_id"], row["fork_step"])

    # -- metadata -------------------------------------------------------------------------

    @property
    def project(self) -> str:
        return self._row["project"]

    @property
    def name(self) -> str | None:
        return self._row["name"]

    @property
    def status(self) -> str:
        """running, finished, failed, terminated or crashed: as stored now.

        Reading it writes nothing (``read_run`` recovered the run when it opened it). A
        run still running whose heartbeat is older than ``STALE_HEARTBEAT_S`` reads as
        crashed: silent this long, its writer is on a hung or lost host (or, in a
        read-only store, died before the store was archived).
        """
        row = self._store.run(self.id) or self._row
        status, heartbeat = row["status"], row["heartbeat"]
        if (
            status == "running"
            and heartbeat is not None
            and time.time() - heartbeat > STALE_HEARTBEAT_S
        ):
            return "crashed"
        return status

    @property
    def parent(self) -> tuple[str, int] | None:
        if self._row["parent_id"]:
            return self._row["parent_id"], self._row["fork_step"]
        return None

    @property
    def tags(self) -> list[str]:
        return self._store.tags(self.id)

    @property
    def created_at(self) -> float:
        return self._row["created_at"]

    @property
    def ended_at(self) -> float | None:
        """When the run ended, as stored now (None while it runs)."""
        return (self._store.run(self.id) or self._row)["ended_at"]

    def __getitem__(self, path: str) -> FieldReader:
        return FieldReader(self, check_path(path))

    def paths(self) -> list[str]:
        """Every path in the run: single values, file references and series."""
        found = {path for path, _kind, _value in self._store.fields(self.id)}
        found.update(path for path, _rank in self.series_keys())
        return sorted(found)

    def ranks(self) -> list[int]:
        """The ranks that logged series in this run."""
        return self._store.ranks(self.id)

    def fields(self) -> dict[str, Any]:
        """Every single value (and file reference) of the run, by path."""
        return {p: decode_field(k, v) for p, k, v in self._store.fields(self.id)}

    def series_summary(self) -> list[dict[str, Any]]:
        """One row per series of this run (path, rank, kind, count, last step, last value);
        its fork ancestors' series are not included (``series_keys`` names them too)."""
        return [
            {
                "path": s.path,
                "rank": s.rank,
                "kind": s.kind,
                "count": s.points,
                "last_step": s.last_step,
                "last_value": s.last_value,
            }
            for s in self._store.series_list(self.id)
        ]

    def series_keys(self) -> list[tuple[str, int]]:
        """(path, rank) of every series the run reads, its fork ancestors' included."""
        keys: set[tuple[str, int]] = set()
        for rid, _limit in self._lineage:
            keys.update((s.path, s.rank) for s in self._store.series_list(rid))
        return sorted(keys)

    def events(
        self, kind: str | Iterable[str] | None = None, level: str | None = None
    ) -> list[dict[str, Any]]:
        """The run's events, oldest first: NaN/inf values, spikes and thresholds of
        ``Run.watch`` rules, silent ranks and runs, and ``Run.alert`` calls.

        Each is a dict with ``kind``, ``path``, ``step``, ``rank``, ``level``, ``message``
        and ``time`` (Unix seconds), and what the kind adds (``value``, ``host``, ...).
        ``kind`` and ``level`` filter (``level="warning"`` keeps warnings and errors).

        Example::

            for e in tracker.read_run(run_id).events(kind="nonfinite"):
                print(e["path"], e["step"], e["rank"])
        """
        from . import events as ev

        kinds = {kind} if isinstance(kind, str) else None if kind is None else set(kind)
        if level is not None and level not in ev.LEVELS:
            raise ValueError(f"events(level={level!r}): use one of {', '.join(ev.LEVELS)}")
        floor = ev.LEVELS.index(level) if level is not None else 0
        found: list[dict[str, Any]] = []
        for path, rank in self.series_keys():
            if path != ev.EVENTS_PATH:
                continue
            # A rewind hides the points it superseded; the events that came with them
            # still happened, so they are kept.
            series = self._series(path, rank, include_superseded=True)
            if series is None:
                continue
            for text in series.value.tolist():
                event = ev.decode(text)
                if event is None:
                    continue
                if kinds is not None and event.get("kind") not in kinds:
                    continue
                if level is not None and _level_rank(event.get("level")) < floor:
                    continue
                found.append(event)
        found.sort(key=lambda e: (float(e.get("time") or 0.0), e.get("step") or 0))
        return found

    # -- series ---------------------------------------------------------------------------

    def _attempts(self, rid: str) -> dict[Any, tuple[int, int | None]]:
        """For each attempt of run ``rid``: (its place in time, the step past which a
        later attempt's rewind superseded its points, or None)."""
        rows = self._store.attempts(rid)
        out: dict[Any, tuple[int, int | None]] = {}
        cut: int | None = None
        # From the newest back: an attempt is cut by the lowest rewind of those after it.
        for index in range(len(rows) - 1, -1, -1):
            attempt, rewind = rows[index]
            out[attempt] = (index, cut)
            if rewind is not None:
                cut = rewind if cut is None else min(cut, rewind)
        out[None] = (-1, cut)  # chunks of stores older than attempts came first
        return out

    def _series(
        self,
        path: str,
        rank: int,
        *,
        include_superseded: bool = False,
        per_step: str | None = None,
    ) -> SeriesValues | None:
        st = self._store
        # System metrics count samples, not training steps: a rewind does not apply.
        rewinds_apply = not include_superseded and not path.startswith("sys/")
        parts = []
        kind = None
        for rid, limit in reversed(self._lineage):  # oldest ancestor first
            found = st.series_chunks(rid, path, rank, max_first_step=limit)
            if found is None:
                continue
            kind, chunks = found
            attempts = self._attempts(rid)
            unknown = (len(attempts), None)
            # Write order: attempts in the order they ran, then the order of the rows.
            chunks.sort(key=lambda c: (attempts.get(c[6], unknown)[0], c[0]))
            parts.append((rid, chunks, limit, attempts, unknown))
        if kind is None:
            return None
        steps_l, vals_l, ts_l = [], [], []
        for rid, chunks, limit, attempts, unknown in parts:
            for chunk, n, steps_b, vals_b, ts_b, crc_value, chunk_attempt in chunks:
                if _VERIFY_CHUNKS:
                    problem = chunk_problem(kind, n, steps_b, vals_b, ts_b, crc_value)
                    if problem is not None:
                        raise self._corrupt(rid, path, rank, chunk, problem)
                steps = np.frombuffer(steps_b, dtype=np.int64)
                ts = np.frombuffer(ts_b, dtype=np.float64)
                if kind == "str":
                    decoded = decode_str_values(vals_b, n)
                    if decoded is None:
                        raise self._corrupt(rid, path, rank, chunk, "its str values do not decode")
                    vals = np.array(decoded, dtype=object)
                else:
                    vals = np.frombuffer(vals_b, dtype=np.float64)
                cut = attempts.get(chunk_attempt, unknown)[1] if rewinds_apply else None
                if limit is not None:
                    cut = limit if cut is None else min(cut, limit)
                if cut is not None and len(steps) and steps.max() > cut:
                    keep = steps <= cut
                    steps, vals, ts = steps[keep], vals[keep], ts[keep]
                steps_l.append(steps)
                vals_l.append(vals)
                ts_l.append(ts)
        if not steps_l:
            dtype = object if kind == "str" else np.float64
            return SeriesValues(np.empty(0, np.int64), np.empty(0, dtype), np.empty(0, np.float64))
        steps = np.concatenate(steps_l)
        vals = np.concatenate(vals_l)
        ts = np.concatenate(ts_l)
        if len(steps) > 1 and not bool((steps[1:] >= steps[:-1]).all()):
            # By step, and within a step in the order written (a stable sort).
            order = np.argsort(steps, kind="stable")
            steps, vals, ts = steps[order], vals[order], ts[order]
        if per_step is not None and len(steps) > 1:
            change = steps[1:] != steps[:-1]
            if per_step == "last":
                keep = np.concatenate((change, [True]))
            else:
                keep = np.concatenate(([True], change))
            steps, vals, ts = steps[keep], vals[keep], ts[keep]
        return SeriesValues(steps, vals, ts)

    def _pieces(
        self, path: str, rank: int, start: int | None, end: int | None, summaries: bool
    ) -> list[tuple[tuple[int, int, Any], Any]] | None:
        """The float series' pieces in steps ``start``..``end`` (inclusive; None: open),
        in write order: each a chunk's ``Blocks`` (``summaries``, where it has a usable
        one) or its points (steps, values), superseded points and those past a fork
        step left out, as ``_series`` does. None where the store lists no chunk
        summaries, or the series holds no floats; [] where it has no points there.

        A summary counts only whole: a chunk cut by a rewind or a fork step, or that
        reaches into a block only part of which is in the range, is read as points."""
        st = self._store
        listing = getattr(st, "chunk_summaries", None)
        if listing is None:
            return None
        rewinds_apply = not path.startswith("sys/")
        edges = set()
        if start is not None and start % BLOCK:
            edges.add(start // BLOCK)
        if end is not None and (end + 1) % BLOCK:
            edges.add(end // BLOCK)
        lo_block = None if start is None else start // BLOCK
        hi_block = None if end is None else end // BLOCK
        found_any = False
        pieces: list[tuple[tuple[int, int, Any], Any]] = []
        to_read: list[tuple[int, str, int | None, Any]] = []
        for pos, (rid, limit) in enumerate(reversed(self._lineage)):  # oldest first
            found = listing(rid, path, rank, max_first_step=limit)
            if found is None:
                continue
            found_any = True
            kind, rows = found
            if kind != "float":
                return None
            attempts = self._attempts(rid)
            unknown = (len(attempts), None)
            for cid, first, last, _n, attempt, blob in rows:
                if (start is not None and last < start) or (end is not None and first > end):
                    continue
                if blob is None or not summaries:
                    to_read.append((pos, rid, limit, cid))
                    continue
                cut = attempts.get(attempt, unknown)[1] if rewinds_apply else None
                if limit is not None:
                    cut = limit if cut is None else min(cut, limit)
                if cut is not None and first > cut:
                    continue  # every point of it superseded
                whole = (cut is None or last <= cut) and not any(
                    first // BLOCK <= e <= last // BLOCK for e in edges
                )
                blocks = decode_summary(blob) if whole else None
                if blocks is None:
                    to_read.append((pos, rid, limit, cid))
                    continue
                if lo_block is not None or hi_block is not None:
                    inside = np.ones(len(blocks), bool)
                    if lo_block is not None:
                        inside &= blocks.block >= lo_block
                    if hi_block is not None:
                        inside &= blocks.block <= hi_block
                    if not inside.all():
                        blocks = take_blocks(blocks, inside)
                pieces.append(((pos, attempts.get(attempt, unknown)[0], cid), blocks))
        if not found_any:
            return None
        by_run: dict[str, list[tuple[int, int | None, Any]]] = {}
        for pos, rid, limit, cid in to_read:
            by_run.setdefault(rid, []).append((pos, limit, cid))
        for rid, wanted in by_run.items():
            pos, limit = wanted[0][0], wanted[0][1]
            attempts = self._attempts(rid)
            unknown = (len(attempts), None)
            for chunk, n, steps_b, vals_b, ts_b, crc_value, chunk_attempt in st.chunks_by_id(  # type: ignore[attr-defined]
                [cid for _p, _l, cid in wanted]
            ):
                if _VERIFY_CHUNKS:
                    problem = chunk_problem("float", n, steps_b, vals_b, ts_b, crc_value)
                    if problem is not None:
                        raise self._corrupt(rid, path, rank, chunk, problem)
                steps = np.frombuffer(steps_b, dtype=np.int64)
                vals = np.frombuffer(vals_b, dtype=np.float64)
                cut = attempts.get(chunk_attempt, unknown)[1] if rewinds_apply else None
                if limit is not None:
                    cut = limit if cut is None else min(cut, limit)
                high = end if cut is None else (cut if end is None else min(cut, end))
                keep: np.ndarray | None = None
                if high is not None:
                    keep = steps <= high
                if start is not None:
                    keep = steps >= start if keep is None else keep & (steps >= start)
                if keep is not None and not keep.all():
                    steps, vals = steps[keep], vals[keep]
                key = (pos, attempts.get(chunk_attempt, unknown)[0], chunk)
                pieces.append((key, (steps, vals)))
        pieces.sort(key=lambda p: p[0])
        return pieces

    def _blocks(
        self, path: str, rank: int, start: int | None = None, end: int | None = None
    ) -> Blocks | None:
        """The series' points in steps ``start``..``end`` summarized per block of
        ``downsample.BLOCK`` steps, from the stored chunk summaries where they serve:
        exactly ``downsample.summarize`` of what ``fetch_values(rank=rank)`` returns
        there. None where the store keeps no summaries or the series is not of floats."""
        pieces = self._pieces(path, rank, start, end, summaries=True)
        if pieces is None:
            return None
        return merge_blocks([p if isinstance(p, Blocks) else summarize(*p) for _key, p in pieces])

    def _points_in(
        self, path: str, rank: int, start: int | None, end: int | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The float series' (steps, values) in steps ``start``..``end``, sorted by step
        then write order, reading only the chunks that reach into the range; None as
        ``_pieces``."""
        pieces = self._pieces(path, rank, start, end, summaries=False)
        if pieces is None:
            return None
        if not pieces:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        steps = np.concatenate([p[0] for _k, p in pieces])
        vals = np.concatenate([p[1] for _k, p in pieces])
        if len(steps) > 1 and not bool((steps[1:] >= steps[:-1]).all()):
            order = np.argsort(steps, kind="stable")
            steps, vals = steps[order], vals[order]
        return steps, vals

    def _corrupt(
        self, rid: str, path: str, rank: int, chunk: int, problem: str
    ) -> CorruptDataError:
        st = self._store
        whose = f"run {rid}" if rid == self.id else f"run {rid} (fork parent of {self.id})"
        return CorruptDataError(
            f"{whose}: series {path!r} rank {rank}: chunk {chunk} in {st.location} is "
            f"damaged: {problem}; `tracker doctor --store {st.root}` lists every damaged "
            "chunk",
            run_id=rid,
            path=path,
            rank=rank,
            chunk=chunk,
        )

    def _aggregate(
        self, path: str, how: str, include_superseded: bool = False
    ) -> SeriesValues | None:
        if how not in AGGREGATES:
            raise ValueError(f"aggregate={how!r}: use one of {', '.join(AGGREGATES)}")
        all_steps, all_vals, all_ts = [], [], []
        for rank in self.ranks():
            # Each rank's latest point of a step: a repeat must not weigh a rank twice.
            s = self._series(path, rank, include_superseded=include_superseded, per_step="last")
            if s is None or len(s) == 0:
                continue
            if s.value.dtype == object:
                raise TypeError(f"series {path!r} holds str values; it cannot be aggregated")
            all_steps.append(s.step)
            all_vals.append(s.value)
            all_ts.append(s.timestamp)
        if not all_steps:
            return None
        steps = np.concatenate(all_steps)
        vals = np.concatenate(all_vals)
        ts = np.concatenate(all_ts)
        order = np.argsort(steps, kind="stable")
        steps, vals, ts = steps[order], vals[order], ts[order]
        starts = np.flatnonzero(np.concatenate(([True], steps[1:] != steps[:-1])))
        ends = np.concatenate((starts[1:], [len(steps)]))
        counts = (ends - starts).astype(np.float64)
        if how == "mean":
            out = np.add.reduceat(vals, starts) / counts
        elif how == "min":
            out = np.fmin.reduceat(vals, starts)
        elif how == "max":
            out = np.fmax.reduceat(vals, starts)
        else:
            out = counts
        return SeriesValues(steps[starts], out, np.maximum.reduceat(ts, starts))

    def history(self, paths: Iterable[str] | str | None = None, rank: int = 0) -> Any:
        """The run's series as one pandas DataFrame, indexed by step (like W&B's
        ``run.history()``): a ``timestamp`` column (UTC; the latest point of the step),
        then one column per series path, outer-joined on step (NaN where a series has
        no point at a step).

        ``paths``: None (every series of ``rank`` except the ``sys/`` system metrics,
        whose steps count samples), a path or glob (``"val/*"``), or a list of them; a
        path named exactly that does not exist raises KeyError. A step logged twice
        keeps its last point (``fetch_values()`` has them all). Points a rewind
        superseded are left out. Needs pandas: ``pip install 'tracker-dl[pandas]'``.

        Example::

            df = tracker.read_run("k3v9q2m1xa").history(["train/loss", "val/*"])
            df["val/loss"].dropna()
        """
        return frames.history(self, paths, rank)

    def _repr_html_(self) -> str:
        """A notebook's view: metadata, config and series (with counts), escaped."""
        return frames.run_html(self)

    def __repr__(self) -> str:
        return f"<tracker run {self.id} project={self.project!r}>"


def read_run(
    run_id: str, project: str | None = None, store: str | os.PathLike[str] | None = None
) -> RunReader:
    """Open a run for reading.

    Where the store can be written, a run that reads as running with no live writer
    (its process crashed), or one journaled but never applied (offline, or crashed
    early), is recovered here, once: reading the returned run never writes.

    Example::

        r = tracker.read_run("k3v9q2m1xa")
        r["config/lr"].fetch(), len(r["train/loss"].fetch_values())
    """
    st = open_store(store, create=False, readonly=True)
    row = st.run(run_id)
    if (row is None and st.segments(run_id)) or (row is not None and row["status"] == "running"):
        recover_if_possible(st, run_id)
        row = st.run(run_id)
    if row is None or (project is not None and row["project"] != project):
        where = f" in project {project!r}" if project else ""
        raise RunNotFoundError(f"no run {run_id!r}{where} in {st.root}")
    return RunReader(st, run_id, row)


@overload
def list_runs(
    project: str | None = None,
    tags: Iterable[str] | str | None = None,
    status: Iterable[str] | str | None = None,
    store: str | os.PathLike[str] | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    metrics: Iterable[str] | str | None = None,
    as_frame: Literal[False] = False,
) -> list[dict[str, Any]]: ...


# as_frame=True: a pandas DataFrame (Any: pandas is optional and ships no types).
@overload
def list_runs(
    project: str | None = None,
    tags: Iterable[str] | str | None = None,
    status: Iterable[str] | str | None = None,
    store: str | os.PathLike[str] | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    metrics: Iterable[str] | str | None = None,
    as_frame: bool,
) -> Any: ...


def list_runs(
    project: str | None = None,
    tags: Iterable[str] | str | None = None,
    status: Iterable[str] | str | None = None,
    store: str | os.PathLike[str] | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    metrics: Iterable[str] | str | None = None,
    as_frame: bool = False,
) -> Any:
    """Runs with their id, name, status, tags and config (as a nested dict), newest first.

    Filters combine: ``tags`` keeps runs having every tag given; ``status`` one or several
    statuses; ``config`` runs whose config values equal the ones given (paths below
    ``config/``, nested dicts allowed). Runs of ``project`` that read as running with no
    live writer are recovered first (see ``read_run``).

    ``metrics`` (paths or globs like ``"val/*"``) adds to each run a ``"metrics"`` dict,
    ``{path: {"last": .., "min": .., "max": ..}}``, read from rank 0 (the writer's own
    series). ``as_frame=True`` returns a pandas DataFrame instead of dicts, one row per
    run: id, name, project, status, tags, created_at and ended_at (UTC timestamps),
    parent_id, one ``config/...`` column per config path, and ``<metric>/last``,
    ``/min`` and ``/max`` per metric (needs ``pip install 'tracker-dl[pandas]'``).

    Example::

        tracker.list_runs(project="gpt-small", tags=["baseline"], config={"lr": 3e-4})
        tracker.list_runs(project="gpt-small", metrics=["val/loss"], as_frame=True)
    """
    # Checked before anything is read, so that a bad argument fails at once.
    wanted_metrics = frames.check_listing(metrics, as_frame)
    if isinstance(tags, str):
        tags = [tags]
    if isinstance(status, str):
        status = [status]
    for one in status or ():
        if one not in STATUSES:
            raise ValueError(f"status={one!r}: use one of {', '.join(STATUSES)}")
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config= filters by a dict of values, got {type(config).__name__}")
    # A filter value goes through the rule init_run(config=...) stores values by, so
    # lists, None, paths and enums find the runs that stored them (values.config_filter).
    wanted = config_filter(config) if config else None
    st = open_store(store, create=False, readonly=True)
    recover_stale(st, project)
    rows = st.runs(project=project, tags=tags or (), statuses=status or (), config=wanted)
    out = []
    for row in rows:
        rid = row["run_id"]
        try:
            tag_list, cfg = st.tags(rid), _config(st, rid)
        except (StoreError, ValueError, TypeError, OverflowError) as exc:
            # A damaged row of one run: list the run without them, say so, go on.
            warnings.warn(
                f"tracker: run {rid} in {st.root}: its tags and config cannot be read "
                f"({one_line(exc)}); listed without them",
                RuntimeWarning,
                stacklevel=2,
            )
            tag_list, cfg = [], {}
        out.append(
            {
                "id": rid,
                "project": row["project"],
                "name": row["name"],
                "status": row["status"],
                "tags": tag_list,
                "config": cfg,
                "created_at": row["created_at"],
                "ended_at": row["ended_at"],
                "parent_id": row["parent_id"],
            }
        )
    if wanted_metrics is not None or as_frame:
        return frames.listing(st, out, wanted_metrics, as_frame)
    return out


def _config(st: Store, rid: str) -> dict[str, Any]:
    """The run's config values as a nested dict."""
    cfg: dict[str, Any] = {}
    for path, kind, value in st.fields(rid, prefix="config/"):
        node = cfg
        parts = path.split("/")[1:]
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = decode_field(kind, value)
    return cfg


def _level_rank(level: Any) -> int:
    from .events import LEVELS

    return LEVELS.index(level) if level in LEVELS else 0
