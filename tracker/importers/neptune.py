"""``tracker import neptune``: runs from what the open-source Neptune exporter wrote.

**The export.** One long table per run, Snappy Parquet, in
``<data>/<sanitized project>/<sanitized run id>_part_<n>.parquet``: a new part every
~50 MB, ``part_0`` renamed into place last, so a run without ``part_0`` was not
finished (``.parquet.tmp`` parts are never read). One row per attribute, or per
attribute and step for a series, in the columns of ``SCHEMA``. Downloaded files lie
under a separate files root (``file_value.path`` is relative to it); the exporter lists
what it could not export in ``neptune_exporter_errors.jsonl``.

**The mapping** (docs/neptune.md has it as a table). Every attribute keeps its path and
kind: int, float, bool, string and datetime become fields; ``sys/tags`` the run's tags,
any other string_set a list field (sorted); float and string series become series with
their original timestamps; a histogram series a str series at its path whose points are
JSON objects ``{"type", "edges", "values"}``; a file (file_set, artifact) a file
reference to the downloaded file (size and SHA-256 computed; a missing file is kept as
a reference with ``"missing": true`` and reported); a file series a str series of the
JSON file references. ``sys/name`` is the run's name, ``sys/creation_time`` its
creation time, the Neptune project its project; ``sys/failed`` closes it as failed.
The Neptune run id is tracker's run id where it is a valid one, else
``<cleaned id>-<10 hex digits of its SHA-256>``; either way ``import/neptune/run_id``
and ``import/neptune/project`` record the originals.

**Steps** are decimal(18, 6). A run whose steps are all integral keeps them; a run with
fractional steps has them multiplied by ``10**k``, k the fewest decimals that hold every
step exactly (at most 6), the same k over a whole fork family, recorded as
``import/neptune/step_scale`` (``10**k``): the Neptune step is ``step / step_scale``.

**Forks** (``sys/forking/parent``, ``sys/forking/step``) become tracker forks: the
parent is imported first, the child opened with ``parent_id`` and the scaled fork step,
so it reads its parent's points up to the fork step without copying them.

**Idempotent and resumable.** Each run is applied in synthetic positions of one segment
(``00000000000000000000-0.jnl``): its create op, fields and tags at offset 1, each
Parquet record batch of its series at ``1 + rows read so far`` and its close at
``2 + rows``. The same export gives the same positions, so a rerun (or the run after an
interruption) skips every batch the store holds, without even reading it into ops.

**Fast and bounded.** Series points go from Arrow columns to "cols" ops with numpy (no
Python per float point); the export is read one record batch at a time
(``ParquetFile.iter_batches``), two passes per run: the first reads its single values,
step decimals and fork, the second its series.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from ..core import ops
from ..core.errors import TrackerError, one_line
from ..core.files import describe
from ..core.session import check_run_id
from ..core.stores.base import Store
from ..core.values import decode_field, field_value

FIELD_TYPES = frozenset(
    ("float", "int", "string", "bool", "datetime", "string_set", "file", "file_set", "artifact")
)
SERIES_TYPES = ("float_series", "string_series", "histogram_series", "file_series")
ERRORS_FILE = "neptune_exporter_errors.jsonl"
SEGMENT = f"{0:020d}-0.jnl"
# Rows per record batch read (the unit of memory, progress and resumption).
BATCH_ROWS = 131_072
MAX_DECIMALS = 6
_PART = re.compile(r"^(?P<run>.+)_part_(?P<n>\d+)\.parquet$")
_TMP = re.compile(r"^(?P<run>.+)_part_(?P<n>\d+)\.parquet\.tmp$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

ProgressFn = Callable[[int], None]


def schema() -> Any:
    """The exporter's Parquet schema (``neptune_exporter.model.SCHEMA``)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("project_id", pa.string()),
            ("run_id", pa.string()),
            ("attribute_path", pa.string()),
            ("attribute_type", pa.string()),
            ("step", pa.decimal128(18, 6)),
            ("timestamp", pa.timestamp("ms", tz="UTC")),
            ("int_value", pa.int64()),
            ("float_value", pa.float64()),
            ("string_value", pa.string()),
            ("bool_value", pa.bool_()),
            ("datetime_value", pa.timestamp("ms", tz="UTC")),
            ("string_set_value", pa.list_(pa.string())),
            ("file_value", pa.struct([("path", pa.string())])),
            (
                "histogram_value",
                pa.struct(
                    [
                        ("type", pa.string()),
                        ("edges", pa.list_(pa.float64())),
                        ("values", pa.list_(pa.float64())),
                    ]
                ),
            ),
        ]
    )


