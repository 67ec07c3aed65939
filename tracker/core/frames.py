"""Results as tables: the runs table, a run's history, and how runs and series look in a
notebook.

``list_runs(metrics=[...], as_frame=True)`` and ``RunReader.history()`` build pandas
DataFrames; ``RunReader`` and ``SeriesValues`` render themselves as HTML in Jupyter
(``_repr_html_``). pandas is an optional extra, imported only by the functions that
build a DataFrame: ``import tracker`` never imports it, and without it those functions
raise an ImportError that names the extra to install.

Metric and path patterns are exact paths or globs (``*``, ``?``, ``[...]``, as
``fnmatch`` reads them: ``*`` also matches ``/``, so ``"val/*"`` matches
``"val/loss"`` and ``"val/top1/acc"``).

>>> import tracker
>>> with tracker.init_run(project="frames-demo", system_metrics=False) as run:
...     for step, loss in enumerate([0.9, 0.4, 0.6]):
...         run.log({"val/loss": loss}, step=step)
>>> (row,) = tracker.list_runs(project="frames-demo", metrics=["val/*"])
>>> row["metrics"]
{'val/loss': {'last': 0.6, 'min': 0.4, 'max': 0.9}}
>>> tracker.read_run(run.id)["val/loss"].fetch_values()
SeriesValues(3 points, steps 0..2, last value 0.6)
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import html
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import StoreError, one_line
from .paths import check_path, flatten

if TYPE_CHECKING:
    from types import ModuleType

    from .reader import RunReader, SeriesValues
    from .stores import Store

PANDAS_EXTRA = "pip install 'tracker-dl[pandas]'"
# What the runs table keeps of each chosen metric, in column order.
METRIC_STATS = ("last", "min", "max")
# The runs table's leading columns, in order; config and metric columns follow.
RUN_COLUMNS = ("id", "name", "project", "status", "tags", "created_at", "ended_at", "parent_id")
# A notebook view lists at most this many config values, series and points (head + tail).
HTML_MAX_ROWS = 100
HTML_HEAD_TAIL = 5
# Longer text (a config value, a str point) is cut in a notebook view.
HTML_MAX_TEXT = 200
_GLOB = frozenset("*?[")


def require_pandas(what: str) -> ModuleType:
    """pandas, or an ImportError saying that ``what`` needs the ``pandas`` extra.

    Example::

        pd = require_pandas("RunReader.history()")  # ImportError: ... pip install ...
    """
    try:
        import pandas
    except ImportError as exc:
        # pandas is optional: say which extra brings it rather than a bare module name.
        raise ImportError(
            f"{what} needs pandas, an optional extra of tracker: {PANDAS_EXTRA}",
            name="pandas",
        ) from exc
    return pandas


# -- patterns ----------------------------------------------------------------------------


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` is a glob rather than one path.

    >>> is_glob("val/*"), is_glob("val/loss")
    (True, False)
    """
    return not _GLOB.isdisjoint(pattern)


def patterns(value: Iterable[str] | str, what: str) -> list[str]:
    """``value`` (one pattern or several) as a list, each checked: a path must be valid.

    >>> patterns("train/*", "metrics")
    ['train/*']
    >>> patterns(["val/loss", "val/loss"], "metrics")
    ['val/loss']
    """
    items = [value] if isinstance(value, str) else value
    if isinstance(items, Mapping) or not isinstance(items, Iterable):
        raise TypeError(f"{what}= takes a path, a glob or a list of them, got {value!r}")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{what}= takes paths or globs (str), got {item!r}")
        if not item:
            raise ValueError(f"{what}= holds an empty pattern")
        if not is_glob(item):
            check_path(item)
        if item not in out:
            out.append(item)
    return out


def matching(wanted: list[str], available: Iterable[str]) -> list[str]:
    """The paths of ``available`` that ``wanted`` names, in the order of the patterns
    (a glob's matches sorted), each once. Exact paths are kept only if available.

    >>> matching(["b", "a/*"], ["a/y", "a/x", "b", "c"])
    ['b', 'a/x', 'a/y']
    """
    have = set(available)
    out: dict[str, None] = {}
    for pattern in wanted:
        if is_glob(pattern):
            # fnmatchcase: a path matches the same way on every platform.
            out.update(dict.fromkeys(sorted(p for p in have if fnmatch.fnmatchcase(p, pattern))))
        elif pattern in have:
            out[pattern] = None
    return list(out)


