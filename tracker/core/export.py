"""Exporting a run: every series point as a row (path, rank, step, value, timestamp),
plus the run's single values (rows with no rank, step or timestamp), as CSV, JSON or
Parquet. ``tracker export`` is the command; this is the work.

Example::

    run = tracker.read_run("k3v9q2m1xa")
    with open("run.csv", "w", newline="") as f:
        write_csv(f, collect(run))
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .errors import TrackerError
from .reader import RunReader, SeriesValues

FORMATS = ("csv", "parquet", "json")


@dataclass(frozen=True)
class RunExport:
    """What an export holds: the run's metadata, its single values and its series."""

    meta: dict[str, Any]
    fields: dict[str, Any]
    series: list[tuple[str, int, SeriesValues]]

    @property
    def points(self) -> int:
        return sum(len(values) for _, _, values in self.series)


def collect(run: RunReader) -> RunExport:
    """Read everything an export holds: every series of every rank, inherited ones included."""
    status = run.status
    meta = {
        "id": run.id,
        "project": run.project,
        "name": run.name,
        "status": status,
        "tags": run.tags,
        "parent": None if run.parent is None else {"id": run.parent[0], "step": run.parent[1]},
        "created_at": run.created_at,
        "ended_at": run.ended_at,
    }
    fields = run.fields()
    return RunExport(meta, fields, list(_series(run, fields)))


def _series(run: RunReader, fields: dict[str, Any]) -> Iterator[tuple[str, int, SeriesValues]]:
    for path, rank in run.series_keys():
        if path in fields:
            continue
        try:
            values = run[path].fetch_values(rank=rank)
        except KeyError:
            continue
        if len(values):
            yield path, rank, values


def text(value: Any) -> str:
    """A field value as text for csv and parquet."""
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
    return value


def write_csv(out: TextIO, export: RunExport) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("path", "rank", "step", "value", "timestamp"))
    for path, value in export.fields.items():
        writer.writerow((path, "", "", text(value), ""))
    for path, rank, values in export.series:
        is_text = values.value.dtype == object
        for step, value, ts in zip(
            values.step.tolist(), values.value.tolist(), values.timestamp.tolist(), strict=True
        ):
            writer.writerow((path, rank, step, value if is_text else repr(value), repr(ts)))


def write_json(out: TextIO, export: RunExport) -> None:
    rows = []
    for path, rank, values in export.series:
        for step, value, ts in zip(
            values.step.tolist(), values.value.tolist(), values.timestamp.tolist(), strict=True
        ):
            rows.append(
                {
                    "path": path,
                    "rank": rank,
                    "step": step,
                    "value": json_safe(value),
                    "timestamp": ts,
                }
            )
    doc = {
        "run": export.meta,
        "fields": {p: json_safe(v) for p, v in export.fields.items()},
        "series": rows,
    }
    json.dump(doc, out, allow_nan=False, ensure_ascii=False)
    out.write("\n")


def write_parquet(output: Path, export: RunExport) -> None:
    """One table: numbers in ``value`` (float64), everything else in ``text``, the run's
    metadata as JSON under the schema key ``tracker.run``. Needs pandas and pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TrackerError(
            "parquet export needs pyarrow, which is not installed: pip install pyarrow"
        ) from None
    try:
        import pandas as pd
    except ImportError:
        raise TrackerError(
            "parquet export needs pandas, which is not installed: pip install pandas"
        ) from None
    import numpy as np

    fields = export.fields
    # Numbers go to `value` (float64), everything else to `text`, so each column has one type.
    frames = [
        pd.DataFrame(
            {
                "path": list(fields),
                "rank": pd.array([None] * len(fields), dtype="Int64"),
                "step": pd.array([None] * len(fields), dtype="Int64"),
                "value": [
                    float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan
                    for v in fields.values()
                ],
                "text": [
                    None if isinstance(v, int | float) and not isinstance(v, bool) else text(v)
                    for v in fields.values()
                ],
                "timestamp": [math.nan] * len(fields),
            }
        )
    ]
    for path, rank, values in export.series:
        n = len(values)
        is_text = values.value.dtype == object
        frames.append(
            pd.DataFrame(
                {
                    "path": [path] * n,
                    "rank": pd.array(np.full(n, rank), dtype="Int64"),
                    "step": pd.array(values.step, dtype="Int64"),
                    "value": np.full(n, math.nan) if is_text else values.value,
                    "text": list(values.value) if is_text else [None] * n,
                    "timestamp": values.timestamp,
                }
            )
        )
    df = pd.concat(frames, ignore_index=True)
    df["text"] = df["text"].astype(object)
    table = pa.Table.from_pandas(df, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[b"tracker.run"] = json.dumps(export.meta, default=str).encode()
    pq.write_table(table.replace_schema_metadata(metadata), output)
