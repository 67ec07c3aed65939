"""The web UI: HTML pages and the JSON they read, over any ``Store``.

``mount_ui(app, store, project_of)`` adds the pages and ``/api/ui/...`` to a FastAPI app:
the team server mounts them behind its tokens (``project_of`` checks the request's token
and returns its project), ``tracker ui`` (``create_ui_app``) without any (``project_of``
returns None: every project of a local store, bound to 127.0.0.1 by default).

Pages (static HTML + JS under ``ui/``, the data fetched as JSON)::

    GET /                         runs table (?project=P)
    GET /runs/{id}                one run: config, tags, status, provenance, series, charts
    GET /runs/{id}/ranks          rank x step heatmap of a metric, step time per rank
    GET /compare?runs=A,B         series overlaid, config diff, parallel coordinates

JSON (read-only)::

    GET /api/ui/runs?project=&metrics=a,b      every run: row, tags, config, last values
                                               (no metrics=: up to 3 chosen here)
    GET /api/ui/runs-version?project=          a fingerprint the runs table polls
    GET /api/ui/runs/{id}                      a run's details
    GET /api/ui/runs/{id}/series?q=&limit=     series names (glob or substring)
    GET /api/ui/runs/{id}/values?path=&rank=&buckets=&start=&end=&aggregate=
    GET /api/ui/runs/{id}/text?path=&rank=&q=&offset=&limit=   a text series, newest first
    GET /api/ui/runs/{id}/events               its events (sys/events), for chart markers
    GET /api/ui/runs/{id}/ranks?path=&buckets=
    GET /api/ui/compare?runs=A,B

Values are downsampled here, into buckets keeping each bucket's first, last, min, max,
point count and NaN count (``downsample.bucketize``), over the step range asked
(``start``/``end``, inclusive): a range holding at most ``buckets`` points comes back
point by point. A series of more than ``RAW_LIMIT`` points is drawn from the store's
chunk summaries (``Summarized``; block-aligned buckets, exact: docs/ui.md). Recently
read series are kept in memory (``SeriesCache``, keyed by the series' point count and
last step, so a series that grows is read again).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..core.downsample import Blocks, aligned_width, blocks_to_buckets, bucketize
from ..core.errors import TrackerError
from ..core.reader import STALE_HEARTBEAT_S, RunReader
from ..core.stores import Store
from ..core.values import decode_field

UI_DIR = Path(__file__).resolve().parent / "ui"
MAX_BUCKETS = 20_000
MAX_SERIES_LISTED = 2_000
# A series longer than this keeps a reduction of FINE_BUCKETS buckets that wide views are
# merged from; a step range holding at most RAW_LIMIT points is bucketed from its points.
RAW_LIMIT = 1_000_000
FINE_BUCKETS = 65_536
# Events (a text series of JSON objects) live here; they are drawn as chart markers.
EVENTS_PATH = "sys/events"
MAX_EVENTS = 5_000
MAX_TEXT_LISTED = 1_000
# A running run's list of series is read again at most this often.
SERIES_LIST_TTL_S = 5.0

ProjectOf = Callable[[Any], "str | None"]


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass


# -- JSON helpers --------------------------------------------------------------------------------


def clean(value: Any) -> Any:
    """``value`` as strict JSON can hold it: non-finite floats as strings."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


_PLAIN = (int, str, bool, type(None))


def cell(value: Any) -> Any:
    """``clean(value)``, fast for the usual plain values (a runs table has 10,000s)."""
    kind = type(value)
    if kind is float:
        return value if value - value == 0 else clean(value)  # NaN and inf: not 0
    if kind in _PLAIN:
        return value
    return clean(value)


def float_list(values: np.ndarray) -> list[Any]:
    """A float array as a JSON list: NaN and infinities as null."""
    arr = np.asarray(values, dtype=np.float64)
    out = arr.tolist()
    bad = ~np.isfinite(arr)
    if bad.any():
        for i in np.flatnonzero(bad).tolist():
            out[i] = None
    return out


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()


def zlib_gzip(body: bytes) -> bytes:
    """``body`` gzipped, fast (level 1: JSON of numbers and names shrinks well anyway)."""
    import gzip

    return gzip.compress(body, compresslevel=1, mtime=0)


# -- runs -----------------------------------------------------------------------------------------


def effective_status(row: dict[str, Any], now: float | None = None) -> str:
    """The run's status as ``RunReader.status`` reads it (a silent running run: crashed)."""
    now = time.time() if now is None else now
    hb = row.get("heartbeat")
    if row["status"] == "running" and hb is not None and now - hb > STALE_HEARTBEAT_S:
        return "crashed"
    return row["status"]


def _field_value(kind: str, value: Any) -> Any:
    try:
        out = decode_field(kind, value)
    except (ValueError, TypeError, OverflowError):
        return value
    if hasattr(out, "isoformat"):
        return out.isoformat()
    return out


def _run_doc(row: dict[str, Any], now: float) -> dict[str, Any]:
    return {
        "id": row["run_id"],
        "project": row["project"],
        "name": row["name"],
        "status": effective_status(row, now),
        "created_at": row["created_at"],
        "ended_at": row["ended_at"],
        "updated_at": row.get("updated_at"),
        "heartbeat": row.get("heartbeat"),
        "parent_id": row["parent_id"],
        "fork_step": row["fork_step"],
        "tags": [],
        "config": {},
        "metrics": {},
    }