# -- the runs table ----------------------------------------------------------------------


def check_listing(metrics: Iterable[str] | str | None, as_frame: bool) -> list[str] | None:
    """``list_runs``'s ``metrics`` and ``as_frame`` checked before anything is read, so
    that a bad argument (or pandas missing) fails at once, not after a long listing."""
    if not isinstance(as_frame, bool):
        raise TypeError(f"as_frame= takes True or False, got {as_frame!r}")
    if as_frame:
        require_pandas("list_runs(as_frame=True)")
    return None if metrics is None else patterns(metrics, "metrics")


def listing(
    store: Store, entries: list[dict[str, Any]], wanted: list[str] | None, as_frame: bool
) -> Any:
    """What ``list_runs`` returns once its rows are read: ``entries`` with each run's
    ``"metrics"`` added when ``wanted`` names some, as a DataFrame when ``as_frame``."""
    if wanted is not None:
        for entry in entries:
            entry["metrics"] = _listed_metrics(store, entry["id"], wanted)
    if not as_frame:
        return entries
    return runs_frame(entries, wanted or [])


def _listed_metrics(store: Store, run_id: str, wanted: list[str]) -> dict[str, Any]:
    from .reader import RunReader  # here: reader imports this module

    try:
        row = store.run(run_id)
        if row is None:  # deleted since it was listed
            return {}
        return run_metrics(RunReader(store, run_id, row), wanted)
    except StoreError as exc:
        # One damaged run must not stop a listing of thousands (as list_runs' tags and
        # config): list it without its metrics, and say so.
        warnings.warn(
            f"tracker: run {run_id} in {store.root}: its metrics cannot be read "
            f"({one_line(exc)}); listed without them",
            RuntimeWarning,
            stacklevel=4,
        )
        return {}


def run_metrics(run: RunReader, wanted: list[str], rank: int = 0) -> dict[str, dict[str, Any]]:
    """``{path: {"last": .., "min": .., "max": ..}}`` for each series of ``run`` at
    ``rank`` that ``wanted`` names (paths or globs).

    The store's per-series summary (``RunReader.series_keys``) says which series exist,
    so a run without a chosen metric costs one query; the points of the metrics that
    exist are read (the summary keeps no minimum or maximum). ``last`` is the value
    at the highest step (what ``run[path].fetch()`` returns), ``min``/``max`` ignore
    NaN (NaN only if every point is); a str series has ``min``/``max`` None.
    """
    have = [path for path, r in run.series_keys() if r == rank]
    out: dict[str, dict[str, Any]] = {}
    for path in matching(wanted, have):
        values = run[path].fetch_values(rank=rank)
        out[path] = summarize(values.value)
    return out


def summarize(value: np.ndarray) -> dict[str, Any]:
    """Last, min and max of a series' values (sorted by step).

    >>> summarize(np.array([3.0, np.nan, 1.0, 2.0]))
    {'last': 2.0, 'min': 1.0, 'max': 3.0}
    >>> summarize(np.array(["a", "b"], dtype=object))
    {'last': 'b', 'min': None, 'max': None}
    """
    if len(value) == 0:  # every point superseded by a rewind
        return {"last": None, "min": None, "max": None}
    if value.dtype == object:
        return {"last": value[-1], "min": None, "max": None}
    # fmin/fmax skip NaN: one diverged step must not hide the best value.
    return {
        "last": float(value[-1]),
        "min": float(np.fmin.reduce(value)),
        "max": float(np.fmax.reduce(value)),
    }


