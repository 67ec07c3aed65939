"""Reading runs back: ``read_run`` and ``list_runs``.

Readers open the store read-only. Where the store can be written they still do the
recovery reading implies (a run left "running" by a dead writer is replayed from its
journal and recorded as crashed); where it cannot (a read-only mount, another user's
store) runs read as they are stored. A run whose recovery fails is warned about and
read as stored: one bad run never stops a listing.

Every chunk read is checked against its CRC-32 and its size (``CorruptDataError``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sqlite3
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .downsample import Buckets, bucketize
from .errors import CorruptDataError, RunNotFoundError, TrackerError
from .paths import check_path, flatten
from .replay import recover_run
from .store import Store, chunk_problem, decode_str_values

AGGREGATES = ("mean", "min", "max", "count")
PER_STEP = (None, "first", "last")
# A running run whose writer lock cannot be checked (another host) counts as crashed
# once its heartbeat is this old.
STALE_HEARTBEAT_S = 120.0
# Chunk verification (CRC-32 and sizes) on every read. Private: only the benchmark turns
# it off, to measure what it costs.
_VERIFY_CHUNKS = True


def recover_if_possible(st: Store, run_id: str) -> bool | None:
    """``recover_run`` where the store can be written: True if the run had no live writer
    (it is now up to date, and recorded as crashed if it never closed), False if a live
    writer holds it, None if the store is read-only or recovery failed (warned): the run
    then reads as it is stored."""
    if not st.can_write:
        return None
    try:
        return recover_run(st.for_writing(), run_id)
    except Exception as exc:  # noqa: BLE001 - whatever broke, reading goes on without it
        warnings.warn(
            f"tracker: run {run_id} in {st.root} could not be recovered, it reads as "
            f"stored: {_one_line(exc)}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def recover_stale(st: Store, project: str | None = None) -> list[str]:
    """Recover each run that reads as running; a failure is warned about, not raised.

    Like ``replay.recover_stale_runs``, but one run that cannot be recovered does not
    keep the others from it; returns the ids recovered.
    """
    if not st.can_write:
        return []
    sql, args = "SELECT run_id FROM runs WHERE status='running'", []
    if project is not None:
        sql += " AND project=?"
        args.append(project)
    rows = st.connection().execute(sql, args).fetchall()
    return [rid for (rid,) in rows if recover_if_possible(st, rid)]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, TrackerError) else f"{type(exc).__name__}: {text}"


@dataclass(frozen=True)
class SeriesValues:
    """A series read back: numpy arrays ``step``, ``value`` and ``timestamp`` (seconds)."""

    step: np.ndarray
    value: np.ndarray
    timestamp: np.ndarray

    def __len__(self) -> int:
        return len(self.step)

    def to_pandas(self):  # noqa: ANN201 - pandas is optional
        """A DataFrame with columns step, value and timestamp (UTC datetimes)."""
        import pandas as pd

        return pd.DataFrame(
            {
                "step": self.step,
                "value": self.value,
                "timestamp": pd.to_datetime(self.timestamp, unit="s", utc=True),
            }
        )


def _decode_field(kind: str, value: Any) -> Any:
    if kind == "bool":
        return bool(value)
    if kind == "datetime":
        return _dt.datetime.fromtimestamp(value, tz=_dt.timezone.utc)
    if kind == "file":
        return json.loads(value)
    if kind == "float":
        # SQLite stores a NaN REAL as NULL; the kind says it was a float.
        return math.nan if value is None else float(value)
    return value


class FieldReader:
    """One path of a run being read: ``r["config/lr"]``."""

    def __init__(self, run: RunReader, path: str) -> None:
        self._run = run
        self.path = path

    def fetch(self) -> Any:
        """The single value at this path (for a series: its last value)."""
        conn = self._run._store.connection()
        for rid, _limit in self._run._lineage:
            row = conn.execute(
                "SELECT kind, value FROM fields WHERE run_id=? AND path=?", (rid, self.path)
            ).fetchone()
            if row is not None:
                return _decode_field(*row)
            if rid == self._run.id:
                break  # single values are not inherited from a fork's parent
        values = self._run._series(self.path, 0)
        if values is not None and len(values):
            return values.value[-1].item() if values.value.dtype != object else values.value[-1]
        raise KeyError(f"run {self._run.id} has no field {self.path!r}")

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

        >>> r["eval/loss"].fetch_values(per_step="last").value
        """
        if rank is not None and aggregate is not None:
            raise ValueError("fetch_values: pass rank= or aggregate=, not both")
        if per_step not in PER_STEP:
            raise ValueError(f"per_step={per_step!r}: use None, 'first' or 'last'")
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
        self._lineage: list[tuple[str, int | None]] = [(run_id, None)]
        parent, fork_step = row["parent_id"], row["fork_step"]
        limit = None
        while parent:
            limit = fork_step if limit is None else min(limit, fork_step)
            self._lineage.append((parent, limit))
            prow = (
                store.connection()
                .execute("SELECT parent_id, fork_step FROM runs WHERE run_id=?", (parent,))
                .fetchone()
            )
            if prow is None:
                break
            parent, fork_step = prow

    # -- metadata -------------------------------------------------------------------------

    @property
    def project(self) -> str:
        return self._row["project"]

    @property
    def name(self) -> str | None:
        return self._row["name"]

    @property
    def status(self) -> str:
        """running, finished, failed, terminated or crashed."""
        row = (
            self._store.connection()
            .execute("SELECT status, heartbeat FROM runs WHERE run_id=?", (self.id,))
            .fetchone()
        )
        status, heartbeat = row
        if status == "running":
            if recover_if_possible(self._store, self.id):
                # Recovered: the journal may have held its close; read what it recorded.
                status, heartbeat = (
                    self._store.connection()
                    .execute("SELECT status, heartbeat FROM runs WHERE run_id=?", (self.id,))
                    .fetchone()
                )
            if (
                status == "running"
                and heartbeat is not None
                and time.time() - heartbeat > STALE_HEARTBEAT_S
            ):
                # Silent this long: a writer on a hung or lost host (or, in a read-only
                # store, one that died before the store was archived).
                return "crashed"
        return status

    @property
    def parent(self) -> tuple[str, int] | None:
        if self._row["parent_id"]:
            return self._row["parent_id"], self._row["fork_step"]
        return None

    @property
    def tags(self) -> list[str]:
        rows = self._store.connection().execute(
            "SELECT tag FROM tags WHERE run_id=? ORDER BY tag", (self.id,)
        )
        return [t for (t,) in rows]

    @property
    def created_at(self) -> float:
        return self._row["created_at"]

    def __getitem__(self, path: str) -> FieldReader:
        return FieldReader(self, check_path(path))

    def paths(self) -> list[str]:
        """Every path in the run: single values, file references and series."""
        conn = self._store.connection()
        found = {p for (p,) in conn.execute("SELECT path FROM fields WHERE run_id=?", (self.id,))}
        for rid, _ in self._lineage:
            found.update(
                p
                for (p,) in conn.execute("SELECT DISTINCT path FROM series WHERE run_id=?", (rid,))
            )
        return sorted(found)

    def ranks(self) -> list[int]:
        """The ranks that logged series in this run."""
        rows = self._store.connection().execute(
            "SELECT DISTINCT rank FROM series WHERE run_id=? ORDER BY rank", (self.id,)
        )
        return [r for (r,) in rows]

    def fields(self) -> dict[str, Any]:
        """Every single value (and file reference) of the run, by path."""
        rows = self._store.connection().execute(
            "SELECT path, kind, value FROM fields WHERE run_id=? ORDER BY path", (self.id,)
        )
        return {p: _decode_field(k, v) for p, k, v in rows}

    def series_summary(self) -> list[dict[str, Any]]:
        """One row per series (path, rank, kind, count, last step, last value)."""
        rows = self._store.connection().execute(
            "SELECT path, rank, kind, count, last_step, last_value FROM series "
            "WHERE run_id=? ORDER BY path, rank",
            (self.id,),
        )
        keys = ("path", "rank", "kind", "count", "last_step", "last_value")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # -- series ---------------------------------------------------------------------------

    def _attempts(self, rid: str) -> dict[Any, tuple[int, int | None]]:
        """For each attempt of run ``rid``: (its place in time, the step past which a
        later attempt's rewind superseded its points, or None)."""
        if not self._store.has_attempts:
            return {}
        rows = (
            self._store.connection()
            .execute(
                "SELECT attempt, rewind_step FROM attempts WHERE run_id=? ORDER BY segment",
                (rid,),
            )
            .fetchall()
        )
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
        conn = st.connection()
        crc = "crc" if st.has_crc else "NULL"  # schema 1 stores have no checksums
        attempt = "attempt" if st.has_attempts else "NULL"
        select = f"SELECT rowid, n, steps, vals, ts, {crc}, {attempt} FROM chunks WHERE series_id=?"
        # System metrics count samples, not training steps: a rewind does not apply.
        rewinds_apply = not include_superseded and not path.startswith("sys/")
        parts = []
        kind = None
        for rid, limit in reversed(self._lineage):  # oldest ancestor first
            row = conn.execute(
                "SELECT series_id, kind FROM series WHERE run_id=? AND path=? AND rank=?",
                (rid, path, rank),
            ).fetchone()
            if row is None:
                continue
            sid, kind = row
            if limit is None:
                chunks = conn.execute(select, (sid,)).fetchall()
            else:
                chunks = conn.execute(select + " AND first_step<=?", (sid, limit)).fetchall()
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

    def _corrupt(
        self, rid: str, path: str, rank: int, chunk: int, problem: str
    ) -> CorruptDataError:
        st = self._store
        whose = f"run {rid}" if rid == self.id else f"run {rid} (fork parent of {self.id})"
        return CorruptDataError(
            f"{whose}: series {path!r} rank {rank}: chunk {chunk} in {st.db_path} is "
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

    def __repr__(self) -> str:
        return f"<tracker run {self.id} project={self.project!r}>"


_RUN_COLUMNS = (
    "run_id",
    "project",
    "name",
    "status",
    "created_at",
    "ended_at",
    "heartbeat",
    "parent_id",
    "fork_step",
    "host",
    "error",
)


def read_run(
    run_id: str, project: str | None = None, store: str | os.PathLike[str] | None = None
) -> RunReader:
    """Open a run for reading.

    >>> r = tracker.read_run("k3v9q2m1xa")
    >>> r["config/lr"].fetch(), len(r["train/loss"].fetch_values())
    """
    st = Store(store, create=False, readonly=True)
    row = _run_row(st, run_id)
    if row is None and st.segments(run_id):
        # Journaled but never applied (offline, or crashed early): applied here if the
        # store can be written.
        if recover_if_possible(st, run_id) is not None:
            row = _run_row(st, run_id)
    if row is None or (project is not None and row["project"] != project):
        where = f" in project {project!r}" if project else ""
        raise RunNotFoundError(f"no run {run_id!r}{where} in {st.root}")
    return RunReader(st, run_id, row)


def _run_row(st: Store, run_id: str) -> dict[str, Any] | None:
    row = (
        st.connection()
        .execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE run_id=?", (run_id,))
        .fetchone()
    )
    return dict(zip(_RUN_COLUMNS, row, strict=True)) if row else None


def list_runs(
    project: str | None = None,
    tags: Iterable[str] | str | None = None,
    status: Iterable[str] | str | None = None,
    store: str | os.PathLike[str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Runs with their id, name, status, tags and config (as a nested dict), newest first.

    Filters combine: ``tags`` keeps runs having every tag given; ``status`` one or several
    statuses; ``config`` runs whose config values equal the ones given (paths below
    ``config/``, nested dicts allowed).

    >>> tracker.list_runs(project="gpt-small", tags=["baseline"], config={"lr": 3e-4})
    """
    st = Store(store, create=False, readonly=True)
    recover_stale(st, project)
    conn = st.connection()
    where, args = [], []
    if project is not None:
        where.append("project=?")
        args.append(project)
    if isinstance(tags, str):
        tags = [tags]
    for tag in tags or ():
        where.append("run_id IN (SELECT run_id FROM tags WHERE tag=?)")
        args.append(tag)
    if isinstance(status, str):
        status = [status]
    if status:
        status = list(status)
        where.append(f"status IN ({','.join('?' * len(status))})")
        args.extend(status)
    if config:
        for path, value in flatten(config, "config").items():
            where.append("run_id IN (SELECT run_id FROM fields WHERE path=? AND value=?)")
            args.extend((path, value))
    sql = "SELECT run_id, project, name, status, created_at, ended_at, parent_id FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at DESC"
    out = []
    for rid, proj, name, st_status, created, ended, parent in conn.execute(sql, args).fetchall():
        try:
            tag_list, cfg = _tags_and_config(conn, rid)
        except (sqlite3.DatabaseError, ValueError, TypeError, OverflowError) as exc:
            # A damaged row of one run: list the run without them, say so, go on.
            warnings.warn(
                f"tracker: run {rid} in {st.root}: its tags and config cannot be read "
                f"({_one_line(exc)}); listed without them",
                RuntimeWarning,
                stacklevel=2,
            )
            tag_list, cfg = [], {}
        out.append(
            {
                "id": rid,
                "project": proj,
                "name": name,
                "status": st_status,
                "tags": tag_list,
                "config": cfg,
                "created_at": created,
                "ended_at": ended,
                "parent_id": parent,
            }
        )
    return out


def _tags_and_config(conn: sqlite3.Connection, rid: str) -> tuple[list[str], dict[str, Any]]:
    tag_list = [
        t for (t,) in conn.execute("SELECT tag FROM tags WHERE run_id=? ORDER BY tag", (rid,))
    ]
    cfg: dict[str, Any] = {}
    for path, kind, value in conn.execute(
        "SELECT path, kind, value FROM fields WHERE run_id=? AND path LIKE 'config/%'", (rid,)
    ):
        node = cfg
        parts = path.split("/")[1:]
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = _decode_field(kind, value)
    return tag_list, cfg