def tracker_run_id(neptune_id: str) -> str:
    """Tracker's run id for a Neptune run id: itself where valid, else a cleaned form
    with 10 hex digits of the original's SHA-256 (the same every time).

    >>> tracker_run_id("PROJ-12"), tracker_run_id("my run/1")
    ('PROJ-12', 'my-run-1-...')
    """
    try:
        return check_run_id(neptune_id)
    except ValueError:
        pass
    digest = hashlib.sha256(neptune_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    base = _UNSAFE.sub("-", neptune_id).strip("-._")[:100] or "neptune"
    return f"{base}-{digest}"


# -- what the export holds ----------------------------------------------------------------


@dataclass
class ExportedRun:
    """One run of the export, as its files and its first pass found it."""

    project_dir: Path
    prefix: str  # the sanitized run id its files start with
    parts: list[Path]
    complete: bool
    project: str = ""
    neptune_id: str = ""
    run_id: str = ""
    name: str | None = None
    created: float | None = None
    ended: float | None = None
    failed: bool = False
    tags: list[str] = field(default_factory=list)
    field_ops: list[Any] = field(default_factory=list)
    parent: str | None = None  # the parent's Neptune id
    fork_step: Decimal | None = None
    decimals: int = 0
    rows: int = 0
    points: int = 0  # series rows
    files: int = 0
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    first_ts: float | None = None
    last_ts: float | None = None


@dataclass
class RunImport:
    """What importing one run did, or why it did not."""

    run_id: str
    neptune_id: str
    project: str
    status: str  # "imported", "already imported", "skipped", "failed"
    points: int = 0  # points stored by this import (0 when all were there)
    files: int = 0
    missing_files: list[str] = field(default_factory=list)
    reason: str | None = None
    parent_id: str | None = None


@dataclass
class ImportSummary:
    runs: list[RunImport]
    export_errors: list[str]  # the exporter's own failures (its errors file)
    problems: list[str]  # what this import could not do

    @property
    def points(self) -> int:
        return sum(r.points for r in self.runs)

    @property
    def files(self) -> int:
        return sum(r.files for r in self.runs)


def find_runs(export_dir: Path) -> list[ExportedRun]:
    """The runs of an export (its data directory, or one project's directory), sorted
    by project directory and run prefix; ``complete`` False where part_0 is missing."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise FileNotFoundError(f"{export_dir}: no such directory (the exporter's data path)")
    dirs = [export_dir] + sorted(p for p in export_dir.iterdir() if p.is_dir())
    out: list[ExportedRun] = []
    for d in dirs:
        parts: dict[str, dict[int, Path]] = {}
        unfinished: set[str] = set()
        for f in d.iterdir():
            m = _PART.match(f.name)
            if m and f.is_file():
                parts.setdefault(m["run"], {})[int(m["n"])] = f
                continue
            m = _TMP.match(f.name)
            if m:
                unfinished.add(m["run"])
        for prefix in sorted(parts.keys() | unfinished):
            found = parts.get(prefix, {})
            ordered = [found[n] for n in sorted(found)]
            complete = 0 in found and prefix not in unfinished
            out.append(ExportedRun(d, prefix, ordered, complete))
    return out


def read_export_errors(export_dir: Path) -> list[str]:
    """The exporter's failures, one line each, from ``neptune_exporter_errors.jsonl``
    in the export directory or beside it."""
    out: list[str] = []
    for where in (Path(export_dir), Path(export_dir).parent):
        path = where / ERRORS_FILE
        if not path.is_file():
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    out.append(f"{path.name}: unreadable line {line[:80]!r}")
                    continue
                if not isinstance(rec, dict):
                    continue
                what = rec.get("attribute_path") or "the whole run"
                kind = rec.get("attribute_type")
                if kind:
                    what += f" ({kind})"
                out.append(
                    f"{rec.get('project_id')}/{rec.get('run_id')}: {what}: "
                    f"{rec.get('exception') or 'failed'}"
                )
        break
    return out


def default_files_dir(export_dir: Path) -> Path:
    """Where the exporter put files by default: ``files`` beside the data directory."""
    export_dir = Path(export_dir)
    for candidate in (export_dir.parent / "files", export_dir / "files"):
        if candidate.is_dir():
            return candidate
    return export_dir.parent / "files"


# -- Arrow columns as numpy -------------------------------------------------------------


def _micro_steps(arr: Any) -> np.ndarray:
    """A step column as int64 millionths (nulls as 0)."""
    import pyarrow as pa

    if pa.types.is_decimal(arr.type):
        if arr.type != pa.decimal128(18, 6):
            arr = arr.cast(pa.decimal128(18, 6))
        n = len(arr)
        if n == 0:
            return np.empty(0, np.int64)
        buf = arr.buffers()[1]
        # decimal128 is 16 bytes little-endian; |value| < 10**18 fits the low word.
        words = np.frombuffer(buf, dtype=np.int64, count=2 * (arr.offset + n))
        out = words[2 * arr.offset :: 2].copy()
    else:
        vals = arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        out = np.round(vals * 1e6).astype(np.int64)
    if arr.null_count:
        out[~np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = 0
    return out


def _decimals(micro: np.ndarray) -> int:
    """The fewest decimals that hold every step of ``micro`` (millionths) exactly."""
    if len(micro) == 0:
        return 0
    for k in range(MAX_DECIMALS):
        if not (micro % 10 ** (MAX_DECIMALS - k)).any():
            return k
    return MAX_DECIMALS


def _seconds(arr: Any) -> np.ndarray:
    """A timestamp[ms] column as float64 seconds (nulls as NaN)."""
    import pyarrow as pa

    ms = arr.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if arr.null_count:
        out = ms.astype(np.float64) / 1000.0
        out[~np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = np.nan
        return out
    return ms.astype(np.float64) / 1000.0


def _iter_batches(run: ExportedRun, columns: list[str] | None = None) -> Iterator[Any]:
    import pyarrow.parquet as pq

    for part in run.parts:
        pf = pq.ParquetFile(part)
        yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=columns)


# -- the first pass: single values, step decimals, fork ------------------------------------


def scan_run(run: ExportedRun, files_dir: Path) -> None:
    """Read the run's single values, tags, name, fork and step decimals (first pass)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    series_types = pa.array(SERIES_TYPES)
    for batch in _iter_batches(run):
        run.rows += batch.num_rows
        if batch.num_rows == 0:
            continue
        if not run.neptune_id:
            run.project = str(batch.column("project_id")[0].as_py() or "")
            run.neptune_id = str(batch.column("run_id")[0].as_py() or "")
        ts = _seconds(batch.column("timestamp"))
        if np.isfinite(ts).any():
            lo, hi = float(np.nanmin(ts)), float(np.nanmax(ts))
            run.first_ts = lo if run.first_ts is None else min(run.first_ts, lo)
            run.last_ts = hi if run.last_ts is None else max(run.last_ts, hi)
        is_series = pc.fill_null(pc.is_in(batch.column("attribute_type"), series_types), False)
        series = batch.filter(is_series)
        if series.num_rows:
            valid = series.column("step").is_valid()
            steps = series.column("step").filter(valid)
            run.points += len(steps)
            dropped = series.num_rows - len(steps)
            if dropped:
                run.problems.append(f"{dropped} series point(s) without a step left out")
            run.decimals = max(run.decimals, _decimals(_micro_steps(steps)))
        single = batch.filter(pc.invert(is_series))
        if single.num_rows:
            for row in single.to_pylist():
                _single_value(run, row, files_dir)


def _single_value(run: ExportedRun, row: dict[str, Any], files_dir: Path) -> None:
    path, kind = row["attribute_path"], row["attribute_type"]
    stamp = row["timestamp"]
    ts = stamp.timestamp() if stamp is not None else (run.created or 0.0)
    if kind not in FIELD_TYPES:
        run.problems.append(f"attribute {path!r}: type {kind!r} is not imported")
        return
    if kind in ("file", "file_set", "artifact"):
        rel = (row.get("file_value") or {}).get("path")
        if rel:
            info = file_info(files_dir, rel, run)
            run.field_ops.append(ops.file_ref(path, info))
            return
        if row.get("string_value") is not None:  # an artifact's hash, without files
            run.field_ops.append(ops.set_value(path, "str", row["string_value"], ts))
        return
    if kind == "string_set":
        values = sorted(row.get("string_set_value") or [])
        if path == "sys/tags":
            run.tags = values
            return
        value: Any = values
    elif kind == "int":
        value = row["int_value"]
    elif kind == "float":
        value = row["float_value"]
        value = math.nan if value is None else value
    elif kind == "bool":
        value = row["bool_value"]
    elif kind == "datetime":
        value = row["datetime_value"]
    else:
        value = row["string_value"]
    if path == "sys/name" and isinstance(value, str):
        run.name = value
    elif path == "sys/creation_time" and value is not None:
        run.created = value.timestamp()
    elif path == "sys/modification_time" and value is not None:
        run.ended = value.timestamp()
    elif path == "sys/failed" and value:
        run.failed = True
    elif path == "sys/forking/parent" and isinstance(value, str) and value:
        run.parent = value
    elif path == "sys/forking/step" and value is not None:
        run.fork_step = Decimal(str(value))
    try:
        vkind, stored = field_value(path, value)
    except (TypeError, ValueError) as exc:
        run.problems.append(f"attribute {path!r}: {one_line(exc)}")
        return
    run.field_ops.append(ops.set_value(path, vkind, stored, ts))


def file_info(files_dir: Path, rel: str, run: ExportedRun) -> dict[str, Any]:
    """A file reference (``core.files.describe``) to a downloaded file; a missing one as
    ``{"uri", "size": None, "hash": None, "files": None, "missing": True}``."""
    path = Path(rel)
    if not path.is_absolute():
        path = files_dir / rel
    try:
        info = describe(path)
    except (FileNotFoundError, OSError):
        run.missing.append(str(path))
        return {
            "uri": path.absolute().as_uri(),
            "size": None,
            "hash": None,
            "files": None,
            "missing": True,
        }
    run.files += 1
    return info


# -- the second pass: series as ops ---------------------------------------------------------


def _split_by_path(paths: Any) -> list[tuple[str, np.ndarray]]:
    """(path, row indexes in order) of each path of a string column."""
    encoded = paths.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    names = encoded.dictionary.to_pylist()
    if len(names) == 1:
        return [(names[0], np.arange(len(codes)))]
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_codes)) + 1))
    ends = np.concatenate((starts[1:], [len(order)]))
    return [(names[int(sorted_codes[s])], order[s:e]) for s, e in zip(starts, ends, strict=True)]


