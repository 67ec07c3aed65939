"""The PostgreSQL store against a real server (a throwaway cluster, ``postgres_cluster``).

The contract test writes the same runs through tracker's own API into a PostgreSQL
database and into a SQLite store directory, and reads both back identically; the others
test what only a shared database has to promise: replays store points once, processes
applying one run's batches at the same time store each once, several processes starting
together migrate once, a store reopened reads the same.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tracker
from tracker.core.errors import StoreError
from tracker.core.stores import open_store
from tracker.core.stores.base import TokenRecord, chunk_problem

from ..conftest import PYTHON, python_env
from . import postgres_cluster

# The fixtures of the throwaway cluster (a session's cluster, a database per test).
postgres_url = postgres_cluster.postgres_url
pg_store_url = postgres_cluster.pg_store_url

pytest.importorskip("psycopg")
from tracker.core.stores.postgres import PostgresStore, check_postgres, safe_url  # noqa: E402
from tracker.core.stores.postgres_schema import SCHEMA_VERSION  # noqa: E402

# -- the contract: the same script, the same reads, on both stores ---------------------------


def _write_runs(store: str, mode: str) -> None:
    """Runs written through tracker's API: series, fields, tags, a fork, a resume."""
    config = {"lr": 0.001, "layers": 3, "act": "gelu", "flag": True, "sizes": [4, 8]}
    run = tracker.init_run(
        "proj",
        name="base",
        run_id="base0001",
        tags=["b", "a"],
        config=config,
        store=store,
        mode=mode,
        system_metrics=False,
        quiet=True,
    )
    for step in range(300):
        run.log({"train/loss": 1.0 / (step + 1), "train/acc": step / 300})
        if step % 50 == 0:
            run.log({"eval/loss": 2.0 / (step + 1), "eval/note": f"at {step}"}, step=step)
    run["summary/best"] = 0.25
    run["summary/nan"] = math.nan
    run["summary/none"] = None
    run["summary/text"] = "done ✓"
    run["train/loss"].append(0.5, step=10)  # a repeated, lower step: stored too
    run.add_tags("c")
    run.remove_tags("b")
    run.close()

    child = tracker.init_run(
        "proj",
        name="child",
        run_id="child001",
        fork_from=("base0001", 100),
        store=store,
        mode=mode,
        system_metrics=False,
        quiet=True,
    )
    for step in range(101, 161):
        child.log({"train/loss": 10.0 + step}, step=step)
    child.close(status="failed", error="boom")

    again = tracker.init_run(
        "proj",
        run_id="base0001",
        resume_from_step=200,
        store=store,
        mode=mode,
        system_metrics=False,
        quiet=True,
    )
    for step in range(201, 251):
        again.log({"train/loss": -1.0 * step})
    again.close()


