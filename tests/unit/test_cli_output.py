"""What the ``tracker`` command prints: tables at a real terminal's width and piped,
``--json`` documents, ``show --path``, runs addressed by name, and the hints of ``ls``."""

from __future__ import annotations

import fcntl
import json
import math
import os
import pty
import re
import select
import struct
import subprocess
import termios
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import tracker
from tracker.cli import common, main
from tracker.core import lookup
from tracker.core.errors import RunNotFoundError
from tracker.core.store import Store
from tracker.rank_utils.coordinator import receive, shipment

from ..conftest import PYTHON, python_env
from .test_cli import _build, _cli

QUICKSTART = {"steps": 300, "lr": 0.05, "batch_size": 64, "hidden": 64}
LONG_NAME = "a-long-run-name-for-the-table"
LONG_TAG = "a-rather-long-tag-that-80-columns-would-fold"


def _at(monkeypatch: pytest.MonkeyPatch, width: int, *args: str) -> Any:
    """The command as printed on a terminal of ``width`` columns."""
    monkeypatch.setattr(common, "terminal_width", lambda stream: width)
    return _cli(*args)


def _refuse(name: str) -> None:
    raise AssertionError(f"non-standard JSON constant {name}")


def _json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout, parse_constant=_refuse)


def _quickstart_runs(store: str, n: int = 3) -> list[str]:
    """Runs as examples/quickstart.py makes them (its config and tags), lr varied."""
    ids = []
    for i in range(n):
        config = dict(QUICKSTART, lr=0.05 * (i + 1))
        with tracker.init_run(
            "quickstart", tags=["mlp", "synthetic"], config=config, store=store,
            system_metrics=False, mode="sync",
        ) as run:  # fmt: skip
            for step in range(100):
                run.log({"train/loss": 1 / (step + 1), "train/step_ms": 123456789.5}, step=step)
        ids.append(run.id)
    return ids


def _wide_run(store: str) -> str:
    """A failed two-rank run with a long name, a long tag, twelve config values and long
    series paths: what a DDP run puts in front of an 80-column terminal."""
    run = tracker.init_run(
        "vision",
        name=LONG_NAME,
        tags=[LONG_TAG, "baseline"],
        config={f"parameter_number_{i}": 1000 + i for i in range(12)},
        store=store,
        system_metrics=False,
        mode="sync",
    )
    for i in range(100):
        run.log({"train/loss": 2.0 / (i + 1), "train/grad_norm/encoder.layers.11.mlp": i * 1.5})
    shipped = shipment([(0, 0.0, {"train/loss": 5.0}), (1, 0.0, {"train/loss": 4.0})], 1)
    receive(run, 1, shipped)
    run.close("failed")
    return run.id


def _column_text(text: str, header: str, next_header: str | None) -> str:
    """The cells under ``header`` (up to ``next_header``) joined, spaces left out: the
    text of a column that wraps, whole again whether it wrapped at a space or not."""
    lines = text.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("id "))
    start = lines[top].index(f" {header}") + 1
    end = lines[top].index(f" {next_header}") + 1 if next_header else None
    return "".join(line[start:end].replace(" ", "") for line in lines[top + 1 :])


def _header_and_rows(text: str, first: str) -> tuple[list[str], list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first])
    return lines[start].split(), lines[start + 1 :]


# -- at a terminal of 80 columns -------------------------------------------------------------