def series_groups(
    batch: Any, divisor: int, files_dir: Path, run: ExportedRun
) -> tuple[list[Any], int]:
    """The "cols" and "rows" groups of one record batch's series points, and their count."""
    import pyarrow.compute as pc

    groups: list[Any] = []
    total = 0
    types = batch.column("attribute_type")
    for kind in SERIES_TYPES:
        sub = batch.filter(pc.fill_null(pc.equal(types, kind), False))
        if sub.num_rows == 0:
            continue
        step_col = sub.column("step")
        if step_col.null_count:
            sub = sub.filter(step_col.is_valid())
            step_col = sub.column("step")
        if sub.num_rows == 0:
            continue
        steps = _micro_steps(step_col) // divisor
        ts = _seconds(sub.column("timestamp"))
        if kind == "float_series":
            vals = sub.column("float_value").fill_null(math.nan).to_numpy(zero_copy_only=False)
            vals = np.asarray(vals, dtype=np.float64)
            for path, idx in _split_by_path(sub.column("attribute_path")):
                groups.append(
                    (
                        ops.COLS,
                        [path],
                        steps[idx].tobytes(),
                        ts[idx].tobytes(),
                        vals[idx].tobytes(),
                        None,
                    )
                )
                total += len(idx)
            continue
        if kind == "string_series":
            texts = sub.column("string_value").to_pylist()
        elif kind == "histogram_series":
            texts = [
                None if h is None else json.dumps(h, sort_keys=True)
                for h in sub.column("histogram_value").to_pylist()
            ]
        else:  # file_series
            texts = []
            for fv in sub.column("file_value").to_pylist():
                rel = (fv or {}).get("path")
                texts.append(
                    None if not rel else json.dumps(file_info(files_dir, rel, run), sort_keys=True)
                )
        for path, idx in _split_by_path(sub.column("attribute_path")):
            keep = [i for i in idx.tolist() if texts[i] is not None]
            if not keep:
                continue
            groups.append(
                (
                    ops.ROWS,
                    [path],
                    steps[keep].tolist(),
                    ts[keep].tolist(),
                    [[texts[i]] for i in keep],
                    None,
                )
            )
            total += len(keep)
    return groups, total