def runs_frame(entries: list[dict[str, Any]], wanted: list[str]) -> Any:
    """The rows of ``list_runs`` as a DataFrame: one row per run, the columns of
    ``RUN_COLUMNS``, then ``config/...`` flattened (sorted by path), then ``<metric>/last|min|max``.

    ``created_at``/``ended_at`` are UTC timestamps (NaT while a run runs). A metric
    named exactly has its columns even where no run logged it; a glob adds a metric's
    columns when at least one run has it.
    """
    pd = require_pandas("list_runs(as_frame=True)")
    configs = [flatten(entry.get("config") or {}, "config") for entry in entries]
    # Sorted: the columns do not depend on which run happens to be newest.
    config_columns = sorted({key for cfg in configs for key in cfg})
    metric_paths = [p for p in wanted if not is_glob(p)]
    found = [entry.get("metrics") or {} for entry in entries]
    metric_paths = matching(wanted, {p for metrics in found for p in metrics} | set(metric_paths))
    data: dict[str, Any] = {}
    for column in RUN_COLUMNS:
        data[column] = [entry.get(column) for entry in entries]
    for column in ("created_at", "ended_at"):
        seconds = np.array([np.nan if t is None else t for t in data[column]], dtype=np.float64)
        data[column] = pd.to_datetime(seconds, unit="s", utc=True)
    for key in config_columns:
        data[key] = [cfg.get(key) for cfg in configs]  # pandas infers each column's dtype
    for path in metric_paths:
        for stat in METRIC_STATS:
            cells = [metrics.get(path, {}).get(stat) for metrics in found]
            data[f"{path}/{stat}"] = _column(cells)
    return pd.DataFrame(data, index=pd.RangeIndex(len(entries)))


def _column(cells: list[Any]) -> Any:
    """A metric column: float64 with NaN where a run lacks the metric, so that it sorts
    and compares as numbers; a str series' ``last`` stays text."""
    if all(c is None or isinstance(c, float) for c in cells):
        return np.array([math.nan if c is None else c for c in cells], dtype=np.float64)
    return cells


# -- a run's history ---------------------------------------------------------------------


def history(run: RunReader, paths: Iterable[str] | str | None = None, rank: int = 0) -> Any:
    """``RunReader.history``: the run's series at ``rank`` as one DataFrame by step."""
    pd = require_pandas("RunReader.history()")
    if isinstance(rank, bool) or not isinstance(rank, int | np.integer):
        raise TypeError(f"rank= takes an int, got {rank!r}")
    rank = int(rank)
    keys = run.series_keys()
    have = [path for path, r in keys if r == rank]
    if paths is None:
        # System metrics count samples, not training steps: joined on step they would
        # line up with unrelated training points. Name them ("sys/*") to get them.
        chosen = [path for path in have if not path.startswith("sys/")]
        ranks = sorted({r for _path, r in keys})
        if not have and ranks:
            raise KeyError(
                f"run {run.id} has no series from rank {rank}; its series were logged by "
                f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
            )
    else:
        wanted = patterns(paths, "paths")
        chosen = matching(wanted, have)
        for path in wanted:
            if not is_glob(path) and path not in chosen:
                run[path].fetch_values(rank=rank)  # raises the KeyError naming the ranks
    if "timestamp" in chosen:
        raise ValueError(
            f"run {run.id} has a series named 'timestamp', which would clash with the "
            "history's timestamp column; read it with run['timestamp'].fetch_values()"
        )
    # Repeated steps (evaluate() twice at one step): the last point written wins, so
    # that each step is one row.
    series = {path: run[path].fetch_values(rank=rank, per_step="last") for path in chosen}
    if series:
        steps = np.unique(np.concatenate([s.step for s in series.values()]))
    else:
        steps = np.empty(0, dtype=np.int64)
    stamp = np.full(len(steps), np.nan)
    columns: dict[str, Any] = {}
    for path, s in series.items():
        where = np.searchsorted(steps, s.step)
        if s.value.dtype == object:
            column: np.ndarray = np.full(len(steps), None, dtype=object)
        else:
            column = np.full(len(steps), np.nan)
        column[where] = s.value
        columns[path] = column
        # Steps are unique within one series here (per_step="last"), so this indexing
        # assigns each position once.
        stamp[where] = np.fmax(stamp[where], s.timestamp)
    data = {"timestamp": pd.to_datetime(stamp, unit="s", utc=True), **columns}
    return pd.DataFrame(data, index=pd.Index(steps, name="step"))


# -- notebook and console views ----------------------------------------------------------


def series_repr(values: SeriesValues) -> str:
    """``repr(SeriesValues)``: how many points, their steps and the last value.

    >>> import numpy as np
    >>> from tracker.core.reader import SeriesValues
    >>> series_repr(SeriesValues(np.array([0, 5]), np.array([1.5, 0.25]), np.zeros(2)))
    'SeriesValues(2 points, steps 0..5, last value 0.25)'
    """
    n = len(values)
    if n == 0:
        return "SeriesValues(0 points)"
    last = values.value[-1]
    shown = _number(last) if values.value.dtype != object else repr(_cut(str(last), 60))
    return (
        f"SeriesValues({n} point{'s' if n != 1 else ''}, steps {int(values.step[0])}.."
        f"{int(values.step[-1])}, last value {shown})"
    )