def test_ls_at_80_columns_leaves_config_out_whole_and_says_so(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [*_quickstart_runs(store), _wide_run(store)]
    out = _at(monkeypatch, 80, "ls", "--store", store)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "…" not in out.output
    header, rows = _header_and_rows(out.output, "id")
    assert header[:5] == ["id", "name", "project", "status", "created"]
    # One header line: the line under it starts a run, not the rest of a folded header.
    assert rows[0].split()[0] in ids
    for run_id, status in zip(ids, ["finished"] * 3 + ["failed"], strict=True):
        (line,) = [x for x in lines if run_id in x]
        assert line.startswith(run_id) and status in line.split()
    note = [x for x in lines if x.startswith("left out to fit a terminal of 80 columns:")]
    assert len(note) == 1 and "tracker ls --json" in note[0]
    for key in ("lr", "batch_size", "hidden"):
        assert key in note[0] and key not in header
    table = lines[: lines.index(note[0])]
    assert all(len(line.rstrip()) <= 80 for line in table)
    # Free text wraps, whole: the long name is all there, split over lines.
    assert LONG_NAME in _column_text("\n".join(table), "name", "project")

    # Only the quickstart runs, at 120 columns: the config columns fit, headers whole.
    wide = _at(monkeypatch, 120, "ls", "--project", "quickstart", "--store", store)
    header, rows = _header_and_rows(wide.output, "id")
    assert header[-3:] == ["lr", "batch_size", "hidden"] and "left out" not in wide.output
    assert {r.split()[0] for r in rows if r.strip()} == set(ids[:3])
    assert all(r.split()[-2:] == ["64", "64"] for r in rows if r.strip())


def test_gc_dry_run_at_80_columns_keeps_action_and_status(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _build(store)
    wide = _wide_run(store)
    out = _at(monkeypatch, 80, "gc", "--project", "vision", "--dry-run", "--store", store)
    assert out.exit_code == 0, out.output
    assert "…" not in out.output
    header, rows = _header_and_rows(out.output, "id")
    assert header == ["id", "name", "project", "status", "created", "points", "action"]
    table = [r for r in rows if not r.startswith("dry run")]
    assert table[0][:10] in {*ids.values(), wide}  # the header is one line
    assert all(len(r.rstrip()) <= 80 for r in table)
    status = {"base": "finished", "other": "failed", "fork": "finished"}
    for run_id, state in [*((ids[k], v) for k, v in status.items()), (wide, "failed")]:
        (line,) = [r for r in table if r.startswith(run_id)]
        assert line.split()[-1] == "delete" and state in line.split()
    assert _column_text(out.output, "name", "project").count(LONG_NAME) == 1

    kept = _at(monkeypatch, 80, "gc", "--tag", "baseline", "--dry-run", "--store", store)
    (line,) = [r for r in kept.output.splitlines() if r.startswith(ids["base"])]
    assert "finished" in line.split() and "keep:" in line.split()
    reason = _column_text(kept.output, "action", None)
    assert f"keep:forkparentof{ids['fork']},whichisnotbeingdeleted" in reason


def test_show_at_80_columns_keeps_counts_ranks_and_shrinks_the_trend(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _wide_run(store)
    out = _at(monkeypatch, 80, "show", run_id, "--store", store)
    assert out.exit_code == 0, out.output
    series = out.output.split("\nseries\n")[1]
    assert "…" not in series
    header, rows = _header_and_rows(series, "path")
    assert header[:6] == ["path", "rank", "count", "last", "min", "max"]
    assert rows[0].startswith("train/")  # the header is one line
    cells = {(r.split()[0], r.split()[1]): r.split()[2:] for r in rows if r.strip()}
    assert cells[("train/loss", "0")][:4] == ["100", "0.02", "0.02", "2"]
    assert cells[("train/loss", "1")][:4] == ["2", "4", "4", "5"]
    grad = cells[("train/grad_norm/encoder.layers.11.mlp", "0")]
    assert grad[:4] == ["100", "148.5", "0", "148.5"]
    assert all(len(r.rstrip()) <= 80 for r in rows)
    if "trend" in header:
        trend = cells[("train/loss", "0")][4]
        assert 5 <= len(trend) < 40 and trend[0] == "█"  # narrowed from --width 40, not cut
    else:
        assert "left out to fit a terminal of 80 columns: trend" in out.output

    roomy = _at(monkeypatch, 100, "show", run_id, "--store", store)
    header, rows = _header_and_rows(roomy.output.split("\nseries\n")[1], "path")
    assert header[-1] == "trend"
    loss = next(r for r in rows if r.startswith("train/loss") and r.split()[1] == "0")
    trend = loss.split()[-1]
    assert 5 <= len(trend) < 40 and trend[0] == "█" and trend[-1] == "▁"
    assert all(len(r.rstrip()) <= 100 for r in rows)


def test_compare_at_80_columns_keeps_ids_and_values_whole(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [*_quickstart_runs(store), _wide_run(store)]
    out = _at(monkeypatch, 80, "compare", *ids, "--store", store)
    assert out.exit_code == 0, out.output
    assert "…" not in out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ids
    rows = {x.split()[0]: x.split()[1:] for x in lines[1:] if x.strip() and x[0] != " "}
    assert rows["status"] == ["finished", "finished", "finished", "failed"]
    assert rows["config/lr"] == ["0.05", "0.1", "0.15", "—"]
    assert rows["train/step_ms"] == ["1.23457e+08"] * 3 + ["—"]


def test_a_real_terminal_of_80_columns(store: str) -> None:
    """``tracker ls`` in a pseudo-terminal sized 80 columns: the width comes from the
    terminal itself, not from a test hook."""
    ids = [*_quickstart_runs(store, n=1), _wide_run(store)]
    env = python_env(TERM="xterm", TRACKER_QUIET="1")
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 80, 0, 0))
    proc = subprocess.Popen(
        [PYTHON, "-m", "tracker.cli", "ls", "--store", store],
        stdin=follower, stdout=follower, stderr=follower, env=env,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            proc.kill()
            raise AssertionError("no output from tracker ls in a terminal")
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closes when the process exits
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode()).replace("\r", "")
    lines = text.splitlines()
    assert "…" not in text
    table = [line for line in lines if not line.startswith("left out")]
    assert all(len(line.rstrip()) <= 80 for line in table), text
    for run_id in ids:
        assert any(line.startswith(run_id) for line in lines)
    assert any(line.startswith("left out to fit a terminal of 80 columns:") for line in lines)


# -- piped: nothing cut -----------------------------------------------------------------------


def test_piped_output_cuts_nothing_whatever_COLUMNS_says(store: str) -> None:
    ids = _build(store)
    long_text = "word " * 60 + "END"
    with tracker.init_run(
        "vision", name=LONG_NAME, config={"note": long_text, "lr": 0.5}, store=store,
        system_metrics=False, mode="sync",
    ) as run:  # fmt: skip
        run["eval/summary"] = long_text
        run.log({"x": 1.0})
    narrow = CliRunner(env={"COLUMNS": "40"})

    show = narrow.invoke(main, ["show", run.id, "--store", store])
    assert show.exit_code == 0, show.output
    (line,) = [x for x in show.output.splitlines() if x.startswith("eval/summary")]
    assert line.split(None, 1)[1].rstrip() == long_text.strip()
    assert "…" not in show.output

    ls = narrow.invoke(main, ["ls", "--store", store])
    (line,) = [x for x in ls.output.splitlines() if x.startswith(run.id)]
    assert LONG_NAME in line and long_text.strip() in line and "left out" not in ls.output

    compare = narrow.invoke(main, ["compare", run.id, ids["base"], "--store", store])
    (line,) = [x for x in compare.output.splitlines() if x.startswith("config/note")]
    assert long_text.strip() in line

    gc = narrow.invoke(main, ["gc", "--tag", "baseline", "--dry-run", "--store", store])
    (line,) = [x for x in gc.output.splitlines() if x.startswith(ids["base"])]
    assert line.rstrip().endswith(f"keep: fork parent of {ids['fork']}, which is not being deleted")


def test_show_full_prints_numbers_exactly(store: str) -> None:
    with tracker.init_run(
        "p", config={"lr": 0.1 + 0.2}, store=store, system_metrics=False, mode="sync"
    ) as run:
        run.log({"big": 123456789.5})
        run.log({"big": 123456789.25})
    short = _cli("show", run.id, "--store", store).output
    (line,) = [x for x in short.splitlines() if x.startswith("big")]
    assert line.split()[1:5] == ["2", "1.23457e+08", "1.23457e+08", "1.23457e+08"]
    assert "config/lr" in short and "0.3" in short.split()

    full = _cli("show", run.id, "--full", "--store", store).output
    (line,) = [x for x in full.splitlines() if x.startswith("big")]
    assert line.split()[1:5] == ["2", "123456789.25", "123456789.25", "123456789.5"]
    (lr,) = [x for x in full.splitlines() if x.startswith("config/lr")]
    assert lr.split()[1] == "0.30000000000000004"


# -- --json ----------------------------------------------------------------------------------


def test_ls_json_is_one_strict_document(store: str) -> None:
    ids = _build(store)
    with tracker.init_run(
        "odd", name="nan", config={"lr": math.nan, "opt": {"beta": math.inf}}, store=store,
        system_metrics=False, mode="sync",
    ) as odd:  # fmt: skip
        odd.log({"x": 1.0})
    doc = _json(_cli("ls", "--json", "--store", store))
    assert [r["id"] for r in doc] == [odd.id, ids["nlp"], ids["fork"], ids["other"], ids["base"]]
    base = next(r for r in doc if r["id"] == ids["base"])
    assert base["name"] == "base" and base["project"] == "vision"
    assert base["status"] == "finished" and base["tags"] == ["baseline"]
    assert base["config"] == {"lr": 0.1, "opt": {"name": "adam"}, "batch": 32}  # nested
    assert base["ended_at"] >= base["created_at"] > 1e9
    assert base["duration_s"] == pytest.approx(base["ended_at"] - base["created_at"])
    fork = next(r for r in doc if r["id"] == ids["fork"])
    assert fork["parent_id"] == ids["base"]
    assert doc[0]["config"] == {"lr": "NaN", "opt": {"beta": "Infinity"}}

    failed = _json(_cli("ls", "--json", "--status", "failed", "--store", store))
    assert [r["id"] for r in failed] == [ids["other"]]
    assert len(_json(_cli("ls", "--json", "--limit", "2", "--store", store))) == 2
    assert _json(_cli("ls", "--json", "--tag", "nope", "--store", store)) == []


def test_ls_json_takes_every_run_unless_limited(store: str) -> None:
    for i in range(55):
        tracker.init_run("many", name=f"r{i}", store=store, system_metrics=False).close()
    assert len(_json(_cli("ls", "--json", "--store", store))) == 55
    table = _cli("ls", "--store", store).output
    assert "showing 50 of 55 runs" in table


def test_show_json_has_metadata_fields_and_series_stats(store: str) -> None:
    ids = _build(store)
    doc = _json(_cli("show", ids["other"], "--json", "--store", store))
    run = doc["run"]
    assert run["id"] == ids["other"] and run["name"] == "other" and run["status"] == "failed"
    assert run["project"] == "vision" and run["tags"] == ["sweep"] and run["children"] == []
    assert run["duration_s"] == pytest.approx(run["ended_at"] - run["created_at"])
    assert doc["fields"]["config/lr"] == 0.01 and doc["fields"]["config/opt/name"] == "adam"
    stats = {(s["path"], s["rank"]): s for s in doc["series"]}
    assert set(stats) == {("train/loss", 0), ("train/loss", 1)}
    assert stats[("train/loss", 0)] == {
        "path": "train/loss", "rank": 0, "count": 30, "last": 2.0 / 30, "min": 2.0 / 30,
        "max": 2.0,
    }  # fmt: skip
    assert {k: stats[("train/loss", 1)][k] for k in ("count", "last", "min", "max")} == {
        "count": 2, "last": 4.0, "min": 4.0, "max": 5.0,
    }  # fmt: skip

    with tracker.init_run("odd", store=store, system_metrics=False, mode="sync") as odd:
        odd.log({"x": math.nan})
        odd.log({"x": math.inf})
        odd["text/log"].append("hello")
    doc = _json(_cli("show", odd.id, "--json", "--store", store))
    stats = {s["path"]: s for s in doc["series"]}
    assert stats["x"]["last"] == "Infinity" and stats["x"]["count"] == 2
    assert stats["text/log"]["last"] == "hello" and stats["text/log"]["min"] is None


def test_compare_json_has_config_differences_and_final_metrics(store: str) -> None:
    ids = _build(store)
    base, other = ids["base"], ids["other"]
    doc = _json(_cli("compare", base, other, "--json", "--store", store))
    assert [(r["id"], r["name"], r["status"]) for r in doc["runs"]] == [
        (base, "base", "finished"),
        (other, "other", "failed"),
    ]
    assert doc["config"]["config/lr"] == {base: 0.1, other: 0.01}
    assert doc["config"]["config/opt/name"] == {base: "adam", other: "adam"}
    assert doc["config"]["config/batch"] == {base: 32}  # other has no batch
    assert doc["config_differs"] == ["config/batch", "config/lr", "config/wd"]
    assert doc["metrics"]["train/loss"] == {base: 0.02, other: 2.0 / 30}
    assert doc["metrics"]["train/acc"] == {base: 0.98}


def test_json_warnings_go_to_stderr(store: str) -> None:
    _build(store)
    offline = tracker.init_run("vision", mode="offline", store=store, system_metrics=False)
    offline.log({"loss": 1.0})
    offline.close()
    out = _cli("ls", "--json", "--store", store)
    assert len(_json(out)) == 4
    assert "1 journal waits for `tracker sync" in out.stderr


# -- ls hints --------------------------------------------------------------------------------


def test_ls_after_an_offline_run_points_at_tracker_sync(store: str) -> None:
    offline = tracker.init_run("p", name="off", mode="offline", store=store, system_metrics=False)
    for i in range(3):
        offline.log({"loss": float(i)})
    offline.close()
    out = _cli("ls", "--store", store)
    assert out.exit_code == 0, out.output
    root = Path(store).resolve()
    assert f"no runs in {root}" in out.output
    assert f"1 journal waits for `tracker sync --store {root}` to apply it" in out.output
    assert "1 run not listed until then" in out.output
    assert _cli("sync", "--store", store).exit_code == 0
    after = _cli("ls", "--store", store).output
    assert offline.id in after and "journal" not in after


# -- show --path ------------------------------------------------------------------------------


def test_show_path_filters_fields_and_series(store: str) -> None:
    ids = _build(store)
    out = _cli("show", ids["base"], "--path", "train/*", "--store", store)
    assert out.exit_code == 0, out.output
    series = out.output.split("\nseries\n")[1]
    assert [x.split()[0] for x in series.splitlines()[1:] if x.strip()] == [
        "train/acc",
        "train/loss",
    ]
    assert "\nfields\n" not in out.output and "config/lr" not in out.output
    assert ids["base"] in out.output.splitlines()[0]  # the run's header is still there

    both = _cli("show", ids["base"], "--path", "config/*", "--path", "*note", "--store", store)
    paths = [x.split()[0] for x in both.output.split("\nfields\n")[1].splitlines()[1:] if x]
    assert paths == ["config/batch", "config/lr", "config/opt/name", "eval/note"]
    assert "\nseries\n" not in both.output

    doc = _json(_cli("show", ids["other"], "--path", "train/*", "--json", "--store", store))
    assert doc["fields"] == {}
    assert [(s["path"], s["rank"]) for s in doc["series"]] == [("train/loss", 0), ("train/loss", 1)]

    none = _cli("show", ids["base"], "--path", "nothing/*", "--store", store)
    assert none.exit_code == 0 and "no field or series path matches nothing/*" in none.output


# -- runs by name ------------------------------------------------------------------------------


def test_runs_by_name_in_show_compare_and_export(store: str) -> None:
    ids = _build(store)
    assert ids["base"] in _cli("show", "base", "--store", store).output.splitlines()[0]
    assert ids["nlp"] in _cli("show", "nlp/bert", "--store", store).output.splitlines()[0]
    doc = _json(_cli("compare", "base", "vision/other", "--json", "--store", store))
    assert [r["id"] for r in doc["runs"]] == [ids["base"], ids["other"]]
    export = _cli("export", "other", "-f", "csv", "--store", store)
    assert export.exit_code == 0, export.output
    assert ids["other"] in export.stdout and ids["base"] not in export.stdout

    # A second "base", in another project: the bare name is ambiguous, project/name is not.
    again = tracker.init_run("nlp", name="base", store=store, system_metrics=False)
    again.close()
    out = _cli("show", "base", "--store", store)
    assert out.exit_code == 1
    assert "run name 'base' is ambiguous" in out.output
    assert ids["base"] in out.output and again.id in out.output and "Traceback" not in out.output
    assert "ambiguous" in _cli("export", "base", "--store", store).output
    assert ids["base"] in _cli("show", "vision/base", "--store", store).output.splitlines()[0]
    by_project = _cli("show", "base", "--project", "nlp", "--store", store)
    assert again.id in by_project.output.splitlines()[0]


def test_ids_and_latest_take_precedence_over_names(store: str) -> None:
    ids = _build(store)
    st = Store(store)
    # A run named like another run's id, and one named "latest".
    impostor = tracker.init_run("x", name=ids["base"], store=store, system_metrics=False)
    impostor.close()
    late = tracker.init_run("x", name="latest", store=store, system_metrics=False)
    late.close()
    newest = tracker.init_run("x", name="newest", store=store, system_metrics=False)
    newest.close()
    assert lookup.resolve_run_id(st, ids["base"]) == ids["base"]
    assert lookup.resolve_run_id(st, ids["base"][:6]) == ids["base"]
    assert lookup.resolve_run_id(st, "latest") == newest.id
    assert lookup.resolve_run_id(st, "newest") == newest.id
    assert lookup.resolve_run_id(st, "x/latest") == late.id
    assert lookup.resolve_run_id(st, "bert", project="nlp") == ids["nlp"]
    with pytest.raises(RunNotFoundError, match="no run 'bert' in project 'vision'"):
        lookup.resolve_run_id(st, "bert", project="vision")
    with pytest.raises(RunNotFoundError, match="not a run id, id prefix or run name"):
        lookup.resolve_run_id(st, "nobody")
