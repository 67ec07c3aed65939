"""Exporting runs: every series point as a row (run, path, rank, step, value, timestamp),
plus each run's single values (rows with no rank, step or timestamp), as CSV, JSON or
Parquet. ``tracker export`` is the command; this is the work. ``docs/export.md``
describes the formats.

The writers stream: a run's series are read one at a time and written in chunks of
``CHUNK_POINTS`` points, so memory holds one series' numpy arrays and one chunk of text,
never a Python object per point of the export. One run or several, the format is the
same: a script reads one run's export the way it reads ten.

Example::

    runs = [tracker.read_run("k3v9q2m1xa"), tracker.read_run("p7wq0s1c2d")]
    with open("runs.csv", "w", newline="", encoding="utf-8") as f:
        summary = write_csv(f, runs)
    write_parquet("runs.parquet", runs)
    write_json(sys.stdout, tracker.read_run("k3v9q2m1xa"))  # one run: no list needed
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, TextIO

import numpy as np

from .errors import TrackerError
from .reader import RunReader, SeriesValues

FORMATS = ("csv", "parquet", "json")
CSV_COLUMNS = ("run", "path", "rank", "step", "value", "timestamp")
PARQUET_COLUMNS = ("run", "path", "rank", "step", "value", "text", "timestamp")
# Points turned into text (or an Arrow batch) at a time: big enough that the per-chunk
# overhead vanishes, small enough that a chunk's Python objects stay a few MB.
CHUNK_POINTS = 8192
# Parquet row group size, in rows: pyarrow's own default, the size readers scan well.
ROW_GROUP_ROWS = 1 << 20
# Text is handed to the output once this much is pending. An export smaller than this
# is written in one go at the end, so one that fails (a damaged chunk) writes nothing.
_FLUSH_CHARS = 1 << 20

Progress = Callable[[str, int, int], None]
"""``progress(run_id, points_written, points_total)``: called as each run starts and
after each chunk. The total is the run's stored point count until each series is read,
then its exact count (a fork's inherited points join it as they are read)."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: the run ids, in order, and the counts of all of them."""

    runs: list[str]
    points: int
    series: int
    fields: int


def write_csv(
    out: TextIO, runs: RunReader | Iterable[RunReader], progress: Progress | None = None
) -> ExportSummary:
    """CSV with the header ``run,path,rank,step,value,timestamp``: each run's single
    values first (rank, step and timestamp empty), then its series points. Numbers are
    written as ``repr`` writes them (they read back exactly); NaN and infinities as
    ``nan``, ``inf``, ``-inf``. Open ``out`` with ``newline=""``."""
    sink = _Sink(out)
    counts = _Counts()
    sink.add(",".join(CSV_COLUMNS) + "\n")
    for run in _runs(runs):
        fields = run.fields()
        counts.add_run(run.id, fields)
        sink.add(_csv_rows((run.id, path, "", "", text(v), "") for path, v in fields.items()))
        for path, rank, values in _series(run, fields, counts, progress):
            prefix = _csv_rows([(run.id, path, rank)])[:-1] + ","
            for steps, vals, ts in _chunks(values):
                if vals.dtype == object:
                    rows = zip(steps.tolist(), vals, map(repr, ts.tolist()), strict=True)
                    sink.add(_csv_rows((run.id, path, rank, *row) for row in rows))
                else:
                    rows = zip(steps.tolist(), vals.tolist(), ts.tolist(), strict=True)
                    sink.add("".join([f"{prefix}{s},{v!r},{t!r}\n" for s, v, t in rows]))
                counts.wrote(run.id, len(steps), progress)
    sink.flush()
    return counts.summary()


def write_json(
    out: TextIO, runs: RunReader | Iterable[RunReader], progress: Progress | None = None
) -> ExportSummary:
    """One strict JSON document: ``{"runs": [{"run": {...}, "fields": {...}, "series":
    [{"path", "rank", "step", "value", "timestamp"}, ...]}, ...]}``, one point per line.
    NaN and infinities are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    sink = _Sink(out)
    counts = _Counts()
    sink.add('{"runs": [')
    for n, run in enumerate(_runs(runs)):
        fields = run.fields()
        counts.add_run(run.id, fields)
        head = {"run": _meta(run), "fields": {p: json_safe(v) for p, v in fields.items()}}
        sink.add(("" if n == 0 else ",") + "\n" + _dumps(head)[:-1] + ', "series": [')
        sep = "\n"
        for path, rank, values in _series(run, fields, counts, progress):
            prefix = f'{{"path": {_dumps(path)}, "rank": {rank}, "step": '
            for steps, vals, ts in _chunks(values):
                if vals.dtype == object:
                    texts = [_dumps(v) for v in vals]
                else:
                    texts = _json_numbers(vals)
                stamps = _json_numbers(ts)
                sink.add(
                    sep
                    + ",\n".join(
                        [
                            f'{prefix}{s}, "value": {v}, "timestamp": {t}}}'
                            for s, v, t in zip(steps.tolist(), texts, stamps, strict=True)
                        ]
                    )
                )
                sep = ",\n"
                counts.wrote(run.id, len(steps), progress)
        sink.add("]}")
    sink.add("\n]}\n")
    sink.flush()
    return counts.summary()


def write_parquet(
    out: str | os.PathLike[str] | BinaryIO,
    runs: RunReader | Iterable[RunReader],
    progress: Progress | None = None,
) -> ExportSummary:
    """One table, written row group by row group (``ROW_GROUP_ROWS`` rows): columns
    ``run``, ``path``, ``rank``, ``step``, ``value`` (float64: numbers), ``text`` (str
    values and the text of non-number single values), ``timestamp``; the runs' metadata
    as a JSON list under the schema key ``tracker.runs``. ``out`` is a path or a binary
    file (a pipe will do). Needs pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TrackerError(
            "parquet export needs pyarrow, which is not installed: pip install pyarrow"
        ) from None
    readers = list(_runs(runs))
    schema = _parquet_schema(pa)
    runs_meta = json.dumps([_meta(r) for r in readers], default=str).encode()
    schema = schema.with_metadata({**(schema.metadata or {}), b"tracker.runs": runs_meta})
    counts = _Counts()
    pending: list[Any] = []
    held = 0

    def add(batch: Any) -> None:
        nonlocal held
        pending.append(batch)
        held += batch.num_rows
        if held >= ROW_GROUP_ROWS:
            flush()

    def flush() -> None:
        nonlocal held
        if pending:
            table = pa.Table.from_batches(pending, schema=schema)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            pending.clear()
            held = 0

    own = isinstance(out, str | os.PathLike)
    gate = _Gate(open(out, "wb") if isinstance(out, str | os.PathLike) else out)
    writer = pq.ParquetWriter(gate, schema)
    try:
        for run in readers:
            fields = run.fields()
            counts.add_run(run.id, fields)
            if fields:
                # Numbers go to `value`, everything else to `text`: one type per column.
                singles = list(fields.values())
                n = len(fields)
                add(
                    _batch(
                        pa,
                        schema,
                        run.id,
                        list(fields),
                        pa.nulls(n, pa.int64()),
                        pa.nulls(n, pa.int64()),
                        [float(v) if _is_number(v) else math.nan for v in singles],
                        [None if _is_number(v) else text(v) for v in singles],
                        np.full(n, math.nan),
                    )
                )
            for path, rank, values in _series(run, fields, counts, progress):
                for steps, vals, ts in _chunks(values):
                    n = len(steps)
                    is_text = vals.dtype == object
                    add(
                        _batch(
                            pa,
                            schema,
                            run.id,
                            pa.repeat(pa.scalar(path, pa.string()), n),
                            pa.repeat(pa.scalar(rank, pa.int64()), n),
                            steps,
                            np.full(n, math.nan) if is_text else vals,
                            pa.array(vals, pa.string()) if is_text else pa.nulls(n, pa.string()),
                            ts,
                        )
                    )
                    counts.wrote(run.id, n, progress)
        flush()
    except BaseException:
        # The footer is what makes a Parquet file read as whole: one cut short by an
        # error must not get it, or a reader would take part of the runs for all.
        gate.shut = True
        raise
    finally:
        writer.close()
        if own:
            gate.close()
    return counts.summary()


WRITERS: dict[str, Callable[..., ExportSummary]] = {
    "csv": write_csv,
    "json": write_json,
    "parquet": write_parquet,
}


# -- values as text -------------------------------------------------------------------------


def text(value: Any) -> str:
    """A single value as text for csv and parquet."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return repr(value)


def json_safe(value: Any) -> Any:
    """A value for strict JSON: no NaN or infinity (the strings float() reads back)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, list):  # a config list may hold NaN too
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, ensure_ascii=False)


