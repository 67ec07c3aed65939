"""``tracker export`` and ``tracker.core.export``: stdout, several runs in one output,
exact values, streaming (output before the last series is read, bounded memory),
progress, and no half-written file when an export fails. Every run is a real one."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pty
import sqlite3
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import tracker
from tracker.cli import main
from tracker.core import export
from tracker.core.reader import FieldReader

from ..conftest import PYTHON, python_env

# Floats whose text is easy to get wrong: shortest round trip, exponents, subnormals.
TRICKY = [0.1, 1 / 3, 2 / 3, 1e-300, 5e-324, 1e16, 1e22, 2.0**53 + 2, -0.0, 123456.789e-12]
TEXTS = ["plain", "a, comma", 'a "quote"', "two\nlines", "cr\r\nlf", ',"\n', " lead"]


def _cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _run(store: str, name: str, project: str = "vision", **series: list[Any]) -> str:
    run = tracker.init_run(
        project,
        name=name,
        config={"lr": 0.1, "note": 'say "hi", then\nleave'},
        store=store,
        mode="sync",
        system_metrics=False,
        quiet=True,
    )
    for path, values in series.items():
        for step, value in enumerate(values):
            run.log({path.replace("__", "/"): value}, step=step)
    run.close()
    return run.id


def _big_run(store: str, series: int, points: int) -> str:
    """A run of ``series`` float series of ``points`` points each (logged async: fast)."""
    run = tracker.init_run("vision", store=store, system_metrics=False, quiet=True)
    for step in range(points):
        run.log({f"s{k}": step * 0.001 + k for k in range(series)}, step=step)
    run.close()
    return run.id


def _fields(store: str, *run_ids: str) -> int:
    """How many single values the runs hold (config, and what init_run records itself)."""
    return sum(len(tracker.read_run(rid, store=store).fields()) for rid in run_ids)


def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# -- stdout ----------------------------------------------------------------------------------


def test_dash_writes_csv_and_json_to_stdout(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = _run(store, "a", train__loss=[0.5, 0.25])
    monkeypatch.chdir(tmp_path)
    out = _cli("export", rid, "-o", "-", "--store", store)
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["path"], r["step"], r["value"]) for r in rows if r["step"]] == [
        ("train/loss", "0", "0.5"),
        ("train/loss", "1", "0.25"),
    ]
    assert out.stderr.strip() == (
        f"exported run {rid}: 2 points in 1 series and {_fields(store, rid)} fields to stdout"
    )
    doc = _strict(_cli("export", rid, "-o", "-", "-f", "json", "--store", store).stdout)
    assert [p["value"] for p in doc["runs"][0]["series"]] == [0.5, 0.25]
    assert not (tmp_path / "-").exists()  # once, a file named "-" was written


def test_parquet_to_a_pipe_reads_back(store: str) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed")
    rid = _run(store, "a", train__loss=[0.5, 0.25])
    out = _cli("export", rid, "-f", "parquet", "-o", "-", "--store", store)
    assert out.exit_code == 0, out.stderr
    table = pq.read_table(io.BytesIO(out.stdout_bytes))
    points = [r for r in table.to_pylist() if r["step"] is not None]
    assert [(r["run"], r["step"], r["value"]) for r in points] == [(rid, 0, 0.5), (rid, 1, 0.25)]


def test_parquet_to_a_terminal_is_refused(store: str) -> None:
    rid = _run(store, "a", train__loss=[0.5])
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [PYTHON, "-m", "tracker.cli", "export", rid, "-f", "parquet", "-o", "-"]
            + ["--store", store],
            env=python_env(),
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
        os.set_blocking(leader, False)
        try:
            on_terminal = os.read(leader, 1 << 16)
        except BlockingIOError:
            on_terminal = b""
    finally:
        os.close(leader)
        os.close(follower)
    assert proc.returncode == 2
    assert "parquet is binary" in proc.stderr and "Traceback" not in proc.stderr
    assert b"PAR1" not in on_terminal


# -- several runs ------------------------------------------------------------------------------


def test_several_runs_in_one_csv_json_and_parquet(store: str, tmp_path: Path) -> None:
    a = _run(store, "a", train__loss=[1.0, 0.5])
    b = _run(store, "b", train__loss=[2.0], eval__acc=[0.75])
    # Given twice (by id and as "latest"): exported once, in the order first given.
    args = (b, a, "latest", "--store", store)

    out = _cli("export", *args)
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == list(export.CSV_COLUMNS)
    assert [(r["run"], r["path"], r["step"], r["value"]) for r in rows if r["step"]] == [
        (b, "eval/acc", "0", "0.75"),
        (b, "train/loss", "0", "2.0"),
        (a, "train/loss", "0", "1.0"),
        (a, "train/loss", "1", "0.5"),
    ]
    assert {(r["run"], r["path"]) for r in rows if not r["step"]} >= {
        (a, "config/lr"),
        (b, "config/lr"),
    }
    assert out.stderr.strip() == (
        f"exported 2 runs ({b}, {a}): 4 points in 3 series and {_fields(store, a, b)} fields "
        "to stdout"
    )
    # One run alone is the same format: same header, a "runs" list of one.
    alone = list(csv.DictReader(io.StringIO(_cli("export", a, "--store", store).stdout)))
    assert list(alone[0]) == list(export.CSV_COLUMNS)
    assert alone == [r for r in rows if r["run"] == a]

    doc = _strict(_cli("export", *args, "-f", "json").stdout)
    assert [r["run"]["id"] for r in doc["runs"]] == [b, a]
    assert doc["runs"][1]["run"]["name"] == "a" and doc["runs"][1]["fields"]["config/lr"] == 0.1
    assert [(p["path"], p["step"], p["value"]) for p in doc["runs"][0]["series"]] == [
        ("eval/acc", 0, 0.75),
        ("train/loss", 0, 2.0),
    ]
    one = _strict(_cli("export", a, "-f", "json", "--store", store).stdout)
    assert one == {"runs": [doc["runs"][1]]}

    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed")
    target = tmp_path / "both.parquet"
    assert _cli("export", *args, "-o", str(target)).exit_code == 0
    table = pq.read_table(target)
    assert table.column_names == list(export.PARQUET_COLUMNS)
    points = [r for r in table.to_pylist() if r["step"] is not None]
    assert [(r["run"], r["path"], r["value"]) for r in points] == [
        (b, "eval/acc", 0.75),
        (b, "train/loss", 2.0),
        (a, "train/loss", 1.0),
        (a, "train/loss", 0.5),
    ]
    metas = json.loads(table.schema.metadata[b"tracker.runs"])
    assert [m["id"] for m in metas] == [b, a] and metas[0]["status"] == "finished"


def test_several_runs_to_parquet_need_a_file_name(store: str) -> None:
    a, b = _run(store, "a", x=[1.0]), _run(store, "b", x=[2.0])
    out = _cli("export", a, b, "-f", "parquet", "--store", store)
    assert out.exit_code == 2 and "name the file with -o FILE" in out.output


def test_project_filters_every_run_before_anything_is_written(store: str, tmp_path: Path) -> None:
    a = _run(store, "a", x=[1.0])
    other = _run(store, "b", project="nlp", x=[2.0])
    target = tmp_path / "out.csv"
    out = _cli("export", a, other, "-p", "vision", "-o", str(target), "--store", store)
    assert out.exit_code == 1
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: no run {other!r}")
    assert "'vision'" in lines[0]
    assert not target.exists()


# -- exact values ------------------------------------------------------------------------------


def test_csv_round_trips_floats_and_text_exactly(store: str, tmp_path: Path) -> None:
    rid = _run(store, "a", x=TRICKY + [math.nan, math.inf, -math.inf], msg=TEXTS)
    target = tmp_path / "a.csv"
    assert _cli("export", rid, "-o", str(target), "--store", store).exit_code == 0
    with open(target, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    xs = [r["value"] for r in rows if r["path"] == "x"]
    assert xs == [repr(v) for v in TRICKY] + ["nan", "inf", "-inf"]
    assert [float(v) for v in xs[: len(TRICKY)]] == TRICKY
    assert math.copysign(1, float(xs[TRICKY.index(-0.0)])) == -1
    assert [r["value"] for r in rows if r["path"] == "msg"] == TEXTS
    fields = {r["path"]: r["value"] for r in rows if not r["step"]}
    assert fields["config/note"] == 'say "hi", then\nleave'
    run = tracker.read_run(rid, store=store)
    stamps = run["x"].fetch_values().timestamp.tolist()
    assert [float(r["timestamp"]) for r in rows if r["path"] == "x"] == stamps


def test_json_is_strict_and_exact(store: str) -> None:
    rid = _run(store, "a", x=TRICKY + [math.nan, math.inf, -math.inf], msg=TEXTS)
    doc = _strict(_cli("export", rid, "-f", "json", "--store", store).stdout)
    series = doc["runs"][0]["series"]
    assert [p["value"] for p in series if p["path"] == "x"] == TRICKY + [
        "NaN",
        "Infinity",
        "-Infinity",
    ]
    assert [p["value"] for p in series if p["path"] == "msg"] == TEXTS
    stamps = tracker.read_run(rid, store=store)["x"].fetch_values().timestamp.tolist()
    assert [p["timestamp"] for p in series if p["path"] == "x"] == stamps
    assert doc["runs"][0]["fields"]["config/note"] == 'say "hi", then\nleave'


def test_json_keeps_config_lists_with_nan_strict(store: str) -> None:
    with tracker.init_run(
        "vision",
        config={"grid": [0.5, math.nan, math.inf], "sched": None, "nested": {"b": [1, 2]}},
        store=store,
        mode="sync",
        system_metrics=False,
        quiet=True,
    ) as run:
        run.log({"x": 1.0})
    out = _cli("export", run.id, "-f", "json", "--store", store)
    assert out.exit_code == 0, out.output
    fields = _strict(out.stdout)["runs"][0]["fields"]
    assert fields["config/grid"] == [0.5, "NaN", "Infinity"]
    assert fields["config/sched"] is None and fields["config/nested/b"] == [1, 2]


def test_parquet_round_trips_and_writes_row_groups(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed")
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    monkeypatch.setattr(export, "CHUNK_POINTS", 7)
    monkeypatch.setattr(export, "ROW_GROUP_ROWS", 10)
    rid = _run(store, "a", x=TRICKY + [math.nan], msg=TEXTS)
    target = tmp_path / "a.parquet"
    assert _cli("export", rid, "-o", str(target), "--store", store).exit_code == 0
    assert pq.ParquetFile(target).metadata.num_row_groups > 1  # written a group at a time
    rows = pq.read_table(target).to_pylist()
    xs = [r["value"] for r in rows if r["path"] == "x"]
    assert xs[:-1] == TRICKY and math.isnan(xs[-1])
    assert [r["text"] for r in rows if r["path"] == "msg"] == TEXTS
    df = pd.read_parquet(target)
    assert str(df["step"].dtype) == "Int64"  # a single value's step is null, not NaN


# -- streaming ---------------------------------------------------------------------------------


class _Recorder(io.StringIO):
    """Output that notes how many series had been read when it was first written to."""

    def __init__(self, reads: list[str]) -> None:
        super().__init__()
        self.reads = reads
        self.reads_at_first_write: int | None = None

    def write(self, s: str) -> int:
        if self.reads_at_first_write is None:
            self.reads_at_first_write = len(self.reads)
        return super().write(s)


class _BinaryRecorder(io.BytesIO):
    def __init__(self, reads: list[str]) -> None:
        super().__init__()
        self.reads = reads
        self.reads_at_first_write: int | None = None

    def write(self, b: Any) -> int:
        # The parquet header (4 bytes) is written as the writer opens: count data only.
        if self.reads_at_first_write is None and len(b) > 4:
            self.reads_at_first_write = len(self.reads)
        return super().write(b)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_output_is_written_before_the_last_series_is_read(
    store: str, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason="pyarrow is not installed")
        monkeypatch.setattr(export, "ROW_GROUP_ROWS", 50_000)
    rid = _big_run(store, series=3, points=60_000)
    reads: list[str] = []
    fetch = FieldReader.fetch_values

    def counting(self: FieldReader, *args: Any, **kwargs: Any) -> Any:
        reads.append(self.path)
        return fetch(self, *args, **kwargs)

    monkeypatch.setattr(FieldReader, "fetch_values", counting)
    out = (_BinaryRecorder if fmt == "parquet" else _Recorder)(reads)
    summary = export.WRITERS[fmt](out, tracker.read_run(rid, store=store))
    assert summary.points == 180_000 and len(reads) == 3
    assert out.reads_at_first_write is not None and out.reads_at_first_write < 3


class _Counter(io.TextIOBase):
    """Output that keeps nothing but its length."""

    chars = 0

    def write(self, s: str) -> int:
        self.chars += len(s)
        return len(s)


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> tracker.RunReader:
    store = str(tmp_path_factory.mktemp("big") / "store")
    return tracker.read_run(_big_run(store, series=16, points=25_000), store=store)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_memory_stays_far_below_the_size_of_the_export(
    big_run: tracker.RunReader, fmt: str
) -> None:
    out = _Counter()
    tracemalloc.start()
    try:
        export.WRITERS[fmt](out, big_run)  # 400,000 points
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Holding every row takes about the export's size (all series' arrays and lists) or
    # several times it (a dict per point); one series and one chunk at a time take a
    # few MB, whatever the size of the run.
    assert out.chars > 15_000_000
    assert peak < out.chars / 4, (peak, out.chars)


# -- progress and failures ---------------------------------------------------------------------


def test_progress_is_reported_per_run(store: str) -> None:
    a = _run(store, "a", x=[1.0, 2.0, 3.0], y=[1.0])
    b = _run(store, "b", x=[1.0])
    calls: list[tuple[str, int, int]] = []
    buf = io.StringIO()
    export.write_csv(buf, [tracker.read_run(a, store=store), tracker.read_run(b, store=store)],
                     lambda *c: calls.append(c))  # fmt: skip
    assert calls[0] == (a, 0, 4) and calls[-1] == (b, 1, 1)
    assert max(c[1] for c in calls if c[0] == a) == 4


def test_progress_is_drawn_only_on_a_terminal(store: str, tmp_path: Path) -> None:
    rid = _run(store, "a", x=[1.0, 2.0, 3.0])
    target = tmp_path / "a.csv"
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [PYTHON, "-m", "tracker.cli", "export", rid, "-o", str(target), "--store", store],
            env=python_env(COLUMNS="120"),
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
        )
        drawn = b""
        os.set_blocking(leader, False)
        while True:
            try:
                piece = os.read(leader, 1 << 16)
            except (BlockingIOError, OSError):
                break
            if not piece:
                break
            drawn += piece
    finally:
        os.close(leader)
        os.close(follower)
    assert proc.returncode == 0 and proc.stdout == b""
    text = drawn.decode()
    assert f"run {rid}" in text and "3/3 points" in text and "exported run" in text

    # Not a terminal (CliRunner's stderr, a pipe, a log): the summary line alone.
    piped = _cli("export", rid, "-o", str(tmp_path / "b.csv"), "--store", store)
    assert piped.stderr.splitlines() == [
        f"exported run {rid}: 3 points in 1 series and {_fields(store, rid)} fields to "
        f"{tmp_path / 'b.csv'}"
    ]


def test_a_failed_export_leaves_no_file_and_no_output(store: str, tmp_path: Path) -> None:
    good = _run(store, "good", x=[1.0, 2.0])
    bad = _run(store, "bad", x=[1.0])
    with sqlite3.connect(Path(store) / "store.db") as conn:
        conn.execute(  # its chunks now claim a point more than they hold
            "UPDATE chunks SET n = n + 1 WHERE series_id IN "
            "(SELECT series_id FROM series WHERE run_id = ?)",
            (bad,),
        )
    target = tmp_path / "out.csv"
    target.write_text("an earlier export\n")
    out = _cli("export", good, bad, "-o", str(target), "--store", store)
    assert out.exit_code == 1
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: run {bad}")
    assert target.read_text() == "an earlier export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "store"]
    to_stdout = _cli("export", good, bad, "--store", store)
    assert to_stdout.exit_code == 1 and to_stdout.stdout == ""

    # Parquet to a pipe: what was written before the error is no readable file.
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed")
    cut = _cli("export", good, bad, "-f", "parquet", "-o", "-", "--store", store)
    assert cut.exit_code == 1
    with pytest.raises(Exception, match="(?i)parquet"):
        pq.read_table(io.BytesIO(cut.stdout_bytes))


def test_library_takes_one_run_or_several(store: str, tmp_path: Path) -> None:
    rid = _run(store, "a", x=[0.5])
    run = tracker.read_run(rid, store=store)
    buf = io.StringIO()
    summary = export.write_json(buf, run)
    assert summary == export.ExportSummary([rid], points=1, series=1, fields=_fields(store, rid))
    assert _strict(buf.getvalue())["runs"][0]["series"][0]["value"] == 0.5
    empty = io.StringIO()
    export.write_json(empty, [])
    assert _strict(empty.getvalue()) == {"runs": []}


def test_writing_over_a_file_keeps_its_mode_and_its_symlink(store: str, tmp_path: Path) -> None:
    rid = _run(store, "a", x=[0.5])
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    target.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert _cli("export", rid, "-o", str(link), "--store", store).exit_code == 0
    assert link.is_symlink() and target.read_text().startswith("run,path,")
    assert target.stat().st_mode & 0o777 == 0o640
