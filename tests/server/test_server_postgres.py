"""The team server over a PostgreSQL store: the same client, the same results."""

from __future__ import annotations

from pathlib import Path

import pytest

import tracker
from tracker.core.stores.http import ServerError

from . import postgres_cluster
from .conftest import ServerProcess, make_token, token_env

postgres_url = postgres_cluster.postgres_url
pg_store_url = postgres_cluster.pg_store_url

pytest.importorskip("psycopg")


@pytest.fixture
def pg_server(pg_store_url: str, tmp_path: Path, spool: Path):
    proc = ServerProcess(pg_store_url, tmp_path / "pg-server.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_write_and_read_through_a_postgres_server(pg_server: ServerProcess) -> None:
    with token_env(make_token(pg_server.store, "team")):
        run = tracker.init_run("team", store=pg_server.url, tags=["pg"], system_metrics=False)
        for i in range(500):
            run.log({"loss": 1.0 / (i + 1), "note": f"n{i}"} if i % 100 == 0 else {"loss": 1.0})
        run["config/lr"] = 0.5
        run.close()
        r = tracker.read_run(run.id, store=pg_server.url)
        assert r.status == "finished" and r.tags == ["pg"]
        assert r["loss"].fetch_values().step.tolist() == list(range(500))
        assert list(r["note"].fetch_values().value) == [f"n{i}" for i in range(0, 500, 100)]
        assert [row["id"] for row in tracker.list_runs(store=pg_server.url)] == [run.id]
        with pytest.raises(ServerError, match="'other'"):
            tracker.init_run("other", store=pg_server.url, system_metrics=False)
    with token_env(make_token(pg_server.store, "other", "read")):
        with pytest.raises(ServerError, match="project 'team'"):
            tracker.read_run(run.id, store=pg_server.url)


def test_two_servers_on_one_database(pg_server: ServerProcess, tmp_path: Path) -> None:
    second = ServerProcess(pg_server.store, tmp_path / "pg-second.log")
    second.start()
    try:
        with token_env(make_token(pg_server.store, "team")):
            one = tracker.init_run("team", store=pg_server.url, system_metrics=False)
            two = tracker.init_run("team", store=second.url, system_metrics=False)
            for i in range(300):
                one.log({"x": float(i)})
                two.log({"x": float(i)})
            one.close()
            two.close()
            for rid in (one.id, two.id):
                for url in (pg_server.url, second.url):
                    r = tracker.read_run(rid, store=url)
                    assert r["x"].fetch_values().step.tolist() == list(range(300))
    finally:
        second.stop()