def _json_numbers(values: np.ndarray) -> list[str]:
    """Floats as JSON text: ``repr`` (which JSON reads back exactly) where finite."""
    if bool(np.isfinite(values).all()):
        return list(map(repr, values.tolist()))
    return [repr(v) if math.isfinite(v) else f'"{json_safe(v)}"' for v in values.tolist()]


def _csv_rows(rows: Iterable[Iterable[Any]]) -> str:
    # csv quotes what needs it (commas, quotes, newlines in paths and str values).
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- reading ----------------------------------------------------------------------------------


def _runs(runs: RunReader | Iterable[RunReader]) -> Iterator[RunReader]:
    # A RunReader has __getitem__ for paths: iterating it would call run[0]. One run is
    # taken as a list of one.
    if isinstance(runs, RunReader):
        yield runs
    else:
        yield from runs


def _meta(run: RunReader) -> dict[str, Any]:
    return {
        "id": run.id,
        "project": run.project,
        "name": run.name,
        "status": run.status,
        "tags": run.tags,
        "parent": None if run.parent is None else {"id": run.parent[0], "step": run.parent[1]},
        "created_at": run.created_at,
        "ended_at": run.ended_at,
    }


def _series(
    run: RunReader, fields: dict[str, Any], counts: _Counts, progress: Progress | None
) -> Iterator[tuple[str, int, SeriesValues]]:
    """Every series of every rank, inherited ones included, read one at a time."""
    # The stored counts give the progress total before any series is read; each is
    # replaced by the series' true length (rewinds, fork limits) once it is.
    stored = {
        (s["path"], s["rank"]): s["count"] for s in run.series_summary() if s["path"] not in fields
    }
    counts.expect(run.id, sum(stored.values()), progress)
    for path, rank in run.series_keys():
        if path in fields:
            continue
        try:
            values = run[path].fetch_values(rank=rank)
        except KeyError:
            values = None
        n = 0 if values is None else len(values)
        counts.expect(run.id, n - stored.get((path, rank), 0), progress)
        if values is not None and n:
            counts.series += 1
            yield path, rank, values