def _read_back(store: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    listed = tracker.list_runs(project="proj", store=store)
    out["listed"] = sorted(
        (r["name"] or "", r["status"], sorted(r["tags"]), json.dumps(r["config"], sort_keys=True))
        for r in listed
    )
    out["by_config"] = sorted(
        r["id"] for r in tracker.list_runs("proj", store=store, config={"lr": 0.001})
    )
    out["by_int"] = sorted(
        r["id"] for r in tracker.list_runs("proj", store=store, config={"layers": 3.0})
    )
    out["by_tag"] = sorted(r["id"] for r in tracker.list_runs("proj", tags=["c"], store=store))
    out["failed"] = sorted(r["id"] for r in tracker.list_runs("proj", status="failed", store=store))
    for rid in ("base0001", "child001"):
        r = tracker.read_run(rid, store=store)
        doc: dict[str, Any] = {
            "status": r.status,
            "tags": r.tags,
            "fields": {k: repr(v) for k, v in r.fields().items()},
            "series": [{k: repr(v) for k, v in s.items()} for s in r.series_summary()],
        }
        for path, _rank in r.series_keys():
            values = r[path].fetch_values()
            doc[path] = (values.step.tolist(), [repr(v) for v in values.value.tolist()])
            every = r[path].fetch_values(include_superseded=True)
            doc[path + "+all"] = (every.step.tolist(), [repr(v) for v in every.value.tolist()])
            if values.value.dtype != object:
                b = r[path].fetch_values(buckets=7)
                doc[path + "@7"] = [
                    np.asarray(getattr(b, f)).tolist() for f in ("count", "min", "max")
                ]
        out[rid] = doc
    return out


@pytest.mark.filterwarnings("ignore:tracker. step 10 of 'train/loss' is lower:RuntimeWarning")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_contract_postgres_reads_as_sqlite(
    pg_store_url: str,
    tmp_path: Path,
    mode: str,
) -> None:
    directory = str(tmp_path / "sqlite-store")
    _write_runs(directory, mode)
    _write_runs(pg_store_url, mode)
    want, got = _read_back(directory), _read_back(pg_store_url)
    assert got == want
    # And the data itself is what was written (not two equal mistakes).
    base = got["base0001"]
    assert base["status"] == "finished" and base["tags"] == ["a", "c"]
    steps, _ = base["train/loss"]
    assert steps[:3] == [0, 1, 2] and steps[-1] == 250 and steps.count(10) == 2
    assert got["child001"]["status"] == "failed"
    assert got["by_int"] == ["base0001"] and got["by_config"] == ["base0001"]
    # Every chunk is sound, and each names its attempt.
    st = open_store(pg_store_url, create=False, readonly=True)
    chunks = list(st.all_chunks())
    assert chunks and all(
        chunk_problem(kind, c.n, c.steps, c.vals, c.ts, c.crc) is None
        for _, _, _, kind, c in chunks
    )
    assert len(st.attempts("base0001")) == 2
    st.close()


# -- replays, concurrency, migrations ---------------------------------------------------------


def test_replaying_a_journal_twice_stores_each_point_once(pg_store_url: str) -> None:
    run = tracker.init_run(
        "p", store=pg_store_url, mode="offline", system_metrics=False, quiet=True
    )
    for step in range(500):
        run.log({"x": float(step), "y": f"v{step}"})
    run["cfg/a"] = 1
    run.close()
    from tracker.core.replay import replay_run

    st = PostgresStore(pg_store_url)
    assert st.run(run.id) is None  # offline: journal only
    assert len(st.segments(run.id)) == 1
    applier = st.applier(run.id)
    for _ in range(2):
        replay_run(st, run.id, from_start=True, applier=applier)
    # A fresh applier (another process, say) replaying again stores nothing more.
    replay_run(PostgresStore(pg_store_url), run.id, from_start=True)
    r = tracker.read_run(run.id, store=pg_store_url)
    assert r["x"].fetch_values().step.tolist() == list(range(500))
    assert r["y"].fetch_values().value.tolist() == [f"v{s}" for s in range(500)]
    assert {s.path: s.points for s in st.series_list(run.id)} == {"x": 500, "y": 500}
    assert r["cfg/a"].fetch() == 1


_APPLY_CHILD = textwrap.dedent(
    """
    import sys, time
    from tracker.core.stores.postgres import PostgresStore
    from tracker.core.journal import read_records
    url, run_id, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
    st = PostgresStore(url)
    app = st.applier(run_id)
    stored = []  # positions this process stored (the other process stored the rest)
    record_position = app._record_position
    def counted(tx, segment, offset):
        stored.append(offset)
        record_position(tx, segment, offset)
    app._record_position = counted
    records = [
        (ops, (seg.name, end)) for seg in st.segments(run_id) for end, ops in read_records(seg)
    ]
    while time.time() < start_at:
        time.sleep(0.001)
    for batch, position in records:
        app.apply(batch, position)
    print(len(records), len(stored))
    """
)


def _children(code: str, args: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", code, *a],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=python_env(),
        )
        for a in args
    ]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    for d in done:
        assert d.returncode == 0, d.stderr
    return done


