"""The ``tracker`` command: every command run through click's CliRunner on a real store,
and once as a real process (``python -m tracker.cli`` and the installed script)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import tracker
from tracker.cli import main, sparkline
from tracker.core import cleanup, doctor, lookup
from tracker.core.errors import StoreError
from tracker.core.store import Store
from tracker.rank_utils.coordinator import receive, shipment

from ..conftest import PYTHON, python_env

BARS = set("▁▂▃▄▅▆▇█")

_CRASH = """
import os, signal, sys, tracker
run = tracker.init_run("vision", name="crash", config={"lr": 0.5}, tags=["sweep"],
                       store=sys.argv[1], system_metrics=False)
for i in range(10):
    run.log({"train/loss": 1.0 - i / 10})
run.flush()
print(run.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _cli(*args: str, input: str | None = None):
    result = CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _crashed_run(store: str) -> str:
    """A run whose process was killed with SIGKILL: left 'running' with no writer."""
    proc = subprocess.run(
        [PYTHON, "-c", _CRASH, store], env=python_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr
    return proc.stdout.strip()


def _build(store: str, crashed: bool = False) -> dict[str, str]:
    """base (finished, tagged), other (failed, two ranks), fork of base, nlp; maybe crash."""
    ids = {}
    base = tracker.init_run(
        "vision",
        name="base",
        config={"lr": 0.1, "opt": {"name": "adam"}, "batch": 32},
        tags=["baseline"],
        store=store,
        system_metrics=False,
    )
    for i in range(50):
        base.log({"train/loss": 1.0 / (i + 1), "train/acc": i / 50})
    base["eval/note"] = "hello"
    base["text/log"].append("epoch one")
    base.close()
    ids["base"] = base.id

    other = tracker.init_run(
        "vision",
        name="other",
        config={"lr": 0.01, "opt": {"name": "adam"}, "wd": 1e-4},
        tags=["sweep"],
        store=store,
        system_metrics=False,
    )
    for i in range(30):
        other.log({"train/loss": 2.0 / (i + 1)})
    # What rank 1 of a two-rank job ships, received as rank 0's gatherer receives it.
    shipped = shipment([(0, 0.0, {"train/loss": 5.0}), (1, 0.0, {"train/loss": 4.0})], 1)
    receive(other, 1, shipped)
    other.close("failed")
    ids["other"] = other.id

    fork = tracker.init_run(
        "vision", name="fork", fork_from=(base.id, 20), store=store, system_metrics=False
    )
    for step in range(21, 40):
        fork.log({"train/loss": 0.5}, step=step)
    fork.close()
    ids["fork"] = fork.id

    nlp = tracker.init_run(
        "nlp", name="bert", config={"lr": 3e-5}, store=store, system_metrics=False
    )
    nlp.log({"loss": 3.0})
    nlp.close()
    ids["nlp"] = nlp.id
    if crashed:
        ids["crash"] = _crashed_run(store)
    return ids


def _listed(store: str) -> set[str]:
    return {r["id"] for r in tracker.list_runs(store=store)}


# -- ls, show, compare -------------------------------------------------------------------


def test_ls_lists_runs_and_filters(store: str) -> None:
    ids = _build(store)
    out = _cli("ls", "--store", store)
    assert out.exit_code == 0, out.output
    for run_id in ids.values():
        assert run_id in out.output
    for text in ("base", "other", "fork", "bert", "finished", "failed", "baseline", "vision"):
        assert text in out.output
    assert "lr" in out.output and "0.01" in out.output and "3e-05" in out.output

    only_nlp = _cli("ls", "--project", "nlp", "--store", store).output
    assert ids["nlp"] in only_nlp and ids["base"] not in only_nlp
    failed = _cli("ls", "--status", "failed", "--store", store).output
    assert ids["other"] in failed and ids["base"] not in failed
    both = _cli("ls", "--status", "failed,finished", "--project", "vision", "--store", store).output
    assert {ids["base"], ids["other"], ids["fork"]} <= set(both.split())
    tagged = _cli("ls", "--tag", "baseline", "--store", store).output
    assert ids["base"] in tagged and ids["fork"] not in tagged
    limited = _cli("ls", "--limit", "1", "--store", store).output
    assert "showing 1 of 4 runs" in limited
    assert "no runs match" in _cli("ls", "--tag", "nope", "--store", store).output
    bad = _cli("ls", "--status", "done", "--store", store)
    assert bad.exit_code == 2 and "statuses are" in bad.output


def test_show_prints_fields_tags_and_series_with_sparklines(store: str) -> None:
    ids = _build(store)
    out = _cli("show", ids["base"], "--store", store)
    assert out.exit_code == 0, out.output
    text = out.output
    assert ids["base"] in text and "(base)" in text and "finished" in text
    assert "baseline" in text and f"forks     {ids['fork']}" in text
    assert "config/lr" in text and "0.1" in text and "config/opt/name" in text and "adam" in text
    assert "eval/note" in text and "hello" in text and "sys/python/version" in text
    # config is listed before the other groups
    assert text.index("config/lr") < text.index("eval/note") < text.index("sys/python")
    loss = next(line for line in text.splitlines() if line.startswith("train/loss"))
    assert loss.split()[1:5] == ["50", "0.02", "0.02", "1"]  # count, last, min, max
    assert set(loss.split()[5]) <= BARS and len(loss.split()[5]) >= 10
    assert loss.split()[5][0] == "█" and loss.split()[5][-1] == "▁"  # loss goes down
    acc = next(line for line in text.splitlines() if line.startswith("train/acc"))
    assert acc.split()[5][0] == "▁" and acc.split()[5][-1] == "█"
    assert "epoch one" in next(line for line in text.splitlines() if line.startswith("text/log"))
    assert "rank" not in text.split("series")[-1].splitlines()[1]  # one rank: no column


def test_show_ranks_fork_latest_and_prefix(store: str) -> None:
    ids = _build(store)
    other = _cli("show", ids["other"], "--store", store).output
    assert "failed" in other
    rows = [line.split() for line in other.splitlines() if line.startswith("train/loss")]
    assert [r[1:3] for r in rows] == [["0", "30"], ["1", "2"]]  # rank, count
    assert rows[1][3:6] == ["4", "4", "5"]  # rank 1: last, min, max
    assert all(set(r[6]) <= BARS for r in rows)

    fork = _cli("show", ids["fork"], "--store", store).output
    assert f"forked from  {ids['base']} at step 20" in fork
    loss = next(line for line in fork.splitlines() if line.startswith("train/loss"))
    assert loss.split()[1:3] == ["40", "0.5"]  # 21 inherited points + 19 of its own
    acc = next(line for line in fork.splitlines() if line.startswith("train/acc"))
    assert acc.split()[1] == "21"

    latest = _cli("show", "latest", "--store", store).output
    assert f"run       {ids['nlp']}" in latest
    latest_vision = _cli("show", "latest", "--project", "vision", "--store", store).output
    assert ids["fork"] in latest_vision.splitlines()[0]
    by_prefix = _cli("show", ids["other"][:7], "--store", store).output
    assert ids["other"] in by_prefix.splitlines()[0]
    missing = _cli("show", "nosuchrun", "--store", store)
    assert missing.exit_code == 1 and "no run 'nosuchrun'" in missing.output
    assert "Traceback" not in missing.output


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([2.0, 2.0]) == "▄▄"
    assert sparkline([0.0, math.nan, 1.0]) == "▁ █"
    assert sparkline([]) == "" and sparkline([math.nan]) == ""


def test_compare_shows_config_differences_and_final_metrics(store: str) -> None:
    ids = _build(store)
    out = _cli("compare", ids["base"], ids["other"], "--store", store)
    assert out.exit_code == 0, out.output
    rows = {line.split()[0]: line.split()[1:] for line in out.output.splitlines() if line.strip()}
    assert ids["base"] in out.output.splitlines()[0] and ids["other"] in out.output.splitlines()[0]
    assert rows["status"] == ["finished", "failed"]
    assert rows["config/lr"] == ["0.1", "0.01"]
    assert rows["config/batch"] == ["32", "—"]
    assert rows["config/wd"] == ["—", "0.0001"]
    assert "config/opt/name" not in rows  # equal in both
    assert "1 config value(s) equal in every run" in out.output
    assert rows["train/loss"] == ["0.02", "0.0666667"]  # last value of rank 0
    assert rows["train/acc"] == ["0.98", "—"]

    everything = _cli("compare", ids["base"], ids["other"], ids["fork"], "--all", "--store", store)
    rows = {r.split()[0]: r.split()[1:] for r in everything.output.splitlines() if r.strip()}
    assert rows["config/opt/name"] == ["adam", "adam", "—"]
    assert rows["train/loss"][2] == "0.5" and rows["train/acc"][2] == "0.4"  # fork: inherited

    alone = _cli("compare", ids["base"], "--store", store)
    assert alone.exit_code == 2 and "at least two runs" in alone.output


# -- export --------------------------------------------------------------------------------


def _expected_points(store: str, run_id: str) -> dict[tuple[str, int], list[tuple[int, float]]]:
    r = tracker.read_run(run_id, store=store)
    out = {}
    for s in r.series_summary():
        v = r[s["path"]].fetch_values(rank=s["rank"])
        out[(s["path"], s["rank"])] = list(zip(v.step.tolist(), v.value.tolist(), strict=True))
    return out


def test_export_csv_has_every_point_and_field(store: str, tmp_path: Path) -> None:
    ids = _build(store)
    target = tmp_path / "other.csv"
    out = _cli("export", ids["other"], "--format", "csv", "--output", str(target), "--store", store)
    assert out.exit_code == 0, out.output
    assert "32 points in 2 series" in out.output
    with open(target, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run", "path", "rank", "step", "value", "timestamp"]
    fields = {r["path"]: r["value"] for r in rows if r["step"] == ""}
    assert fields["config/lr"] == "0.01" and fields["config/opt/name"] == "adam"
    got: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for r in rows:
        if r["step"] != "":
            got.setdefault((r["path"], int(r["rank"])), []).append(
                (int(r["step"]), float(r["value"]))
            )
            assert float(r["timestamp"]) > 1e9 or r["rank"] == "1"  # rank 1's came as 0.0
    assert got == _expected_points(store, ids["other"])  # exact float round trip

    # to stdout, format from the default; a fork exports its inherited points too
    fork = _cli("export", ids["fork"], "--store", store)
    fork_rows = list(csv.DictReader(io.StringIO(fork.stdout)))
    assert len([r for r in fork_rows if r["path"] == "train/loss"]) == 40


def test_export_json_is_strict_and_complete(store: str, tmp_path: Path) -> None:
    ids = _build(store)
    with tracker.init_run("vision", store=store, system_metrics=False) as odd:
        odd.log({"x": math.nan})
        odd.log({"x": math.inf})
        odd.log({"x": 1.5})
    out = _cli("export", odd.id, "-f", "json", "--store", store)
    assert out.exit_code == 0, out.output

    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    doc = json.loads(out.stdout, parse_constant=refuse)
    series = doc["runs"][0]["series"]
    assert [p["value"] for p in series if p["path"] == "x"] == ["NaN", "Infinity", 1.5]
    # The NaN's event is exported with the run, as a point of sys/events.
    (event,) = [json.loads(p["value"]) for p in series if p["path"] == "sys/events"]
    assert (event["kind"], event["path"], event["step"]) == ("nonfinite", "x", 0)

    target = tmp_path / "base.json"
    _cli("export", ids["base"], "-o", str(target), "--store", store)  # format from the suffix
    doc = json.loads(target.read_text())["runs"][0]
    assert doc["run"]["id"] == ids["base"] and doc["run"]["tags"] == ["baseline"]
    assert doc["fields"]["config/lr"] == 0.1 and doc["fields"]["eval/note"] == "hello"
    got: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for p in doc["series"]:
        got.setdefault((p["path"], p["rank"]), []).append((p["step"], p["value"]))
    assert got == _expected_points(store, ids["base"])


def test_export_parquet(store: str, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    ids = _build(store)
    target = tmp_path / "base.parquet"
    out = _cli("export", ids["base"], "-f", "parquet", "-o", str(target), "--store", store)
    assert out.exit_code == 0, out.output
    df = pd.read_parquet(target)
    assert list(df.columns) == ["run", "path", "rank", "step", "value", "text", "timestamp"]
    points = df[df["step"].notna()]
    got: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for row in points.itertuples():
        value = row.text if isinstance(row.text, str) else row.value
        got.setdefault((row.path, int(row.rank)), []).append((int(row.step), value))
    assert got == _expected_points(store, ids["base"])
    fields = df[df["step"].isna()].set_index("path")
    assert fields.loc["config/lr", "value"] == 0.1 and fields.loc["eval/note", "text"] == "hello"
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(target).metadata[b"tracker.runs"])[0]
    assert meta["id"] == ids["base"] and meta["status"] == "finished"


def test_export_parquet_without_pyarrow_names_the_install(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _build(store)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    out = _cli(
        "export", ids["base"], "-f", "parquet", "-o", str(tmp_path / "x.parquet"), "--store", store
    )
    assert out.exit_code == 1
    assert "pip install pyarrow" in out.output and "Traceback" not in out.output
    assert not (tmp_path / "x.parquet").exists()


# -- gc --------------------------------------------------------------------------------------


def test_gc_dry_run_deletes_nothing(store: str) -> None:
    ids = _build(store, crashed=True)
    before = tracker.list_runs(store=store)
    out = _cli("gc", "--status", "failed,crashed", "--dry-run", "--store", store)
    assert out.exit_code == 0, out.output
    listed = {
        line.split()[0] for line in out.output.splitlines()[1:] if line.split()[-1] == "delete"
    }
    assert listed == {ids["other"], ids["crash"]}
    assert "crashed" in out.output
    assert "dry run: 2 run(s) (42 points) would be deleted; nothing was deleted" in out.output
    assert tracker.list_runs(store=store) == before
    assert Store(store).journal_dir(ids["other"]).is_dir()


def test_gc_yes_deletes_exactly_the_listed_runs(store: str) -> None:
    ids = _build(store, crashed=True)
    st = Store(store)
    dry = _cli("gc", "--status", "failed", "--status", "crashed", "--dry-run", "--store", store)
    listed = {
        line.split()[0] for line in dry.output.splitlines()[1:] if line.split()[-1] == "delete"
    }
    out = _cli("gc", "--status", "failed,crashed", "--yes", "--store", store)
    assert out.exit_code == 0, out.output
    deleted = {
        line.split()[1].rstrip(":")
        for line in out.output.splitlines()
        if line.startswith("deleted ") and "series" in line
    }
    assert deleted == listed == {ids["other"], ids["crash"]}
    assert f"journal {st.journal_dir(ids['crash'])}" in out.output
    assert _listed(store) == {ids["base"], ids["fork"], ids["nlp"]}
    conn = st.connection()
    for run_id in deleted:
        assert not st.journal_dir(run_id).exists()
        for table in ("runs", "tags", "fields", "series", "applied"):
            assert conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE run_id=?", (run_id,)
            ).fetchone() == (0,)
    orphans = conn.execute(
        "SELECT COUNT(*) FROM chunks WHERE series_id NOT IN (SELECT series_id FROM series)"
    )
    assert orphans.fetchone() == (0,)
    # what is left is untouched
    assert len(tracker.read_run(ids["fork"], store=store)["train/loss"].fetch_values()) == 40
    assert _cli("doctor", "--store", store).exit_code == 0


def test_gc_keeps_fork_parents_and_live_runs(store: str) -> None:
    ids = _build(store)
    out = _cli("gc", "--tag", "baseline", "--yes", "--store", store)
    assert out.exit_code == 0, out.output
    assert f"keep: fork parent of {ids['fork']}, which is not being deleted" in out.output
    assert "nothing to delete" in out.output and ids["base"] in _listed(store)

    live = tracker.init_run("vision", name="live", store=store, system_metrics=False)
    try:
        live.log({"x": 1.0})
        live.flush()
        out = _cli("gc", "--project", "vision", "--yes", "--store", store)
        assert "keep: a live writer holds it" in out.output
        assert _cli("doctor", "--store", store).exit_code == 0  # a live run is healthy
        assert cleanup.delete_runs(Store(store), [live.id]) == []  # skipped, not deleted
        assert {ids["base"], ids["fork"], ids["other"]}.isdisjoint(_listed(store))  # parent + child
        assert _listed(store) == {ids["nlp"], live.id}
    finally:
        live.close()
    assert tracker.read_run(live.id, store=store).status == "finished"


def test_gc_asks_first_and_needs_a_filter(store: str) -> None:
    ids = _build(store)
    no = _cli("gc", "--status", "failed", "--store", store, input="n\n")
    assert no.exit_code == 1 and "Delete 1 run(s)" in no.output and "Aborted" in no.output
    assert ids["other"] in _listed(store)
    yes = _cli("gc", "--status", "failed", "--store", store, input="y\n")
    assert yes.exit_code == 0 and f"deleted {ids['other']}" in yes.output
    assert ids["other"] not in _listed(store)

    bare = _cli("gc", "--store", store)
    assert bare.exit_code == 2 and "give at least one filter" in bare.output
    assert _cli("gc", "--older-than", "soon", "--store", store).exit_code == 2
    recent = _cli("gc", "--older-than", "30d", "--store", store)
    assert "no runs match" in recent.output and len(_listed(store)) == 3


def test_admin_functions(store: str) -> None:
    ids = _build(store)
    st = Store(store)
    assert cleanup.parse_age("30d") == 30 * 86400 and cleanup.parse_age("1.5h") == 5400
    with pytest.raises(ValueError, match="unit"):
        cleanup.parse_age("30")
    with pytest.raises(ValueError, match="at least one filter"):
        cleanup.find_runs_to_delete(st)
    with pytest.raises(StoreError, match="fork parent"):
        cleanup.delete_runs(st, [ids["base"]])
    assert ids["base"] in _listed(store)
    plan = cleanup.find_runs_to_delete(st, older_than=0, project="vision", now=1e12)
    assert [p["id"] for p in plan] == [ids["base"], ids["other"], ids["fork"]]  # oldest first
    assert all(p["keep_reason"] is None for p in plan)
    assert plan[0]["points"] == 101 and plan[0]["series"] == 3
    assert cleanup.find_runs_to_delete(st, older_than=3600) == []
    assert sorted(cleanup.delete_runs(st, [ids["fork"], ids["base"]])) == sorted(
        [ids["fork"], ids["base"]]
    )
    assert _listed(store) == {ids["other"], ids["nlp"]}
    assert lookup.resolve_run_id(st, "latest") == ids["nlp"]


# -- doctor, sync, errors ----------------------------------------------------------------


def test_doctor_passes_on_a_good_store(store: str) -> None:
    _build(store)
    out = _cli("doctor", "--store", store)
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert all(line.startswith("✓") for line in lines) and len(lines) == 9
    for name in (
        "store exists",
        "database integrity",
        "schema version",
        "writable",
        "chunk checksums",
        "records set aside",
    ):
        assert any(name in line for line in lines)
    checks = doctor.check_store(store)
    assert all(c.ok for c in checks)


def test_doctor_finds_unapplied_journal_and_sync_applies_it(store: str) -> None:
    ids = _build(store)
    offline = tracker.init_run(
        "vision", name="off", mode="offline", store=store, system_metrics=False
    )
    for i in range(5):
        offline.log({"loss": float(i)})
    offline.close()
    assert offline.id not in _listed(store)
    out = _cli("doctor", "--store", store)
    assert out.exit_code == 1
    bad = [line for line in out.output.splitlines() if line.startswith("✗")]
    assert len(bad) == 1 and "journals applied" in bad[0] and offline.id in bad[0]
    assert "tracker sync" in bad[0]

    synced = _cli("sync", "--store", store)
    assert synced.exit_code == 0 and f"synced {offline.id}" in synced.output
    assert "finished" in synced.output and ids["base"] not in synced.output
    assert _cli("doctor", "--store", store).exit_code == 0
    assert offline.id in _listed(store)
    assert len(tracker.read_run(offline.id, store=store)["loss"].fetch_values()) == 5
    again = _cli("sync", "--store", store)
    assert "nothing to sync" in again.output


def test_doctor_names_a_crashed_run_and_sync_records_it(store: str) -> None:
    _build(store)
    crashed = _crashed_run(store)
    out = _cli("doctor", "--store", store)
    assert out.exit_code == 1
    bad = [line for line in out.output.splitlines() if line.startswith("✗")]
    assert len(bad) == 1 and "running runs" in bad[0] and crashed in bad[0]
    synced = _cli("sync", "--store", store)
    assert f"synced {crashed}: its writer is gone, recorded as crashed" in synced.output
    assert _cli("doctor", "--store", store).exit_code == 0
    assert tracker.read_run(crashed, store=store).status == "crashed"


def test_doctor_flags_a_journal_segment_that_is_not_one(store: str) -> None:
    ids = _build(store)
    bogus = Store(store).journal_dir(ids["base"]) / "00000000000000000001-1.jnl"
    bogus.write_bytes(b"PK\x03\x04 a zip file, not a journal")
    out = _cli("doctor", "--store", store)
    assert out.exit_code == 1
    bad = [line for line in out.output.splitlines() if line.startswith("✗")]
    assert len(bad) == 1 and "journals readable" in bad[0]
    assert f"{bogus}: not a tracker journal" in bad[0]


def test_doctor_and_commands_on_a_corrupted_database(store: str) -> None:
    _build(store)
    Store(store).close()
    db = Path(store) / "store.db"
    for extra in ("store.db-wal", "store.db-shm"):
        (Path(store) / extra).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 500)
    out = _cli("doctor", "--store", store)
    assert out.exit_code == 1
    assert "✗ database integrity" in out.output and "not a database" in out.output
    ls = _cli("ls", "--store", store)
    assert ls.exit_code == 1 and "not a database" in ls.output and "Traceback" not in ls.output


def test_missing_store_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = str(tmp_path / "nowhere")
    for args in (["ls"], ["show", "latest"], ["compare", "a", "b"], ["export", "a"],
                 ["gc", "--status", "failed"], ["sync"]):  # fmt: skip
        out = _cli(*args, "--store", nowhere)
        assert out.exit_code == 1, (args, out.output)
        assert out.output.strip() == (
            f"Error: no tracker store at {nowhere} (given by --store; no store.db there): "
            "point tracker at a store directory with --store PATH or the TRACKER_STORE "
            "environment variable"
        )
    doctor = _cli("doctor", "--store", nowhere)
    assert doctor.exit_code == 1 and "✗ store exists" in doctor.output
    assert not Path(nowhere).exists()  # looking never creates a store

    # Without --store: $TRACKER_STORE
    store = str(tmp_path / "env-store")
    ids = _build(store)
    monkeypatch.setenv("TRACKER_STORE", store)
    assert ids["base"] in _cli("ls").output
    monkeypatch.delenv("TRACKER_STORE")
    monkeypatch.chdir(tmp_path)
    out = _cli("ls")
    assert out.exit_code == 1
    assert f"no tracker store at {tmp_path / '.tracker'} (the default, ./.tracker;" in out.output
    assert "--store PATH" in out.output and "TRACKER_STORE" in out.output
    monkeypatch.setenv("TRACKER_STORE", nowhere)
    assert f"at {nowhere} (from $TRACKER_STORE;" in _cli("ls").output


def test_version() -> None:
    out = _cli("--version")
    assert out.exit_code == 0 and out.output.strip() == f"tracker, version {tracker.__version__}"


# -- as a real process ---------------------------------------------------------------------


def _run_cli(command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args],
        env=python_env(COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _check_process(command: list[str], store: str, ids: dict[str, str]) -> None:
    ls = _run_cli(command, "ls", "--store", store)
    assert ls.returncode == 0, ls.stderr
    assert all(run_id in ls.stdout for run_id in ids.values())
    show = _run_cli(command, "show", ids["base"], "--store", store)
    assert show.returncode == 0, show.stderr
    assert "config/lr" in show.stdout and "train/loss" in show.stdout
    assert BARS & set(show.stdout)
    missing = _run_cli(command, "ls", "--store", store + "-missing")
    assert missing.returncode == 1 and missing.stdout == ""
    assert (
        missing.stderr.startswith("Error: no tracker store") and "Traceback" not in missing.stderr
    )


def test_python_dash_m(store: str) -> None:
    _check_process([PYTHON, "-m", "tracker.cli"], store, _build(store))


def test_console_script(store: str) -> None:
    script = Path(sys.executable).parent / "tracker"
    if not script.exists():
        pytest.skip(f"no installed tracker script next to {sys.executable} (pip install -e .)")
    _check_process([str(script)], store, _build(store))
    assert os.access(script, os.X_OK)


def test_import_is_light() -> None:
    code = "import sys, tracker.cli; print(sorted(m for m in ('pandas', 'pyarrow', 'torch') if m in sys.modules))"
    proc = subprocess.run(
        [PYTHON, "-c", code], env=python_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_sqlite_rows_of_deleted_runs_do_not_come_back_from_journals(store: str) -> None:
    ids = _build(store)
    _cli("gc", "--status", "failed", "--yes", "--store", store)
    with pytest.raises(tracker.RunNotFoundError):
        tracker.read_run(ids["other"], store=store)
    assert _cli("sync", "--store", store).exit_code == 0
    assert ids["other"] not in _listed(store)
    with sqlite3.connect(Path(store) / "store.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (3,)


def test_piped_tables_cut_nothing(store: str) -> None:
    """Not on a terminal (a pipe, a CI log) a table takes the width its content needs."""
    config = {f"parameter_number_{i}": 1000 + i for i in range(12)}
    tags = ["a-rather-long-tag-that-80-columns-would-fold", "baseline"]
    with tracker.init_run(
        project="wide",
        name="a-long-run-name-for-the-table",
        tags=tags,
        config=config,
        store=store,
        system_metrics=False,
    ) as run:
        run.log({"loss": 123456789.5})
    out = _cli("ls", "--store", store)
    assert out.exit_code == 0, out.output
    (line,) = [x for x in out.output.splitlines() if run.id in x]
    for text in (*tags, "a-long-run-name-for-the-table", "finished"):
        assert text in line, text
    # The config columns ls chooses (three), each header on one line and each value whole.
    header = out.output.splitlines()[0]
    shown = [name for name in config if name in header]
    assert len(shown) == 3
    for name in shown:
        assert str(config[name]) in line, name