def default_metrics(paths: list[str]) -> list[str]:
    """The metric columns a runs table starts with: up to three losses, accuracies,
    scores or objective values."""
    return [p for p in sorted(paths) if re.search(r"loss|acc|score|value", p)][:3]


def list_runs_fast(
    store: Store, project: str | None, metrics: list[str] | None, *, bulk: bool = True
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Every run (of ``project``) with tags, flat config and the last value of each of
    ``metrics`` (rank 0; None: ``default_metrics``), newest first; the metric paths the
    runs have (rank 0, not ``sys/``, at most 500); and the metrics used. A few queries in
    all on a directory or PostgreSQL store (``_bulk``); run by run elsewhere (a team
    server's URL), or with ``bulk=False``."""
    now = time.time()
    rows = store.runs(project=project)
    docs = {row["run_id"]: _run_doc(row, now) for row in rows}
    found = _bulk(store, project, metrics) if bulk else None
    if found is not None:
        tags, config, lasts, paths, metrics = found
        for rid, tag in tags:
            if rid in docs:
                docs[rid]["tags"].append(tag)
        for rid, path, kind, value in config:
            if rid in docs:
                docs[rid]["config"][path[7:]] = cell(_field_value(kind, value))
        for rid, path, value in lasts:
            if rid in docs:
                docs[rid]["metrics"][path] = cell(value)
        paths = sorted(paths)
    else:
        seen: set[str] = set()
        last: dict[str, dict[str, Any]] = {}
        for rid, doc in docs.items():
            doc["tags"] = store.tags(rid)
            for path, kind, value in store.fields(rid, prefix="config/"):
                doc["config"][path[7:]] = cell(_field_value(kind, value))
            last[rid] = {s.path: s.last_value for s in store.series_list(rid, 0)}
            for path in last[rid]:
                if len(seen) < 500 and not path.startswith("sys/"):
                    seen.add(path)
        paths = sorted(seen)
        if metrics is None:
            metrics = default_metrics(paths)
        for rid, doc in docs.items():
            doc["metrics"] = {m: cell(last[rid][m]) for m in metrics if m in last[rid]}
    for doc in docs.values():
        doc["tags"].sort()
    return list(docs.values()), paths, metrics


def _bulk(store: Store, project: str | None, metrics: list[str] | None) -> Any:
    """(tags, config fields, metrics' last values, metric paths, metrics) of every run
    of ``project``, each one query, on the stores whose tables this knows; else None."""
    name = type(store).__name__
    if name == "SQLiteStore":
        conn = _sqlite_connection(store)
        scope = "" if project is None else " WHERE project=?"
        args: tuple[Any, ...] = () if project is None else (project,)
        runs_in = f"run_id IN (SELECT run_id FROM runs{scope})"

        def read(sql: str, more: tuple[Any, ...] = ()) -> list[Any]:
            return conn.execute(sql, (*more, *args)).fetchall()

        tags = read(f"SELECT run_id, tag FROM tags WHERE {runs_in}")
        config = read(
            "SELECT run_id, path, kind, value FROM fields WHERE path >= 'config/' AND "
            f"path < 'config0' AND {runs_in}"
        )
        paths = [
            p
            for (p,) in read(
                "SELECT DISTINCT path FROM series WHERE rank=0 AND path NOT LIKE 'sys/%' "
                f"AND {runs_in} LIMIT 500"
            )
        ]
        if metrics is None:
            metrics = default_metrics(paths)
        lasts: list[Any] = []
        if metrics:
            lasts = read(
                "SELECT run_id, path, last_value FROM series WHERE rank=0 AND "
                f"path IN ({','.join('?' * len(metrics))}) AND {runs_in}",
                tuple(metrics),
            )
        return tags, config, lasts, paths, metrics
    if name == "PostgresStore":
        from ..core.stores.postgres import _field_value as pg_value

        pg_read = getattr(store, "_read")  # noqa: B009 (the store's own retrying read)
        scope = "" if project is None else " WHERE project=%s"
        pargs: list[Any] = [] if project is None else [project]
        runs_in = f"run_id IN (SELECT run_id FROM runs{scope})"
        tags = pg_read(f"SELECT run_id, tag FROM tags WHERE {runs_in}", pargs)
        config = [
            (rid, path, kind, pg_value(i, f, t))
            for rid, path, kind, i, f, t in pg_read(
                "SELECT run_id, path, kind, ival, fval, tval FROM fields WHERE "
                f"left(path, 7) = 'config/' AND {runs_in}",
                pargs,
            )
        ]
        paths = [
            p
            for (p,) in pg_read(
                "SELECT DISTINCT path FROM series WHERE rank=0 AND left(path, 4) <> 'sys/' "
                f"AND {runs_in} LIMIT 500",
                pargs,
            )
        ]
        if metrics is None:
            metrics = default_metrics(paths)
        lasts = []
        if metrics:
            lasts = [
                (rid, path, f if t is None else t)
                for rid, path, f, t in pg_read(
                    "SELECT run_id, path, last_fval, last_tval FROM series WHERE rank=0 AND "
                    f"path = ANY(%s) AND {runs_in}",
                    [list(metrics), *pargs],
                )
            ]
        return tags, config, lasts, paths, metrics
    return None


def remote_listing(
    store: Store, project: str | None, metrics: list[str] | None
) -> dict[str, Any] | None:
    """A team server's runs table as its own UI lists it (``GET /api/ui/runs``: its bulk
    listing, one request), for ``tracker ui --store http://...``; None for any other store,
    or a server without the UI (older): the caller then lists run by run."""
    if type(store).__name__ != "HTTPStore":
        return None
    query: dict[str, Any] = {"project": project}
    if metrics is not None:
        query["metrics"] = ",".join(metrics)
    try:
        _status, body = store.request("GET", "/ui/runs", query=query)  # type: ignore[attr-defined]
        doc = json.loads(body)
    except (TrackerError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        return None
    doc["project"] = project
    return doc


def runs_version(store: Store, project: str | None) -> str:
    """A short fingerprint of what the runs table of ``project`` shows: it changes when a
    run is added, removed, changes status, beats, gets tags or config, or logs a point.
    A few aggregate queries on a directory or PostgreSQL store; the runs' rows elsewhere."""
    name = type(store).__name__
    parts: list[Any]
    if name in ("SQLiteStore", "PostgresStore"):
        mark = "?" if name == "SQLiteStore" else "%s"
        scope = "" if project is None else f" WHERE project={mark}"
        args: tuple[Any, ...] = () if project is None else (project,)
        runs_in = f"run_id IN (SELECT run_id FROM runs{scope})"
        if name == "SQLiteStore":
            conn = _sqlite_connection(store)

            def read(sql: str) -> list[Any]:
                return list(conn.execute(sql, args).fetchone())
        else:
            pg_read = getattr(store, "_read")  # noqa: B009 (the store's own retrying read)

            def read(sql: str) -> list[Any]:
                return list(pg_read(sql, args)[0])

        parts = read(
            "SELECT count(*), max(created_at), max(updated_at), max(ended_at), max(heartbeat) "
            f"FROM runs{scope}"
        )
        parts += read(f"SELECT count(*) FROM tags WHERE {runs_in}")
        parts += read(f"SELECT count(*) FROM fields WHERE {runs_in}")
        parts += read(f"SELECT sum(count), count(*) FROM series WHERE rank=0 AND {runs_in}")
    elif name == "HTTPStore":
        try:
            _status, body = store.request(  # type: ignore[attr-defined]
                "GET", "/ui/runs-version", query={"project": project}
            )
            return str(json.loads(body)["version"])
        except (TrackerError, ValueError, KeyError, TypeError):
            parts = [sorted(map(str, (r.values() for r in store.runs(project=project))))]
    else:
        parts = [sorted(map(str, (r.values() for r in store.runs(project=project))))]
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _sqlite_connection(store: Store) -> Any:
    """The embedded store's SQLite connection (this thread's), for the bulk queries."""
    return store.connection()  # type: ignore[attr-defined]


def projects_of(store: Store) -> list[str]:
    name = type(store).__name__
    if name == "SQLiteStore":
        rows = _sqlite_connection(store).execute("SELECT DISTINCT project FROM runs").fetchall()
        return sorted(p for (p,) in rows)
    if name == "PostgresStore":
        return sorted(p for (p,) in getattr(store, "_read")("SELECT DISTINCT project FROM runs"))  # noqa: B009
    return sorted({r["project"] for r in store.runs()})


# -- series ---------------------------------------------------------------------------------------


def series_state(store: Store, run_id: str, path: str) -> list[tuple[int, int, int]]:
    """(rank, point count, last step) of each rank's series at ``path``: what says
    whether a kept ``Series`` is still the stored one. One indexed query on a directory
    or PostgreSQL store (a run may have 100,000 series); ``series_list`` elsewhere."""
    name = type(store).__name__
    if name == "SQLiteStore":
        sql = "SELECT rank, count, last_step FROM series WHERE run_id=? AND path=?"
        return _sqlite_connection(store).execute(sql, (run_id, path)).fetchall()
    if name == "PostgresStore":
        sql = "SELECT rank, count, last_step FROM series WHERE run_id=%s AND path=%s"
        return [tuple(r) for r in getattr(store, "_read")(sql, (run_id, path))]  # noqa: B009
    return [(s.rank, s.points, s.last_step) for s in store.series_list(run_id) if s.path == path]


class Series:
    """A series as the UI keeps it: its points and, for a long one, a fine reduction
    (``FINE_BUCKETS`` buckets of first/last/min/max/count/NaN count) that coarser
    buckets are merged from, so a chart of 10 M points needs no pass over them."""

    def __init__(self, steps: np.ndarray, values: np.ndarray) -> None:
        self.steps = steps
        self.values = values
        self.nbytes = steps.nbytes + values.nbytes
        self.has_nan = bool(np.isnan(values).any()) if len(values) else False
        self.fine: dict[str, Any] | None = None
        if len(steps) > RAW_LIMIT:
            b = bucketize(steps, values, FINE_BUCKETS)
            lo = int(steps[0])
            width = -(-(int(steps[-1]) - lo + 1) // FINE_BUCKETS)
            if self.has_nan:
                starts = np.concatenate(([0], np.cumsum(b.count)[:-1]))
                nan = np.add.reduceat(np.isnan(values).astype(np.int64), starts)
            else:
                nan = np.zeros(len(b), np.int64)
            self.fine = {
                "lo": lo,
                "width": width,
                "index": (b.step - lo) // width,
                "first": b.first,
                "last": b.last,
                "min": b.min,
                "max": b.max,
                "count": b.count,
                "nan": nan,
            }
            self.nbytes += 8 * 7 * len(b)

    def buckets(self, start: int | None, end: int | None, n: int) -> dict[str, Any]:
        """At most ``n`` buckets (or the points, if at most ``n``) of steps in
        [start, end]."""
        steps = self.steps
        lo = 0 if start is None else int(np.searchsorted(steps, start, "left"))
        hi = len(steps) if end is None else int(np.searchsorted(steps, end, "right"))
        if hi - lo <= RAW_LIMIT or self.fine is None or hi - lo <= n:
            doc = bucket_doc(steps[lo:hi], self.values[lo:hi], n, self.has_nan)
            doc["points"] = hi - lo
            return doc
        # Merged from the fine buckets: each coarse bucket is k whole fine buckets. Where
        # the range cuts a fine bucket, that bucket counts whole (a fine bucket's width).
        f = self.fine
        first_step, last_step = int(steps[lo]), int(steps[hi - 1])
        i0 = (first_step - f["lo"]) // f["width"]
        i1 = (last_step - f["lo"]) // f["width"]
        index = f["index"]
        a = int(np.searchsorted(index, i0, "left"))
        b = int(np.searchsorted(index, i1, "right"))
        k = -(-(i1 - i0 + 1) // n)
        group = (index[a:b] - i0) // k
        starts = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
        ends = np.concatenate((starts[1:], [b - a]))
        count = np.add.reduceat(f["count"][a:b], starts)
        return {
            "raw": False,
            "step": (f["lo"] + (i0 + group[starts] * k) * f["width"]).tolist(),
            "first": float_list(f["first"][a:b][starts]),
            "last": float_list(f["last"][a:b][ends - 1]),
            "min": float_list(np.fmin.reduceat(f["min"][a:b], starts)),
            "max": float_list(np.fmax.reduceat(f["max"][a:b], starts)),
            "count": count.tolist(),
            "nan": np.add.reduceat(f["nan"][a:b], starts).tolist(),
            "points": int(count.sum()),
        }


class Summarized:
    """A long series as the UI keeps it: its block summaries (``downsample.Blocks``,
    a few bytes per ``downsample.BLOCK`` steps), not its points."""

    def __init__(self, blocks: Blocks) -> None:
        self.blocks = blocks
        self.nbytes = 72 * len(blocks)


class SeriesCache:
    """Recently read series (``Series``), at most ``max_bytes`` of them, keyed by (run,
    path, rank or aggregate) and checked against the series' point count and last step:
    a series that grew (a running run) is read again."""

    def __init__(self, max_bytes: int = 1024 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, tuple[Any, Series | Summarized]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Any, version: Any) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] != version:
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: Any, version: Any, series: Series | Summarized) -> None:
        if series.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1].nbytes
            self._items[key] = (version, series)
            self._bytes += series.nbytes
            while self._bytes > self.max_bytes and self._items:
                _k, (_v, gone) = self._items.popitem(last=False)
                self._bytes -= gone.nbytes


def bucket_doc(
    steps: np.ndarray, values: np.ndarray, buckets: int, has_nan: bool = True
) -> dict[str, Any]:
    """Points (as many as ``buckets`` or fewer) or buckets of ``steps``/``values``."""
    n = len(steps)
    if n <= buckets:
        vals = float_list(values)
        return {
            "raw": True,
            "step": steps.tolist(),
            "first": vals,
            "last": vals,
            "min": vals,
            "max": vals,
            "count": [1] * n,
            "nan": np.isnan(values).astype(np.int64).tolist(),
        }
    b = bucketize(steps, values, buckets)
    if has_nan:
        starts = np.concatenate(([0], np.cumsum(b.count)[:-1]))
        nan = np.add.reduceat(np.isnan(values).astype(np.int64), starts).tolist()
    else:
        nan = [0] * len(b)
    return {
        "raw": False,
        "step": b.step.tolist(),
        "first": float_list(b.first),
        "last": float_list(b.last),
        "min": float_list(b.min),
        "max": float_list(b.max),
        "count": b.count.tolist(),
        "nan": nan,
    }


class UI:
    """What the JSON routes do, over one store (kept apart from FastAPI to be testable)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cache = SeriesCache()
        self._index: dict[str, tuple[Any, dict[str, dict[str, Any]]]] = {}
        self._index_lock = threading.Lock()

    def row(self, run_id: str, project: str | None) -> dict[str, Any]:
        row = self.store.run(run_id)
        if row is None or (project is not None and row["project"] != project):
            raise NotFound(f"no run {run_id!r}")
        return row

    def runs(self, project: str | None, metrics: list[str] | None) -> dict[str, Any]:
        t0 = time.perf_counter()
        remote = remote_listing(self.store, project, metrics)
        if remote is not None:
            remote["server_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            return remote
        runs, paths, used = list_runs_fast(self.store, project, metrics)
        return {
            "project": project,
            "runs": runs,
            "metric_paths": paths,
            "metrics": used,
            "server_ms": round((time.perf_counter() - t0) * 1000, 1),
        }

    def run(self, run_id: str, project: str | None) -> dict[str, Any]:
        st = self.store
        row = self.row(run_id, project)
        fields = []
        for path, kind, value in st.fields(run_id):
            fields.append([path, kind, clean(_field_value(kind, value))])
        children = [
            {"id": r["run_id"], "name": r["name"], "fork_step": r["fork_step"]}
            for r in st.runs(parent_id=run_id, project=row["project"])
        ]
        lineage = []
        parent, step = row["parent_id"], row["fork_step"]
        seen = {run_id}
        while parent and parent not in seen:
            seen.add(parent)
            prow = st.run(parent)
            lineage.append(
                {"id": parent, "name": prow["name"] if prow else None, "fork_step": step}
            )
            if prow is None:
                break
            parent, step = prow["parent_id"], prow["fork_step"]
        doc = _run_doc(row, time.time())
        doc.update(
            host=row.get("host"),
            pid=row.get("pid"),
            error=row.get("error"),
            tags=st.tags(run_id),
            fields=fields,
            ranks=st.ranks(run_id),
            lineage=lineage,
            children=children,
        )
        return clean(doc)

    def _series_index(self, run_id: str, row: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The run's series by path (its fork ancestors' too), kept while the run's row is
        unchanged (for a running run, at most ``SERIES_LIST_TTL_S``)."""
        version: tuple[Any, ...] = (row["status"], row.get("updated_at"), row["ended_at"])
        if row["status"] == "running":
            version += (int(time.monotonic() // SERIES_LIST_TTL_S),)
        with self._index_lock:
            kept = self._index.get(run_id)
        if kept is not None and kept[0] == version:
            return kept[1]
        reader = RunReader(self.store, run_id, row)
        by_path: dict[str, dict[str, Any]] = {}
        for rid, _limit in reader._lineage:
            for s in self.store.series_list(rid):
                doc = by_path.get(s.path)
                if doc is None:
                    doc = by_path[s.path] = {
                        "path": s.path,
                        "kind": s.kind,
                        "ranks": [],
                        "count": 0,
                        "last_step": s.last_step,
                        "last_value": cell(s.last_value) if rid == run_id else None,
                    }
                if s.rank not in doc["ranks"]:
                    doc["ranks"].append(s.rank)
                if s.rank == 0 or len(doc["ranks"]) == 1:
                    doc["count"] += s.points
        # Events are listed and drawn as markers (``events``), not as a series.
        ordered = {p: by_path[p] for p in sorted(by_path) if p != EVENTS_PATH}
        with self._index_lock:
            self._index[run_id] = (version, ordered)
            while len(self._index) > 64:
                self._index.pop(next(iter(self._index)))
        return ordered

    def series(self, run_id: str, project: str | None, q: str, limit: int) -> dict[str, Any]:
        row = self.row(run_id, project)
        by_path = self._series_index(run_id, row)
        q = (q or "").strip()
        if q:
            pattern = q if any(c in q for c in "*?[") else f"*{q}*"
            match = re.compile(fnmatch.translate(pattern), re.IGNORECASE).match
            names = [n for n in by_path if match(n)]
        else:
            names = list(by_path)
        return {
            "total": len(by_path),
            "matched": len(names),
            "series": [by_path[n] for n in names[:limit]],
        }

    def _points(self, reader: RunReader, path: str, rank: int, aggregate: str | None) -> Series:
        version = tuple(
            (rid, r, points, last)
            for rid, _lim in reader._lineage
            for r, points, last in series_state(self.store, rid, path)
            if aggregate or r == rank
        )
        key = (reader.id, path, aggregate or rank)
        found = self.cache.get(key, version)
        if found is not None:
            return found
        field = reader[path]
        if aggregate:
            values = field.fetch_values(aggregate=aggregate)
        else:
            values = field.fetch_values(rank=rank)
        if values.value.dtype == object:
            raise BadRequest(f"series {path!r} holds str values; it cannot be drawn")
        series = Series(
            np.ascontiguousarray(values.step, dtype=np.int64),
            np.ascontiguousarray(values.value, dtype=np.float64),
        )
        self.cache.put(key, version, series)
        return series

    def _summarized(
        self,
        reader: RunReader,
        path: str,
        rank: int,
        start: int | None,
        end: int | None,
        n: int,
    ) -> tuple[dict[str, Any], int] | None:
        """The chart of a long series from the store's chunk summaries (``Summarized``),
        and its point count; None where the series is short (the points serve), or the
        store keeps no summaries: ``_points`` then reads it whole."""
        version = tuple(
            (rid, r, points, last)
            for rid, _lim in reader._lineage
            for r, points, last in series_state(self.store, rid, path)
            if r == rank
        )
        if sum(v[2] for v in version) <= RAW_LIMIT:
            return None
        key = (reader.id, path, rank, "blocks")
        kept = self.cache.get(key, version)
        if kept is None:
            blocks = reader._blocks(path, rank)
            if blocks is None:
                return None
            kept = Summarized(blocks)
            self.cache.put(key, version, kept)
        assert isinstance(kept, Summarized)
        b = kept.blocks
        if not len(b):
            return bucket_doc(np.empty(0, np.int64), np.empty(0), n), 0
        lo_step, hi_step = int(b.first_step[0]), int(b.last_step[-1])
        whole = (start is None or start <= lo_step) and (end is None or end >= hi_step)
        if not whole:
            inside = np.ones(len(b), bool)
            if start is not None:
                inside &= b.last_step >= start
            if end is not None:
                inside &= b.first_step <= end
            if int(b.count[inside].sum()) <= RAW_LIMIT:
                # Few enough points: the chunks of the range, read and bucketed exactly.
                found = reader._points_in(path, rank, start, end)
                assert found is not None
                doc = bucket_doc(found[0], found[1], n)
                doc["points"] = len(found[0])
                return doc, b.points
            ranged = reader._blocks(path, rank, start, end)
            assert ranged is not None
            b = ranged
            if not len(b):
                return bucket_doc(np.empty(0, np.int64), np.empty(0), n), kept.blocks.points
        origin, width = aligned_width(int(b.first_step[0]), int(b.last_step[-1]), n)
        out, nan = blocks_to_buckets(b, origin, width)
        return {
            "raw": False,
            "aligned": True,
            "step": out.step.tolist(),
            "first": float_list(out.first),
            "last": float_list(out.last),
            "min": float_list(out.min),
            "max": float_list(out.max),
            "count": out.count.tolist(),
            "nan": nan.tolist(),
            "points": int(out.count.sum()),
        }, kept.blocks.points

    def values(
        self,
        run_id: str,
        project: str | None,
        path: str,
        rank: int,
        buckets: int,
        start: int | None,
        end: int | None,
        aggregate: str | None,
    ) -> dict[str, Any]:
        if not 1 <= buckets <= MAX_BUCKETS:
            raise BadRequest(f"buckets: 1 to {MAX_BUCKETS}")
        t0 = time.perf_counter()
        row = self.row(run_id, project)
        reader = RunReader(self.store, run_id, row)
        found = None if aggregate else self._summarized(reader, path, rank, start, end, buckets)
        if found is not None:
            doc, total = found
        else:
            try:
                series = self._points(reader, path, rank, aggregate)
            except KeyError as exc:
                raise NotFound(str(exc.args[0])) from None
            except (TypeError, ValueError) as exc:
                raise BadRequest(str(exc)) from None
            doc, total = series.buckets(start, end, buckets), len(series.steps)
        doc.update(
            path=path,
            rank=rank,
            aggregate=aggregate,
            total=total,
            start=start,
            end=end,
            buckets=len(doc["step"]),
            requested=buckets,
            status=effective_status(row),
            server_ms=round((time.perf_counter() - t0) * 1000, 1),
        )
        return doc

    def _text_points(self, run_id: str, project: str | None, path: str, rank: int) -> Any:
        row = self.row(run_id, project)
        try:
            values = RunReader(self.store, run_id, row)[path].fetch_values(rank=rank)
        except KeyError as exc:
            raise NotFound(str(exc.args[0])) from None
        if values.value.dtype != object:
            raise BadRequest(f"series {path!r} holds numbers; draw it as a chart")
        return values

    def text(
        self,
        run_id: str,
        project: str | None,
        path: str,
        rank: int,
        q: str,
        offset: int,
        limit: int,
    ) -> dict[str, Any]:
        """A text series as (step, text) rows, newest first, ``limit`` from ``offset``
        among those holding ``q`` (case-insensitive)."""
        values = self._text_points(run_id, project, path, rank)
        steps = values.step.tolist()
        texts = values.value.tolist()
        order = list(range(len(steps) - 1, -1, -1))
        needle = q.strip().lower()
        if needle:
            order = [i for i in order if needle in texts[i].lower()]
        return {
            "path": path,
            "rank": rank,
            "total": len(steps),
            "matched": len(order),
            "offset": offset,
            "rows": [[steps[i], texts[i]] for i in order[offset : offset + limit]],
        }

    def events(self, run_id: str, project: str | None) -> dict[str, Any]:
        """The run's events (``sys/events``: one JSON object per point), oldest first,
        at most ``MAX_EVENTS`` (the latest); [] where it has none."""
        try:
            values = self._text_points(run_id, project, EVENTS_PATH, 0)
        except NotFound:
            self.row(run_id, project)  # a missing run is still a 404
            return {"events": [], "total": 0}
        except BadRequest:
            return {"events": [], "total": 0}
        steps = values.step.tolist()[-MAX_EVENTS:]
        texts = values.value.tolist()[-MAX_EVENTS:]
        out = []
        for step, text in zip(steps, texts, strict=True):
            try:
                event = json.loads(text)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                event = {"kind": "unknown", "message": text}
            if not isinstance(event.get("step"), int):
                event["step"] = step
            out.append(event)
        return clean({"events": out, "total": len(values.step)})

    def ranks(self, run_id: str, project: str | None, path: str | None, buckets: int) -> dict:
        st = self.store
        row = self.row(run_id, project)
        reader = RunReader(st, run_id, row)
        ranks = st.ranks(run_id)
        per_path: dict[str, set[int]] = {}
        for s in st.series_list(run_id):
            if s.kind == "float":
                per_path.setdefault(s.path, set()).add(s.rank)
        multi = sorted(p for p, r in per_path.items() if len(r) > 1 and not p.startswith("sys/"))
        sys_paths = sorted(p for p in per_path if p.startswith("sys/"))
        sys_ranked = [p for p in sys_paths if len(per_path[p]) > 1]
        if path is None:
            path = next(
                (p for p in multi if "loss" in p and p != "per_rank/step_time"),
                multi[0] if multi else next(iter(sorted(per_path)), None),
            )
        doc: dict[str, Any] = {
            "id": run_id,
            "name": row["name"],
            "ranks": ranks,
            "paths": multi or sorted(per_path),
            "sys_paths": sys_paths,
            "sys_per_rank": sys_ranked,
            "path": path,
        }
        for name, which in (("heatmap", path), ("step_time", "per_rank/step_time")):
            if which is None or which not in per_path:
                doc[name] = None
                continue
            doc[name] = self._grid(reader, which, sorted(per_path[which]), buckets)
        return clean(doc)

    def _grid(self, reader: RunReader, path: str, ranks: list[int], buckets: int) -> dict:
        """Each rank's series on one grid of ``buckets`` step buckets: the mean per bucket."""
        series = {}
        for rank in ranks:
            try:
                found = self._points(reader, path, rank, None)
            except (KeyError, BadRequest):
                continue
            series[rank] = (found.steps, found.values)
        present = [s for s, _v in series.values() if len(s)]
        if not present:
            return {"path": path, "steps": [], "rows": []}
        lo = min(int(s[0]) for s in present)
        hi = max(int(s[-1]) for s in present)
        width = max(1, -(-(hi - lo + 1) // buckets))
        n = (hi - lo) // width + 1
        rows = []
        for rank, (steps, vals) in series.items():
            idx = (steps - lo) // width
            ok = ~np.isnan(vals)
            sums = np.bincount(idx[ok], weights=vals[ok], minlength=n)
            counts = np.bincount(idx[ok], minlength=n)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = sums / counts
            rows.append({"rank": rank, "values": float_list(mean)})
        return {"path": path, "steps": (lo + np.arange(n) * width).tolist(), "rows": rows}

    def compare(self, ids: list[str], project: str | None) -> dict[str, Any]:
        st = self.store
        runs = []
        paths: dict[str, int] = {}
        for rid in ids:
            row = self.row(rid, project)
            doc = _run_doc(row, time.time())
            doc["tags"] = st.tags(rid)
            cfg = {}
            trial = {}
            for path, kind, value in st.fields(rid):
                if path.startswith("config/"):
                    cfg[path[7:]] = _field_value(kind, value)
                elif path.startswith("trial/") and kind in ("int", "float"):
                    trial[path] = _field_value(kind, value)
            doc["config"] = cfg
            doc["trial"] = trial
            reader = RunReader(st, rid, row)
            own = {}
            for p, rank in reader.series_keys():
                if rank == 0 and not p.startswith("sys/"):
                    paths[p] = paths.get(p, 0) + 1
            for s in st.series_list(rid, 0):
                if s.kind == "float":
                    own[s.path] = s.last_value
            doc["metrics"] = own
            runs.append(doc)
        keys = sorted({k for r in runs for k in r["config"]})
        diff = []
        for k in keys:
            vals = [r["config"].get(k, None) for r in runs]
            texts = {json.dumps(clean(v), sort_keys=True) for v in vals}
            diff.append({"key": k, "values": vals, "differs": len(texts) > 1})
        common = sorted(p for p, c in paths.items() if c == len(runs))
        others = sorted(p for p, c in paths.items() if c < len(runs))
        return clean({"runs": runs, "config": diff, "series": common + others})


# -- mounting -------------------------------------------------------------------------------------


def _page(name: str) -> bytes:
    return (UI_DIR / name).read_bytes()


def mount_ui(app: Any, store: Store, project_of: ProjectOf, *, token_login: bool) -> UI:
    """Add the UI's pages, assets and ``/api/ui/`` JSON routes to the FastAPI ``app``.

    ``project_of(request)`` authenticates a JSON request and returns the project it may
    read (None: any); ``token_login`` makes the pages ask for a token (the team server).
    """
    ui = UI(store)
    app.state.ui = ui
    mode = b"token" if token_login else b"open"

    def html(name: str) -> Response:
        body = _page(name).replace(b"{{AUTH_MODE}}", mode)
        return Response(
            body,
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"},
        )

    def json_answer(doc: Any, status: int = 200, gzip_ok: bool = False) -> Response:
        body = dumps(doc)
        headers = {"Cache-Control": "no-store"}
        if gzip_ok and len(body) > 64 * 1024:
            # The runs table of 10,000 runs is some 4 MB of JSON, a tenth of it gzipped.
            body = zlib_gzip(body)
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    async def call(request: Any, work: Callable[[str | None], Any]) -> Response:
        project = await run_in_threadpool(project_of, request)
        gzip_ok = "gzip" in request.headers.get("accept-encoding", "")

        def run() -> bytes | Any:
            return work(project)

        try:
            return json_answer(await run_in_threadpool(run), gzip_ok=gzip_ok)
        except NotFound as exc:
            return json_answer({"detail": str(exc)}, 404)
        except BadRequest as exc:
            return json_answer({"detail": str(exc)}, 400)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return html("index.html")

    @app.get("/runs/{run_id}", include_in_schema=False)
    def run_page(run_id: str) -> Response:
        return html("run.html")

    @app.get("/runs/{run_id}/ranks", include_in_schema=False)
    def ranks_page(run_id: str) -> Response:
        return html("ranks.html")

    @app.get("/compare", include_in_schema=False)
    def compare_page() -> Response:
        return html("compare.html")

    types = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}

    @app.get("/ui/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        target = UI_DIR / name
        if "/" in name or name.startswith(".") or not target.is_file():
            return Response(b"not found", status_code=404, media_type="text/plain")
        kind = types.get(target.suffix, "application/octet-stream")
        return Response(
            target.read_bytes(),
            media_type=kind + ("; charset=utf-8" if kind.startswith("text") else ""),
            headers={"Cache-Control": "max-age=300"},
        )

    @app.get("/api/ui/runs")
    async def ui_runs(
        request: Request, project: str | None = None, metrics: str | None = None
    ) -> Response:
        # No metrics= at all: the server picks the first columns (default_metrics).
        wanted = None if metrics is None else [m for m in metrics.split(",") if m][:50]

        def work(allowed: str | None) -> Any:
            chosen = project or None
            if allowed is not None:
                chosen = allowed
            doc = ui.runs(chosen, wanted)
            if allowed is not None:
                doc["projects"] = [allowed]
            elif "projects" not in doc:  # a team server's listing names its own
                doc["projects"] = projects_of(store)
            return doc

        return await call(request, work)

    @app.get("/api/ui/runs-version")
    async def ui_runs_version(request: Request, project: str | None = None) -> Response:
        # What the runs table polls: its full listing is read again only when this changes.
        def work(allowed: str | None) -> Any:
            chosen = allowed if allowed is not None else (project or None)
            return {"project": chosen, "version": runs_version(store, chosen)}

        return await call(request, work)

    @app.get("/api/ui/runs/{run_id}")
    async def ui_run(request: Request, run_id: str) -> Response:
        return await call(request, lambda p: ui.run(run_id, p))

    @app.get("/api/ui/runs/{run_id}/series")
    async def ui_series(request: Request, run_id: str, q: str = "", limit: int = 500) -> Response:
        limit = max(1, min(limit, MAX_SERIES_LISTED))
        return await call(request, lambda p: ui.series(run_id, p, q, limit))

    @app.get("/api/ui/runs/{run_id}/values")
    async def ui_values(
        request: Request,
        run_id: str,
        path: str,
        rank: int = 0,
        buckets: int = 1000,
        start: int | None = None,
        end: int | None = None,
        aggregate: str | None = None,
    ) -> Response:
        return await call(
            request,
            lambda p: ui.values(run_id, p, path, rank, buckets, start, end, aggregate or None),
        )

    @app.get("/api/ui/runs/{run_id}/text")
    async def ui_text(
        request: Request,
        run_id: str,
        path: str,
        rank: int = 0,
        q: str = "",
        offset: int = 0,
        limit: int = 200,
    ) -> Response:
        limit = max(1, min(limit, MAX_TEXT_LISTED))
        return await call(
            request, lambda p: ui.text(run_id, p, path, rank, q, max(0, offset), limit)
        )

    @app.get("/api/ui/runs/{run_id}/events")
    async def ui_events(request: Request, run_id: str) -> Response:
        return await call(request, lambda p: ui.events(run_id, p))

    @app.get("/api/ui/runs/{run_id}/ranks")
    async def ui_ranks(
        request: Request, run_id: str, path: str | None = None, buckets: int = 200
    ) -> Response:
        buckets = max(1, min(buckets, 2000))
        return await call(request, lambda p: ui.ranks(run_id, p, path or None, buckets))

    @app.get("/api/ui/compare")
    async def ui_compare(request: Request, runs: str = "") -> Response:
        ids = [r for r in runs.split(",") if r][:50]
        return await call(request, lambda p: ui.compare(ids, p))

    return ui


def create_ui_app(location: str | None = None, store: Store | None = None) -> Any:
    """``tracker ui``: the UI over a store, with no token (bind it to loopback)."""
    from fastapi import FastAPI

    import tracker

    from ..core.stores import open_store

    backend = store if store is not None else open_store(location, create=False, readonly=True)
    app = FastAPI(title="tracker ui", version=tracker.__version__, docs_url=None, redoc_url=None)
    app.state.store = backend

    @app.exception_handler(TrackerError)
    async def _store_failed(request: Request, exc: TrackerError) -> Response:
        return Response(dumps({"detail": f"the store failed: {exc}"}), status_code=503,
                        media_type="application/json")  # fmt: skip

    mount_ui(app, backend, lambda request: None, token_login=False)
    return app