def test_two_processes_applying_one_journal_store_each_point_once(pg_store_url: str) -> None:
    # Two runs journaled offline; two processes apply both runs' records at once.
    ids = []
    for k in range(2):
        run = tracker.init_run(
            "p", store=pg_store_url, mode="offline", system_metrics=False, quiet=True
        )
        for step in range(400):
            run.log({f"s{j}": float(step * j + k) for j in range(20)})
            if step % 10 == 0:
                run.flush()  # many records
        run.close()
        ids.append(run.id)
    PostgresStore(pg_store_url).close()  # the schema exists before the race
    start = f"{time.time() + 2.0}"
    done = _children(_APPLY_CHILD, [[pg_store_url, rid, start] for rid in ids * 2])
    # Each record of each run was stored by exactly one of the two processes applying it.
    for k in range(2):
        (total, one), (total2, other) = (map(int, done[i].stdout.split()) for i in (k, k + 2))
        print(f"run {k}: {total} records, stored {one} + {other} by the two processes")
        assert total == total2 and one + other == total and total > 5
    st = PostgresStore(pg_store_url, readonly=True)
    for k, rid in enumerate(ids):
        infos = st.series_list(rid)
        assert len(infos) == 20 and all(s.points == 400 for s in infos)
        r = tracker.read_run(rid, store=pg_store_url)
        for j in (0, 7, 19):
            v = r[f"s{j}"].fetch_values()
            assert v.step.tolist() == list(range(400))
            assert v.value.tolist() == [float(s * j + k) for s in range(400)]
        _, chunks = st.series_chunks(rid, "s3", 0) or ("", [])
        ids_in_order = [c.chunk_id for c in chunks]
        assert ids_in_order == sorted(ids_in_order)
    assert st.set_aside_summary() == []


_OPEN_CHILD = textwrap.dedent(
    """
    import sys, time
    from tracker.core.stores.postgres import PostgresStore
    url, start_at = sys.argv[1], float(sys.argv[2])
    while time.time() < start_at:
        time.sleep(0.001)
    st = PostgresStore(url)
    print(st.schema, len(st.runs()))
    """
)