# -- planning: ids, forks, step scales ----------------------------------------------------------


def plan_import(
    export_dir: Path,
    files_dir: Path | None = None,
    *,
    project: str | None = None,
    include_incomplete: bool = False,
    on_scan: Callable[[int, int], None] | None = None,
) -> tuple[list[ExportedRun], list[RunImport], list[str]]:
    """Scan the export: the runs to import (fork parents first), the runs skipped, and
    problems. ``project`` keeps only runs of that Neptune project (its id or its
    directory's name); ``on_scan(runs read, runs found)`` is called as it goes."""
    export_dir = Path(export_dir)
    files = Path(files_dir) if files_dir is not None else default_files_dir(export_dir)
    skipped: list[RunImport] = []
    problems: list[str] = []
    runs: list[ExportedRun] = []
    found_runs = find_runs(export_dir)
    for index, run in enumerate(found_runs):
        if on_scan is not None:
            on_scan(index, len(found_runs))
        if project is not None and project != run.project_dir.name:
            found = _peek_project(run)
            if found is not None and found != project:
                continue  # another project's run: not even read
        if not run.complete and not include_incomplete:
            skipped.append(
                RunImport(
                    "",
                    run.prefix,
                    run.project_dir.name,
                    "skipped",
                    reason="incomplete export (no part_0): rerun the exporter for it, "
                    "or pass --include-incomplete",
                )
            )
            continue
        if not run.parts:
            skipped.append(
                RunImport(
                    "", run.prefix, run.project_dir.name, "skipped", reason="no finished part"
                )
            )
            continue
        try:
            scan_run(run, files)
        except Exception as exc:  # noqa: BLE001 - report this run, go on with the others
            problems.append(f"{run.project_dir.name}/{run.prefix}: cannot read: {one_line(exc)}")
            continue
        if project is not None and project not in (run.project, run.project_dir.name):
            continue
        if not run.neptune_id:
            continue  # empty parts: nothing to import
        run.run_id = tracker_run_id(run.neptune_id)
        if not run.complete:
            run.problems.append("incomplete export (no part_0): imported what there is")
        runs.append(run)
    if on_scan is not None:
        on_scan(len(found_runs), len(found_runs))
    return _order(runs, problems), skipped, problems


