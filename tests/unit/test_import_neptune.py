"""``tracker import neptune``: exports written in the exporter's exact schema, imported
into a real store, every value read back through ``tracker.read_run``."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import tracker
from tracker.cli import main
from tracker.core.stores import open_store
from tracker.importers import neptune
from tracker.importers.neptune import import_export, schema, tracker_run_id

PROJECT = "acme/vision"
T0 = 1_700_000_000_000  # ms


def when(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)


def row(run: str, path: str, kind: str, step: Any = None, ts: int = T0, **value: Any) -> dict:
    out: dict[str, Any] = {name: None for name in schema().names}
    out.update(
        project_id=PROJECT,
        run_id=run,
        attribute_path=path,
        attribute_type=kind,
        step=None if step is None else Decimal(str(step)),
        timestamp=when(ts),
    )
    out.update(value)
    return out


def write_parts(data: Path, run: str, parts: list[list[dict]], *, skip: tuple[int, ...] = ()):
    folder = data / PROJECT.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    safe = run.replace("/", "_").replace(" ", "_")
    for n, rows in enumerate(parts):
        if n in skip:
            continue
        table = pa.Table.from_pylist(rows, schema=schema())
        pq.write_table(table, folder / f"{safe}_part_{n}.parquet", compression="snappy")


def series(run: str, path: str, steps: list[Any], start_ts: int = T0) -> list[dict]:
    return [
        row(run, path, "float_series", s, start_ts + 10 * i, float_value=0.5 * i + 0.125)
        for i, s in enumerate(steps)
    ]


def do_import(tmp_path: Path, store: str, **kw: Any) -> neptune.ImportSummary:
    st = open_store(store)
    try:
        return import_export(st, tmp_path / "exports" / "data", **kw)
    finally:
        st.close()


def by_id(summary: neptune.ImportSummary) -> dict[str, neptune.RunImport]:
    return {r.neptune_id: r for r in summary.runs}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- a 3.x run: every kind of attribute ------------------------------------------------------


def test_every_kind_of_attribute_of_a_3x_run(tmp_path: Path, store: str) -> None:
    data = tmp_path / "exports" / "data"
    files = tmp_path / "exports" / "files"
    (files / "acme_vision" / "r1").mkdir(parents=True)
    (files / "acme_vision" / "r1" / "model.pt").write_bytes(b"weights")
    (files / "acme_vision" / "r1" / "img_0.png").write_bytes(b"png0")
    run = "exp-ab12"
    rows = [
        row(run, "sys/custom_run_id", "string", string_value=run),
        row(run, "sys/name", "string", string_value="baseline"),
        row(run, "sys/creation_time", "datetime", datetime_value=when(T0 - 5000)),
        row(run, "sys/tags", "string_set", string_set_value=["b", "a"]),
        row(run, "parameters/lr", "float", float_value=3e-4),
        row(run, "parameters/epochs", "int", int_value=12),
        row(run, "parameters/amp", "bool", bool_value=True),
        row(run, "parameters/optimizer", "string", string_value="adamw"),
        row(run, "data/cutoff", "datetime", datetime_value=when(T0 - 86_400_000)),
        row(run, "data/splits", "string_set", string_set_value=["val", "train"]),
        row(run, "model/weights", "file", file_value={"path": "acme_vision/r1/model.pt"}),
        row(run, "model/missing", "file", file_value={"path": "acme_vision/r1/nope.bin"}),
        *series(run, "train/loss", list(range(5))),
        row(run, "train/loss_nan", "float_series", 0, T0, float_value=math.nan),
        row(run, "logs/stdout", "string_series", 1, T0 + 1, string_value="epoch 1"),
        row(run, "logs/stdout", "string_series", 2, T0 + 2, string_value="epoch 2"),
        row(
            run,
            "weights/hist",
            "histogram_series",
            3,
            T0 + 3,
            histogram_value={"type": "linear", "edges": [0.0, 1.0, 2.0], "values": [4.0, 5.0]},
        ),
        row(
            run, "images", "file_series", 0, T0 + 4, file_value={"path": "acme_vision/r1/img_0.png"}
        ),
        row(
            run, "images", "file_series", 1, T0 + 5, file_value={"path": "acme_vision/r1/gone.png"}
        ),
    ]
    write_parts(data, run, [rows])
    summary = do_import(tmp_path, store, files_dir=files)
    result = by_id(summary)[run]
    assert result.status == "imported"
    assert result.points == 5 + 1 + 2 + 1 + 2
    assert len(result.missing_files) == 2
    assert any("nope.bin" in p for p in summary.problems)

    r = tracker.read_run(run, store=store)
    assert (r.project, r.name, r.tags, r.status) == (PROJECT, "baseline", ["a", "b"], "finished")
    assert r.created_at == (T0 - 5000) / 1000
    assert r["parameters/lr"].fetch() == 3e-4
    assert r["parameters/epochs"].fetch() == 12
    assert r["parameters/amp"].fetch() is True
    assert r["parameters/optimizer"].fetch() == "adamw"
    assert r["data/cutoff"].fetch() == when(T0 - 86_400_000)
    assert r["data/splits"].fetch() == ["train", "val"]
    assert r["sys/name"].fetch() == "baseline"
    assert r["import/neptune/run_id"].fetch() == run
    assert r["import/neptune/project"].fetch() == PROJECT
    assert r["import/neptune/step_scale"].fetch() == 1
    weights = r["model/weights"].fetch()
    assert weights["size"] == 7 and weights["hash"] == sha(b"weights")
    assert weights["uri"] == (files / "acme_vision/r1/model.pt").absolute().as_uri()
    assert r["model/missing"].fetch()["missing"] is True

    loss = r["train/loss"].fetch_values()
    assert loss.step.tolist() == [0, 1, 2, 3, 4]
    assert loss.value.tolist() == [0.5 * i + 0.125 for i in range(5)]
    assert loss.timestamp.tolist() == [(T0 + 10 * i) / 1000 for i in range(5)]
    assert math.isnan(r["train/loss_nan"].fetch_values().value[0])
    text = r["logs/stdout"].fetch_values()
    assert text.step.tolist() == [1, 2] and text.value.tolist() == ["epoch 1", "epoch 2"]
    assert text.timestamp.tolist() == [(T0 + 1) / 1000, (T0 + 2) / 1000]
    hist = r["weights/hist"].fetch_values()
    assert hist.step.tolist() == [3]
    assert json.loads(hist.value[0]) == {
        "type": "linear",
        "edges": [0.0, 1.0, 2.0],
        "values": [4.0, 5.0],
    }
    images = r["images"].fetch_values()
    assert images.step.tolist() == [0, 1]
    first, second = (json.loads(v) for v in images.value)
    assert first["hash"] == sha(b"png0") and first["size"] == 4
    assert second["missing"] is True


# -- a 2.x run: sys/id, artifacts, file sets, a run id tracker cannot use ------------------------


def test_2x_run_and_mapped_run_id(tmp_path: Path, store: str) -> None:
    data = tmp_path / "exports" / "data"
    files = tmp_path / "exports" / "files"
    (files / "ds").mkdir(parents=True)
    (files / "ds" / "a.txt").write_text("a")
    rows = [
        row("VIS-7", "sys/id", "string", string_value="VIS-7"),
        row("VIS-7", "sys/failed", "bool", bool_value=True),
        row("VIS-7", "sys/modification_time", "datetime", datetime_value=when(T0 + 60_000)),
        row("VIS-7", "dataset", "file_set", file_value={"path": "ds"}),
        row("VIS-7", "checkpoint", "artifact", string_value="md5:abc"),
        *series("VIS-7", "metrics/acc", [0, 1]),
    ]
    write_parts(data, "VIS-7", [rows])
    odd = "my run/1"
    write_parts(data, odd, [[row(odd, "x", "int", int_value=1)]])
    summary = do_import(tmp_path, store)  # files: 'files' beside the data directory
    assert {r.status for r in summary.runs} == {"imported"}
    r = tracker.read_run("VIS-7", store=store)
    assert r.status == "failed" and r.ended_at == (T0 + 60_000) / 1000
    assert r["dataset"].fetch()["files"] == 1
    assert r["checkpoint"].fetch() == "md5:abc"
    assert r["sys/failed"].fetch() is True
    assert r["metrics/acc"].fetch_values().step.tolist() == [0, 1]
    mapped = tracker_run_id(odd)
    assert mapped.startswith("my-run-1-") and mapped == tracker_run_id(odd)
    m = tracker.read_run(mapped, store=store)
    assert m["import/neptune/run_id"].fetch() == odd and m["x"].fetch() == 1


# -- forks ------------------------------------------------------------------------------------------


def test_fork_chain_of_three(tmp_path: Path, store: str) -> None:
    data = tmp_path / "exports" / "data"
    a = [row("a", "sys/custom_run_id", "string", string_value="a"), *series("a", "loss", range(10))]
    b = [
        row("b", "sys/forking/parent", "string", string_value="a"),
        row("b", "sys/forking/step", "float", float_value=4.0),
        *series("b", "loss", range(5, 9), T0 + 1000),
    ]
    c = [
        row("c", "sys/forking/parent", "string", string_value="b"),
        row("c", "sys/forking/step", "float", float_value=7.0),
        *series("c", "loss", range(8, 12), T0 + 2000),
    ]
    # Children first on disk: the import must still put the parents first.
    write_parts(data, "c", [c])
    write_parts(data, "b", [b])
    write_parts(data, "a", [a])
    summary = do_import(tmp_path, store)
    assert [r.neptune_id for r in summary.runs] == ["a", "b", "c"]
    rc = tracker.read_run("c", store=store)
    assert rc.parent == ("b", 7)
    assert tracker.read_run("b", store=store).parent == ("a", 4)
    got = rc["loss"].fetch_values()
    assert got.step.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert got.timestamp.tolist()[:5] == [(T0 + 10 * i) / 1000 for i in range(5)]
    assert got.timestamp.tolist()[5:8] == [(T0 + 1000 + 10 * i) / 1000 for i in range(3)]
    # Nothing copied: each run holds its own points only.
    st = open_store(store, readonly=True)
    assert [s.points for s in st.series_list("c")] == [4]
    assert [s.points for s in st.series_list("b")] == [4]


# -- parts, fractional steps, incomplete runs, the errors file --------------------------------------


def test_multi_part_run_is_joined(tmp_path: Path, store: str) -> None:
    data = tmp_path / "exports" / "data"
    parts = [
        [row("mp", "sys/name", "string", string_value="big"), *series("mp", "loss", range(0, 3))],
        series("mp", "loss", range(3, 6), T0 + 100),
        [*series("mp", "loss", range(6, 9), T0 + 200), row("mp", "late", "int", int_value=9)],
    ]
    write_parts(data, "mp", parts)
    do_import(tmp_path, store)
    r = tracker.read_run("mp", store=store)
    assert r["loss"].fetch_values().step.tolist() == list(range(9))
    assert r["late"].fetch() == 9 and r.name == "big"


def test_fractional_steps_are_scaled_exactly(tmp_path: Path, store: str) -> None:
    data = tmp_path / "exports" / "data"
    steps = ["0.5", "1.25", "2", "1000000.75"]
    rows = [
        row("fr", "loss", "float_series", s, T0 + i, float_value=float(i))
        for i, s in enumerate(steps)
    ]
    write_parts(data, "fr", [rows])
    do_import(tmp_path, store)
    r = tracker.read_run("fr", store=store)
    scale = r["import/neptune/step_scale"].fetch()
    assert scale == 100
    got = r["loss"].fetch_values().step
    assert got.dtype == np.int64
    assert [Decimal(int(s)) / scale for s in got] == [Decimal(s) for s in steps]


def test_incomplete_run_and_exporter_errors(tmp_path: Path, store: str) -> None:
    data = tmp_path / "exports" / "data"
    write_parts(data, "done", [series("done", "loss", [0])])
    write_parts(data, "half", [series("half", "loss", [0]), series("half", "loss", [1])], skip=(0,))
    errors = [
        {"project_id": PROJECT, "run_id": "lost", "attribute_path": "big/file",
         "attribute_type": "file", "exception": "TimeoutError"},
        {"project_id": PROJECT, "run_id": "gone", "attribute_path": None,
         "attribute_type": None, "exception": "NeptuneException"},
    ]  # fmt: skip
    (tmp_path / "exports" / neptune.ERRORS_FILE).write_text(
        "".join(json.dumps(e) + "\n" for e in errors)
    )
    summary = do_import(tmp_path, store)
    results = by_id(summary)
    assert results["done"].status == "imported"
    assert results["half"].status == "skipped" and "part_0" in (results["half"].reason or "")
    assert summary.export_errors == [
        f"{PROJECT}/lost: big/file (file): TimeoutError",
        f"{PROJECT}/gone: the whole run: NeptuneException",
    ]
    with pytest.raises(tracker.RunNotFoundError):
        tracker.read_run("half", store=store)
    summary = do_import(tmp_path, store, include_incomplete=True)
    assert by_id(summary)["half"].status == "imported"
    assert tracker.read_run("half", store=store)["loss"].fetch_values().step.tolist() == [1]


# -- idempotent and resumable -------------------------------------------------------------------------


def _points(store: str) -> dict[tuple[str, str], int]:
    st = open_store(store, readonly=True)
    return {
        (row["run_id"], s.path): s.points
        for row in st.runs()
        for s in st.series_list(row["run_id"])
    }


def test_rerun_adds_nothing_and_an_interrupted_import_resumes(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(neptune, "BATCH_ROWS", 4)  # many batches per run
    data = tmp_path / "exports" / "data"
    rows = [
        row("r", "sys/tags", "string_set", string_set_value=["t"]),
        *series("r", "loss", range(20)),
    ]
    rows += [row("r", "log", "string_series", i, T0 + i, string_value=f"l{i}") for i in range(6)]
    write_parts(data, "r", [rows[:15], rows[15:]])
    write_parts(data, "q", [series("q", "loss", range(7))])

    # Interrupted: the store fails on the third batch of run "r".
    from tracker.core.stores.applying import BatchApplier

    real = BatchApplier.apply
    calls = {"n": 0}

    def flaky(self: Any, batch: list[Any], position: Any = None) -> int:
        if self.run_id == "r":
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError("disk gone")
        return real(self, batch, position)

    monkeypatch.setattr(BatchApplier, "apply", flaky)
    first = do_import(tmp_path, store)
    assert by_id(first)["r"].status == "failed"
    monkeypatch.setattr(BatchApplier, "apply", real)
    second = do_import(tmp_path, store)
    assert by_id(second)["r"].status == "imported"
    assert by_id(second)["q"].status == "already imported"
    assert _points(store) == {("q", "loss"): 7, ("r", "loss"): 20, ("r", "log"): 6}
    third = do_import(tmp_path, store)
    assert {r.status for r in third.runs} == {"already imported"}
    assert third.points == 0
    assert _points(store) == {("q", "loss"): 7, ("r", "loss"): 20, ("r", "log"): 6}
    r = tracker.read_run("r", store=store)
    assert r.tags == ["t"] and r.status == "finished"
    assert r["log"].fetch_values().value.tolist() == [f"l{i}" for i in range(6)]
    assert r["loss"].fetch_values().step.tolist() == list(range(20))


def test_a_run_id_held_by_another_run_is_not_touched(tmp_path: Path, store: str) -> None:
    with tracker.init_run(project="mine", run_id="clash", store=store) as run:
        run.log({"loss": 1.0})
    write_parts(tmp_path / "exports" / "data", "clash", [series("clash", "loss", [0, 1])])
    summary = do_import(tmp_path, store)
    assert by_id(summary)["clash"].status == "failed"
    assert len(tracker.read_run("clash", store=store)["loss"].fetch_values()) == 1


# -- the command ----------------------------------------------------------------------------------------


def test_command_prints_a_summary(tmp_path: Path, store: str) -> None:
    data = tmp_path / "exports" / "data"
    write_parts(data, "cli", [series("cli", "loss", range(3))])
    write_parts(data, "inc", [series("inc", "loss", [0]), series("inc", "loss", [1])], skip=(0,))
    (tmp_path / "exports" / neptune.ERRORS_FILE).write_text(
        json.dumps({"project_id": PROJECT, "run_id": "x", "attribute_path": "a",
                    "attribute_type": "int", "exception": "KeyError"}) + "\n"
    )  # fmt: skip
    runner = CliRunner()
    res = runner.invoke(main, ["import", "neptune", str(data), "--store", store])
    assert res.exit_code == 0, res.output
    assert "1 imported" in res.output and "1 skipped" in res.output
    assert "points: 3" in res.output and "exporter errors: 1" in res.output
    assert f"exporter error: {PROJECT}/x: a (int): KeyError" in res.output
    again = runner.invoke(main, ["import", "neptune", str(data), "--store", store])
    assert again.exit_code == 0 and "1 already there" in again.output
    assert "points: 0" in again.output
    other = runner.invoke(
        main, ["import", "neptune", str(data), "--store", store, "--project", "other/p"]
    )
    assert other.exit_code == 0 and "0 imported" in other.output
    assert "0 skipped" in other.output  # another project's runs are not even listed
    mine = runner.invoke(main, ["import", "neptune", str(data), "--store", store, "-p", PROJECT])
    assert mine.exit_code == 0 and "1 already there" in mine.output


def test_an_imported_run_goes_on_like_any_other(tmp_path: Path, store: str) -> None:
    write_parts(tmp_path / "exports" / "data", "PROJ-1", [series("PROJ-1", "loss", range(3))])
    do_import(tmp_path, store)
    from tracker.core.doctor import check_store

    assert all(c.ok for c in check_store(store)), check_store(store)
    with tracker.init_run(project=PROJECT, run_id="PROJ-1", store=store) as run:
        run["loss"].append(9.0, step=3)
    with tracker.init_run(project=PROJECT, fork_from=("PROJ-1", 1), store=store) as child:
        child["loss"].append(7.0, step=2)
        child_id = child.id
    assert tracker.read_run("PROJ-1", store=store)["loss"].fetch_values().step.tolist() == [
        0,
        1,
        2,
        3,
    ]
    got = tracker.read_run(child_id, store=store)["loss"].fetch_values()
    assert got.step.tolist() == [0, 1, 2] and got.value.tolist()[-1] == 7.0
    summary = do_import(tmp_path, store)  # the import again: what was added stays
    assert by_id(summary)["PROJ-1"].status == "already imported"
    assert len(tracker.read_run("PROJ-1", store=store)["loss"].fetch_values()) == 4


def _progress_of(data: Path, store: str) -> dict[str, Any]:
    seen: dict[str, Any] = {"scan": [], "start": None, "points": 0, "runs": []}

    def on_progress(n: int) -> None:
        seen["points"] += n

    st = open_store(store)
    try:
        import_export(
            st,
            data,
            on_scan=lambda read, found: seen["scan"].append((read, found)),
            on_start=lambda runs, points: seen.__setitem__("start", (runs, points)),
            on_progress=on_progress,
            on_run_done=lambda r: seen["runs"].append(r.neptune_id),
        )
    finally:
        st.close()
    return seen


def test_progress_reports_runs_and_points(tmp_path: Path, store: str) -> None:
    data = tmp_path / "exports" / "data"
    write_parts(data, "p1", [series("p1", "loss", range(4)), series("p1", "acc", range(3))])
    write_parts(data, "p2", [[row("p2", "lr", "float", float_value=0.1), *series("p2", "x", [0])]])
    for _ in range(2):  # the rerun reports the same, though it stores nothing
        seen = _progress_of(data, store)
        assert seen["scan"] == [(0, 2), (1, 2), (2, 2)]
        assert seen["start"] == (2, 8) and seen["points"] == 8
        assert sorted(seen["runs"]) == ["p1", "p2"]