def _chunks(values: SeriesValues) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(steps, values, timestamps) of a series, ``CHUNK_POINTS`` at a time (views)."""
    for start in range(0, len(values), CHUNK_POINTS):
        end = start + CHUNK_POINTS
        yield values.step[start:end], values.value[start:end], values.timestamp[start:end]


class _Counts:
    """Points written and expected per run, for the summary and for ``progress``."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.points = self.series = self.fields = 0
        self._written = 0
        self._total = 0

    def add_run(self, run_id: str, fields: dict[str, Any]) -> None:
        self.runs.append(run_id)
        self.fields += len(fields)
        self._written = self._total = 0

    def expect(self, run_id: str, more: int, progress: Progress | None) -> None:
        self._total += more
        if progress is not None:
            progress(run_id, self._written, self._total)

    def wrote(self, run_id: str, n: int, progress: Progress | None) -> None:
        self._written += n
        self.points += n
        if progress is not None:
            progress(run_id, self._written, self._total)

    def summary(self) -> ExportSummary:
        return ExportSummary(list(self.runs), self.points, self.series, self.fields)


class _Gate:
    """A binary output that can be shut: once shut, writes go nowhere."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.shut = False

    @property
    def closed(self) -> bool:
        return self._out.closed

    def write(self, data: bytes) -> int:
        return len(data) if self.shut else self._out.write(data)

    def flush(self) -> None:
        if not self.shut:
            self._out.flush()

    def close(self) -> None:
        self._out.close()


class _Sink:
    """Text pending for ``out``, handed over ``_FLUSH_CHARS`` at a time."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._parts: list[str] = []
        self._size = 0

    def add(self, piece: str) -> None:
        self._parts.append(piece)
        self._size += len(piece)
        if self._size >= _FLUSH_CHARS:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            # One piece (a chunk's text) is written as it is: joining would copy it.
            parts = self._parts
            self._out.write(parts[0] if len(parts) == 1 else "".join(parts))
            self._parts = []
            self._size = 0


# -- parquet ----------------------------------------------------------------------------------


def _parquet_schema(pa: Any) -> Any:
    schema = pa.schema(
        [
            ("run", pa.string()),
            ("path", pa.string()),
            ("rank", pa.int64()),
            ("step", pa.int64()),
            ("value", pa.float64()),
            ("text", pa.string()),
            ("timestamp", pa.float64()),
        ]
    )
    try:
        import pandas as pd
    except ImportError:
        return schema
    # pandas' own schema metadata, so that pd.read_parquet gives rank and step as
    # nullable Int64 (a single value's are null), not float64 with NaN.
    empty = pd.DataFrame(
        {
            "run": pd.Series([], dtype=object),
            "path": pd.Series([], dtype=object),
            "rank": pd.array([], dtype="Int64"),
            "step": pd.array([], dtype="Int64"),
            "value": pd.Series([], dtype="float64"),
            "text": pd.Series([], dtype=object),
            "timestamp": pd.Series([], dtype="float64"),
        }
    )
    return pa.Table.from_pandas(empty, schema=schema, preserve_index=False).schema


def _batch(
    pa: Any,
    schema: Any,
    run_id: str,
    path: Any,
    rank: Any,
    step: Any,
    value: Any,
    text_: Any,
    timestamp: Any,
) -> Any:
    n = len(step)
    run = pa.repeat(pa.scalar(run_id, pa.string()), n)
    columns = (run, path, rank, step, value, text_, timestamp)
    arrays = [
        c if isinstance(c, pa.Array) else pa.array(c, type=f.type)
        for c, f in zip(columns, schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