def _peek_project(run: ExportedRun) -> str | None:
    """The Neptune project of a run, from the first row of its first part (None if
    that cannot be read: the run is then read whole, and its project checked after)."""
    import pyarrow.parquet as pq

    for part in run.parts:
        try:
            pf = pq.ParquetFile(part)
            if pf.metadata.num_row_groups == 0:
                continue
            column = pf.read_row_group(0, columns=["project_id"]).column(0)
        except Exception:  # noqa: BLE001 - the full read reports what is wrong
            return None
        if len(column):
            value = column[0].as_py()
            return None if value is None else str(value)
    return None


def _order(runs: list[ExportedRun], problems: list[str]) -> list[ExportedRun]:
    """Parents before children; one step scale per fork family; duplicates reported."""
    by_key: dict[tuple[str, str], ExportedRun] = {}
    unique: list[ExportedRun] = []
    ids: dict[str, ExportedRun] = {}
    for run in runs:
        key = (run.project, run.neptune_id)
        if key in by_key:
            problems.append(
                f"{run.project}/{run.neptune_id}: exported twice ({run.prefix}); the first kept"
            )
            continue
        if run.run_id in ids:
            other = ids[run.run_id]
            problems.append(
                f"{run.project}/{run.neptune_id}: its tracker id {run.run_id} is taken by "
                f"{other.project}/{other.neptune_id} in this export: not imported"
            )
            continue
        by_key[key] = run
        ids[run.run_id] = run
        unique.append(run)
    # Fork families: every run joined to its parent; one scale for all.
    root: dict[int, int] = {i: i for i in range(len(unique))}

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    index = {id(r): i for i, r in enumerate(unique)}
    for i, run in enumerate(unique):
        parent = by_key.get((run.project, run.parent)) if run.parent else None
        if parent is not None:
            root[find(i)] = find(index[id(parent)])
    need: dict[int, int] = {}
    for i, run in enumerate(unique):
        k = run.decimals
        if run.fork_step is not None:
            exp = run.fork_step.normalize().as_tuple().exponent
            k = max(k, min(MAX_DECIMALS, -exp if isinstance(exp, int) and exp < 0 else 0))
        need[find(i)] = max(need.get(find(i), 0), k)
    for i, run in enumerate(unique):
        run.decimals = need[find(i)]
    ordered: list[ExportedRun] = []
    placed: set[int] = set()

    def place(run: ExportedRun, seen: set[int]) -> None:
        if id(run) in placed or id(run) in seen:
            return
        seen.add(id(run))
        parent = by_key.get((run.project, run.parent)) if run.parent else None
        if parent is not None:
            place(parent, seen)
        placed.add(id(run))
        ordered.append(run)

    for run in unique:
        place(run, set())
    return ordered