def test_processes_starting_together_migrate_once(pg_store_url: str) -> None:
    start = f"{time.time() + 2.0}"
    done = _children(_OPEN_CHILD, [[pg_store_url, start] for _ in range(4)])
    assert all(d.stdout.split() == [str(SCHEMA_VERSION), "0"] for d in done)
    import psycopg

    with psycopg.connect(pg_store_url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [v for (v,) in rows] == list(range(1, SCHEMA_VERSION + 1))


def test_a_store_reopened_reads_the_same(pg_store_url: str) -> None:
    with tracker.init_run(
        "p",
        store=pg_store_url,
        mode="sync",
        config={"a": {"b": 2}},
        system_metrics=False,
        quiet=True,
    ) as run:
        run.log({"loss": 0.5, "msg": "hi"})
        run.log({"loss": 0.25})
    first = PostgresStore(pg_store_url, create=False, readonly=True)
    before = (
        first.run(run.id),
        first.fields(run.id),
        first.series_list(run.id),
        first.series_chunks(run.id, "loss", 0),
        first.attempts(run.id),
        first.applied_offsets(run.id),
    )
    first.close()
    second = open_store(pg_store_url, create=False, readonly=True)
    assert isinstance(second, PostgresStore)
    after = (
        second.run(run.id),
        second.fields(run.id),
        second.series_list(run.id),
        second.series_chunks(run.id, "loss", 0),
        second.attempts(run.id),
        second.applied_offsets(run.id),
    )
    assert after == before
    assert before[0] is not None and before[0]["status"] == "finished"
    assert tracker.read_run(run.id, store=pg_store_url)["config/a/b"].fetch() == 2


# -- the rest of the protocol -------------------------------------------------------------------


def test_readonly_handles_never_write_and_errors_hide_the_password(
    pg_store_url: str,
) -> None:
    with pytest.raises(StoreError, match="no tracker store"):
        PostgresStore(pg_store_url, create=False)
    st = PostgresStore(pg_store_url)
    import psycopg

    with psycopg.connect(pg_store_url, autocommit=True) as conn:  # a later tracker's schema
        conn.execute("INSERT INTO schema_migrations(version) VALUES (99)")
        for readonly in (False, True):
            with pytest.raises(StoreError, match="schema 99, newer than this tracker"):
                PostgresStore(pg_store_url, readonly=readonly)
        assert check_postgres(pg_store_url)[0][1].ok is False
        conn.execute("DELETE FROM schema_migrations WHERE version = 99")
    ro = PostgresStore(pg_store_url, readonly=True)
    with pytest.raises(StoreError, match="read-only"):
        ro.heartbeat("x", 1.0)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        ro.connection().execute("INSERT INTO meta(key, value) VALUES('k', 'v')")
    assert ro.can_write and ro.for_writing() is not ro
    st.check_writable()
    # A password never shows, in the location or in errors.
    secret_url = pg_store_url.replace("postgres@", "postgres:hunter2@").rsplit(":", 1)[0] + ":1/x"
    assert "hunter2" not in safe_url(secret_url)
    with pytest.raises(StoreError) as caught:
        PostgresStore(secret_url)
    assert "hunter2" not in str(caught.value) and "cannot connect to" in str(caught.value)
    assert check_postgres(secret_url)[0][0].ok is False


def test_tokens_gc_space_and_doctor_checks(pg_store_url: str) -> None:
    st = PostgresStore(pg_store_url)
    tok = TokenRecord("t1", "p", "write", "ci", 1.0, None, None, "ab" * 32)
    st.add_token(tok)
    with pytest.raises(StoreError, match="exists already"):
        st.add_token(tok)
    st.add_token(tok._replace(token_id="t2", project="q", created_at=2.0))
    assert st.token("t1") == tok and st.token("nope") is None
    assert [t.token_id for t in st.tokens()] == ["t1", "t2"]
    assert [t.token_id for t in st.tokens("q")] == ["t2"]
    assert st.revoke_token("t1", 5.0) and not st.revoke_token("nope", 5.0)
    assert st.token("t1").revoked_at == 5.0  # type: ignore[union-attr]

    with tracker.init_run("p", store=pg_store_url, system_metrics=False, quiet=True) as run:
        for step in range(2000):
            run.log({"a": float(step), "b": float(-step)})
    assert st.disk_bytes() > 0
    st.mark_crashed(run.id, time.time())  # finished: left as it is
    assert st.run(run.id)["status"] == "finished"  # type: ignore[index]
    st.delete_runs([run.id])
    assert st.run(run.id) is None and st.series_list(run.id) == [] and st.attempts(run.id) == []
    assert st.reclaimable_bytes() >= 0
    assert st.reclaim_space() >= 0

    checks, found = check_postgres(pg_store_url)
    assert [c.name for c in checks] == ["server reachable", "schema version"]
    assert all(c.ok for c in checks) and isinstance(found, PostgresStore) and found.readonly
    from tracker.core import doctor

    # The shared checks of tracker doctor, run on the store handle.
    assert doctor._check_chunks(found).ok
    assert doctor._check_set_aside(found).ok


def test_a_value_postgres_cannot_hold_is_set_aside(pg_store_url: str) -> None:
    st = PostgresStore(pg_store_url)
    app = st.applier("r1")
    meta = {"project": "p", "name": None, "ts": 1.0, "host": "h", "pid": 1}
    with pytest.warns(RuntimeWarning, match="set aside"):
        aside = app.apply(
            [
                ("create", meta),
                ("set", "bad", "str", "nul\x00here", 1.0),
                ("set", "ok", "int", 3, 1.0),
            ],
            ("0001.jnl", 100),
        )
    assert aside == 1
    assert st.field("r1", "ok") == ("int", 3) and st.field("r1", "bad") is None
    assert st.set_aside_summary() is not None and st.set_aside_summary()[0][:2] == ("r1", 1)  # type: ignore[index]
    assert st.applied_offsets("r1") == {"0001.jnl": 100}
    assert app.apply([("set", "ok", "int", 4, 2.0)], ("0001.jnl", 100)) == 0  # skipped
    assert st.field("r1", "ok") == ("int", 3)


# -- ingest speed (printed; run with -s to see it) -----------------------------------------------


@pytest.mark.slow
def test_ingest_points_per_second(pg_store_url: str) -> None:
    from tracker.core import ops  # noqa: F401

    n_series, n_points = 100, 1000
    st = PostgresStore(pg_store_url)
    rates = []
    for trial in range(3):
        rid = f"bench{trial}"
        app = st.applier(rid)
        app.apply([("create", {"project": "p", "ts": 1.0})], ("0001.jnl", 10))
        batch = [_logs_op(n_series, n_points, trial)]
        t0 = time.perf_counter()
        app.apply(batch, ("0001.jnl", 20))
        rates.append(n_series * n_points / (time.perf_counter() - t0))
        assert all(s.points == n_points for s in st.series_list(rid))
    print(
        f"\npostgres ingest, {n_series} series x {n_points} points a batch: "
        + ", ".join(f"{r / 1e6:.2f}M" for r in rates)
        + " points/s"
    )
    assert max(rates) > 100_000


def _logs_op(n_series: int, n_points: int, seed: int) -> Any:
    """A "logs" op as the writer journals it (core/ops.py, core/batch.py)."""
    from tracker.core.batch import columnize

    keys = [f"bench/s{j:03d}" for j in range(n_series)]
    calls = [
        (step, 1000.0 + step, {k: float(step + j + seed) for j, k in enumerate(keys)})
        for step in range(n_points)
    ]
    (op,) = columnize(calls)
    return op


def test_a_batch_another_process_applied_part_of_is_refused_whole(pg_store_url: str) -> None:
    st = PostgresStore(pg_store_url)
    first, second = st.applier("r2"), PostgresStore(pg_store_url).applier("r2")
    meta = {"project": "p", "ts": 1.0}
    second.apply([("create", meta), ("set", "a", "int", 1, 1.0)], ("0001.jnl", 100))
    second.apply([("set", "b", "int", 2, 1.0)], ("0001.jnl", 200))
    # ``first`` has not seen those; a batch of records 100-300 overlaps them.
    with pytest.raises(StoreError, match="another process applied"):
        first.apply(
            [("set", "b", "int", 2, 1.0), ("set", "c", "int", 3, 1.0)], ("0001.jnl", 300), start=100
        )
    assert st.field("r2", "c") is None and first.applied(("0001.jnl", 200))
    # The same batch, the same boundaries: skipped inside its transaction.
    assert first.apply([("set", "b", "int", 9, 1.0)], ("0001.jnl", 200)) == 0
    assert first.apply([("set", "c", "int", 3, 1.0)], ("0001.jnl", 300), start=200) == 0
    assert [(p, v) for p, _, v in st.fields("r2")] == [("a", 1), ("b", 2), ("c", 3)]
    assert st.applied_offsets("r2") == {"0001.jnl": 300}


_FIELD_OPS = [
    ("set", "config/i", "int", 3, 1.0),
    ("set", "config/f", "float", 0.5, 1.0),
    ("set", "config/one", "float", 1.0, 1.0),
    ("set", "config/nan", "float", math.nan, 1.0),
    ("set", "config/b", "bool", True, 1.0),
    ("set", "config/s", "str", "x_y%z", 1.0),
    ("set", "config/n", "none", None, 1.0),
    ("set", "config/l", "list", "[1, 2]", 1.0),
    ("set", "config/t", "datetime", 1700000000.5, 1.0),
    ("set", "config/big", "int", 2**62, 1.0),
    ("set", "odd", "someday", "kept", 1.0),
    ("file", "files/model", {"uri": "s3://b/k", "size": 3}),
]


def _fill(st: Any) -> None:
    for k, rid in enumerate(["AbC_1", "abd_2", "xyz_3"]):
        app = st.applier(rid)
        meta = {"project": "p" if k < 2 else "q", "name": f"n{k}", "ts": 10.0 + k}
        if k == 2:
            meta.update(parent_id="AbC_1", fork_step=5)
        ops_ = [("create", meta), ("tags+", ["t", f"t{k}"]), *_FIELD_OPS[k:]]
        ops_.append(("set", "config/k", "int", k, 1.0))
        ops_.append(_logs_op(3, 20 + k, k))
        ops_.append(("status", "finished" if k else "failed", 20.0 + k, "bad" if not k else None))
        app.apply(ops_, ("0001.jnl", 50))


def test_store_methods_answer_as_sqlite_does(pg_store_url: str, tmp_path: Path) -> None:
    from tracker.core.stores.sqlite import SQLiteStore
    from tracker.core.values import config_filter

    stores = [SQLiteStore(str(tmp_path / "s")), PostgresStore(pg_store_url)]
    for st in stores:
        _fill(st)
    queries: list[dict[str, Any]] = [
        {},
        {"order": "oldest"},
        {"order": "id", "limit": 2},
        {"project": "p"},
        {"tags": ["t", "t1"]},
        {"statuses": ["failed", "crashed"]},
        {"created_before": 11.5},
        {"id_prefix": "ab"},
        {"id_prefix": "ABC_"},
        {"id_prefix": "a%"},
        {"parent_id": "AbC_1"},
        {"config": config_filter({"one": 1})},
        {"config": config_filter({"i": 3.0})},
        {"config": config_filter({"b": 1})},
        {"config": config_filter({"s": "x_y%z"})},
        {"config": config_filter({"nan": math.nan})},
        {"config": config_filter({"n": None})},
        {"config": config_filter({"l": [1, 2]})},
        {"config": config_filter({"k": 1, "f": 0.5})},
        {"config": config_filter({"k": 7})},
    ]

    def answers(st: Any) -> list[Any]:
        out: list[Any] = [[r["run_id"] for r in st.runs(**q)] for q in queries]
        for rid in ("AbC_1", "abd_2", "xyz_3"):
            # A bool may come back as 0/1, a float NaN as None (base.Store.fields).
            fields = [(p, k, repr(_plain(v))) for p, k, v in st.fields(rid)]
            out += [
                st.run(rid),
                st.tags(rid),
                fields,
                st.fields(rid, prefix="config/")[:1],
                st.field(rid, "odd"),
                st.series_list(rid),
                st.ranks(rid),
                st.applied_offsets(rid),
                len(st.attempts(rid)),
            ]
            kind, chunks = st.series_chunks(rid, "bench/s001", 0)
            out.append((kind, [(c.n, c.steps, c.vals, c.ts, c.crc) for c in chunks]))
        out.append([(r, p, k, kind, c.n, c.crc) for r, p, k, kind, c in st.all_chunks()])
        out.append(st.set_aside_summary())
        return out

    want, got = answers(stores[0]), answers(stores[1])
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        assert g == w, (i, queries[i] if i < len(queries) else None)


def _plain(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def test_tracker_doctor_end_to_end(pg_store_url: str) -> None:
    """``tracker doctor``'s whole chain on PostgreSQL (``stores.diagnose`` chooses
    ``check_postgres`` for a postgresql:// location)."""
    from tracker.core import doctor

    with tracker.init_run("p", store=pg_store_url, system_metrics=False, quiet=True) as run:
        run.log({"x": 1.0})
    checks = doctor.check_store(pg_store_url)
    assert [c.name for c in checks] == [
        "server reachable",
        "schema version",
        "chunk checksums",
        "writable",
        "journals readable",
        "journals applied",
        "running runs",
        "records set aside",
    ]
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_a_forked_child_opens_its_own_connection(pg_store_url: str) -> None:
    st = PostgresStore(pg_store_url)
    st.applier("r3").apply([("create", {"project": "p", "ts": 1.0})], ("0001.jnl", 10))
    assert st.run("r3") is not None  # the parent's connection exists now
    pid = os.fork()
    if pid == 0:  # the child: a connection of its own, the parent's socket untouched
        code = 1
        try:
            st.heartbeat("r3", 42.0)
            code = 0 if st.run("r3")["heartbeat"] == 42.0 else 2  # type: ignore[index]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert st.run("r3")["heartbeat"] == 42.0  # type: ignore[index]


def test_a_missing_database_is_created_when_the_user_may(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import psycopg

    monkeypatch.setenv("TRACKER_PG_JOURNAL_DIR", str(tmp_path))
    name = f"tracker_made_{os.getpid()}"
    url = postgres_cluster.database_url(postgres_url, name)
    with pytest.raises(StoreError, match="does not exist.*createdb"):
        PostgresStore(url, create=False)
    try:
        st = PostgresStore(url)
        assert st.runs() == [] and st.location == url
        assert st.journal_root == st.root / "journal" and st.journal_root.is_dir()
        assert st.root.parent == tmp_path  # TRACKER_PG_JOURNAL_DIR/<hash of the URL>
        st.close()
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_read_after_the_connection_died_reconnects(pg_store_url: str) -> None:
    # A restarted server leaves every pooled connection dead, which shows only when a
    # statement fails on it: reads (safe to send again) reconnect once.
    with tracker.init_run("p", store=pg_store_url, system_metrics=False, quiet=True) as run:
        run.log({"x": 1.0})
    st = open_store(pg_store_url, create=False, readonly=True)
    assert st.run(run.id) is not None
    pid = st.connection().info.backend_pid
    killer = PostgresStore(pg_store_url)
    killer._read("SELECT pg_terminate_backend(%s)", (pid,))
    assert st.run(run.id)["status"] == "finished"  # no StoreError: a new connection
    assert st.connection().info.backend_pid != pid