def series_html(values: SeriesValues) -> str:
    """``SeriesValues._repr_html_``: counts and the first and last points as a table."""
    n = len(values)
    kind = "str" if values.value.dtype == object else "float"
    head = f"{n:,} point{'s' if n != 1 else ''} ({kind})"
    if n:
        head += f", steps {values.step[0]}..{values.step[-1]}"
    if n > 2 * HTML_HEAD_TAIL:
        rows = list(range(HTML_HEAD_TAIL)) + [-1] + list(range(n - HTML_HEAD_TAIL, n))
    else:
        rows = list(range(n))
    body = []
    for i in rows:
        if i < 0:
            body.append(_row(["…", "…", "…"]))
            continue
        value = values.value[i]
        text = _number(value) if kind == "float" else _cut(str(value))
        body.append(_row([str(values.step[i]), text, _when(float(values.timestamp[i]))]))
    table = _table(["step", "value", "timestamp (UTC)"], body) if n else ""
    return f'<div class="tracker-series"><b>SeriesValues</b>: {_esc(head)}{table}</div>'


def run_html(run: RunReader) -> str:
    """``RunReader._repr_html_``: the run's metadata, config and series, escaped (names,
    tags and config values are the user's text)."""
    ended = run.ended_at
    facts = [
        ("id", run.id),
        ("name", run.name or ""),
        ("project", run.project),
        ("status", run.status),
        ("tags", ", ".join(run.tags)),
        ("created", _when(run.created_at) + " UTC"),
        ("ended", "" if ended is None else _when(ended) + " UTC"),
    ]
    parent = run.parent
    if parent is not None:
        facts.append(("forked from", f"{parent[0]} at step {parent[1]}"))
    meta = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(str(v))}</td></tr>" for k, v in facts)
    parts = [f'<div class="tracker-run"><table>{meta}</table>']

    from .values import decode_field

    config = [
        (path.removeprefix("config/"), decode_field(kind, value))
        for path, kind, value in run._store.fields(run.id, prefix="config/")
    ]
    rows = [_row([path, _cut(str(value))]) for path, value in config[:HTML_MAX_ROWS]]
    rows += _more(len(config), 2)
    parts.append(_section(f"config ({len(config)})", _table(["key", "value"], rows)))

    own = {(s["path"], s["rank"]): s for s in run.series_summary()}
    keys = run.series_keys()
    rows = []
    for path, rank in keys[:HTML_MAX_ROWS]:
        s = own.get((path, rank))
        if s is None:  # only its fork parent logged it: the summary is the parent's
            rows.append(_row([path, str(rank), "", "", "(from fork parent)"]))
            continue
        last = s["last_value"]
        shown = _number(last) if s["kind"] == "float" else _cut(str(last))
        rows.append(_row([path, str(rank), f"{s['count']:,}", str(s["last_step"]), shown]))
    rows += _more(len(keys), 5)
    head = ["path", "rank", "points", "last step", "last value"]
    parts.append(_section(f"series ({len(keys)})", _table(head, rows)))
    return "".join(parts) + "</div>"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _cut(text: str, limit: int = HTML_MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> str:
    if value is None:
        return "NaN"  # SQLite keeps a NaN REAL as NULL
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return _cut(str(value))


def _when(seconds: float) -> str:
    if not math.isfinite(seconds):
        return ""
    moment = _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _row(cells: list[str]) -> str:
    return "<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>"


def _table(head: list[str], rows: list[str]) -> str:
    top = "".join(f"<th>{_esc(h)}</th>" for h in head)
    return f"<table><thead><tr>{top}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _section(title: str, body: str) -> str:
    return f"<details open><summary>{_esc(title)}</summary>{body}</details>"


def _more(total: int, width: int) -> list[str]:
    if total <= HTML_MAX_ROWS:
        return []
    return [_row([f"… and {total - HTML_MAX_ROWS:,} more"] + [""] * (width - 1))]