# -- applying -----------------------------------------------------------------------------


def import_export(
    store: Store,
    export_dir: Path,
    files_dir: Path | None = None,
    *,
    project: str | None = None,
    include_incomplete: bool = False,
    on_scan: Callable[[int, int], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_run_done: Callable[[RunImport], None] | None = None,
) -> ImportSummary:
    """Import the export at ``export_dir`` into ``store`` (opened for writing).

    ``on_scan(runs read, runs found)`` is called while the export is scanned (the
    first pass), ``on_start(runs, points)`` once it is, ``on_progress
    (points)`` after each batch read (stored or found stored), ``on_run_done`` after
    each run. A run that fails is reported and the others go on; its children too.
    """
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise TrackerError(
            "importing a Neptune export needs pyarrow, which is not installed: "
            "pip install 'tracker-dl[parquet]'"
        ) from None
    files = Path(files_dir) if files_dir is not None else default_files_dir(export_dir)
    runs, results, problems = plan_import(
        export_dir,
        files,
        project=project,
        include_incomplete=include_incomplete,
        on_scan=on_scan,
    )
    if on_start is not None:
        on_start(len(runs), sum(r.points for r in runs))
    by_key = {(r.project, r.neptune_id): r for r in runs}
    done: set[str] = set()
    for run in runs:
        result = RunImport(run.run_id, run.neptune_id, run.project, "imported")
        results.append(result)
        try:
            _import_run(store, run, files, by_key, done, result, on_progress)
        except Exception as exc:  # noqa: BLE001 - report this run, go on with the others
            result.status = "failed"
            result.reason = one_line(exc)
        result.files = run.files
        result.missing_files = list(run.missing)
        problems.extend(f"{run.project}/{run.neptune_id}: {p}" for p in run.problems)
        problems.extend(f"{run.project}/{run.neptune_id}: file not found: {m}" for m in run.missing)
        if result.status in ("imported", "already imported"):
            done.add(run.run_id)
        if on_run_done is not None:
            on_run_done(result)
    return ImportSummary(results, read_export_errors(Path(export_dir)), problems)


def _import_run(
    store: Store,
    run: ExportedRun,
    files: Path,
    by_key: dict[tuple[str, str], ExportedRun],
    done: set[str],
    result: RunImport,
    on_progress: Callable[[int], None] | None,
) -> None:
    existing = store.run(run.run_id)
    if existing is not None:
        mine = store.field(run.run_id, "import/neptune/run_id")
        theirs = store.field(run.run_id, "import/neptune/project")
        if (
            mine is None
            or decode_field(*mine) != run.neptune_id
            or theirs is None
            or decode_field(*theirs) != run.project
        ):
            raise ValueError(
                f"the store already holds a run {run.run_id} that is not this Neptune run: "
                "not imported (import into another store, or delete that run)"
            )
    scale = 10**run.decimals
    parent_id, fork_step = _fork(store, run, by_key, done, scale)
    result.parent_id = parent_id
    created = run.created if run.created is not None else (run.first_ts or 0.0)
    meta = {
        "project": run.project,
        "name": run.name,
        "ts": created,
        "host": None,
        "pid": None,
        "parent_id": parent_id,
        "fork_step": fork_step,
    }
    applier = store.applier(run.run_id)
    first: list[Any] = [ops.create(meta)]
    first.append(ops.set_value("import/neptune/run_id", "str", run.neptune_id, created))
    first.append(ops.set_value("import/neptune/project", "str", run.project, created))
    first.append(ops.set_value("import/neptune/step_scale", "int", scale, created))
    if run.parent and parent_id is None:
        first.append(ops.set_value("import/neptune/fork_parent", "str", run.parent, created))
    first.extend(run.field_ops)
    if run.tags:
        first.append(ops.tags_added(list(run.tags)))
    stored = 0
    aside = 0
    if not applier.applied((SEGMENT, 1)):
        aside += applier.apply(first, (SEGMENT, 1))
        stored += 1
    divisor = 10 ** (MAX_DECIMALS - run.decimals)
    offset = 1
    for batch in _iter_batches(run):
        offset += batch.num_rows
        if batch.num_rows == 0:
            continue
        if applier.applied((SEGMENT, offset)):
            if on_progress is not None:
                on_progress(_count_series(batch))
            continue
        groups, n = series_groups(batch, divisor, files, run)
        if groups:
            aside += applier.apply([ops.logs(0, n, groups)], (SEGMENT, offset))
            stored += 1
            result.points += n
        if on_progress is not None:
            on_progress(_count_series(batch))
    end = run.ended if run.ended is not None else (run.last_ts or created)
    status = "failed" if run.failed else "finished"
    if not applier.applied((SEGMENT, offset + 1)):
        applier.apply([ops.set_status(status, end, None)], (SEGMENT, offset + 1))
        stored += 1
    if aside:
        run.problems.append(
            f"{aside} operation(s) could not be stored and were set aside "
            "(`tracker doctor` lists them)"
        )
    if stored == 0:
        result.status = "already imported"


def _count_series(batch: Any) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pc.is_in(batch.column("attribute_type"), pa.array(SERIES_TYPES))
    return int(pc.sum(pc.and_(mask, batch.column("step").is_valid())).as_py() or 0)


def _fork(
    store: Store,
    run: ExportedRun,
    by_key: dict[tuple[str, str], ExportedRun],
    done: set[str],
    scale: int,
) -> tuple[str | None, int | None]:
    """(tracker parent id, scaled fork step) of the run, or (None, None) with a problem
    recorded where its parent cannot be its fork parent."""
    if not run.parent:
        return None, None
    if run.fork_step is None:
        run.problems.append(f"forked from {run.parent} at no step: imported as a plain run")
        return None, None
    parent = by_key.get((run.project, run.parent))
    parent_id = parent.run_id if parent is not None else tracker_run_id(run.parent)
    if parent is not None and parent_id not in done:
        run.problems.append(
            f"its fork parent {run.parent} was not imported: imported as a plain run"
        )
        return None, None
    if parent is None:
        row = store.run(parent_id)
        held = store.field(parent_id, "import/neptune/step_scale") if row else None
        if row is None or held is None or decode_field(*held) != scale:
            run.problems.append(
                f"its fork parent {run.parent} is neither in the export nor imported with "
                "the same step scale: imported as a plain run"
            )
            return None, None
    scaled = run.fork_step * scale
    if scaled != scaled.to_integral_value():
        run.problems.append(f"fork step {run.fork_step} has more than 6 decimals: not forked")
        return None, None
    return parent_id, int(scaled)
