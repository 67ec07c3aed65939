"""The team server end to end: a real ``tracker server`` process, clients over HTTP."""

from __future__ import annotations

import http.client
import json
import pickle
import time
import urllib.parse
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

import tracker
from tracker.cli import main
from tracker.core.errors import StoreError
from tracker.core.stores import open_store
from tracker.core.stores.http import HTTPStore, ServerError

from .conftest import ServerProcess, free_port, make_token, token_env


def _post(url: str, path: str, body: bytes, token: str, headers: dict | None = None):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-tracker-batch"}
    h.update(headers or {})
    conn.request("POST", path, body=body, headers=h)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def _get(url: str, path: str, token: str | None = None):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def _write_run(url: str, project: str, steps: int = 50, **kwargs) -> str:
    run = tracker.init_run(project, store=url, system_metrics=False, **kwargs)
    for i in range(steps):
        run.log({"train/loss": 1.0 / (i + 1)})
    run["notes"] = "hello"
    run.close()
    return run.id


def test_health_and_openapi(server: ServerProcess) -> None:
    status, body = _get(server.url, "/api/health")
    assert status == 200
    doc = json.loads(body)
    assert doc["version"] == tracker.__version__
    assert doc["store"] == "directory" and doc["api"] == 1
    status, body = _get(server.url, "/api/openapi.json")
    assert status == 200 and "/api/runs/{run_id}/apply" in json.loads(body)["paths"]


def test_write_and_read_a_run_through_the_server(server: ServerProcess, spool: Path) -> None:
    token = make_token(server.store, "vision")
    with token_env(token):
        run = tracker.init_run(
            "vision", store=server.url, config={"lr": 0.01}, tags=["base"], system_metrics=False
        )
        for i in range(200):
            run.log({"train/loss": 1.0 / (i + 1), "train/acc": i / 200})
        run.log({"phase": "done"})
        run["model/name"] = "resnet"
        assert list(spool.rglob(f"{run.id}/*.jnl"))  # journaled on this machine first
        run.close()
        # The server holds every byte of it: the spool lets it go.
        assert not list(spool.rglob(f"{run.id}/*.jnl"))

        r = tracker.read_run(run.id, store=server.url)
        assert r.status == "finished" and r.project == "vision" and r.tags == ["base"]
        assert r["config/lr"].fetch() == 0.01
        assert r["model/name"].fetch() == "resnet"
        loss = r["train/loss"].fetch_values()
        assert list(loss.step) == list(range(200)) and loss.value[-1] == pytest.approx(1 / 200)
        assert list(r["phase"].fetch_values().value) == ["done"]
        listed = tracker.list_runs(project="vision", store=server.url)
        assert [row["id"] for row in listed] == [run.id]
        assert [row["id"] for row in tracker.list_runs(store=server.url)] == [run.id]
        found = tracker.list_runs(
            store=server.url, tags=["base"], status="finished", config={"lr": 0.01}
        )
        assert [row["id"] for row in found] == [run.id]
        assert tracker.list_runs(store=server.url, config={"lr": 0.02}) == []

        cli = CliRunner()
        out = cli.invoke(main, ["ls", "--store", server.url, "--json"])
        assert out.exit_code == 0, out.output
        assert [row["id"] for row in json.loads(out.stdout)] == [run.id]
        out = cli.invoke(main, ["show", run.id, "--store", server.url])
        assert out.exit_code == 0, out.output
        assert "train/loss" in out.stdout and "resnet" in out.stdout
        out = cli.invoke(main, ["compare", run.id, run.id, "--store", server.url, "--json"])
        assert out.exit_code == 0, out.output
        out = cli.invoke(main, ["export", run.id, "--store", server.url, "--format", "csv"])
        assert out.exit_code == 0, out.output
        assert "train/loss" in out.stdout

    # The server's store holds the run like any directory store.
    local = tracker.read_run(run.id, store=server.store)
    assert len(local["train/loss"].fetch_values()) == 200


def test_read_token_reads_but_cannot_write(server: ServerProcess) -> None:
    with token_env(make_token(server.store, "nlp", "write")):
        run_id = _write_run(server.url, "nlp")
    with token_env(make_token(server.store, "nlp", "read")):
        assert tracker.read_run(run_id, store=server.url).status == "finished"
        with pytest.raises(ServerError, match="read token") as err:
            tracker.init_run("nlp", store=server.url, system_metrics=False)
        assert err.value.status == 403


def test_a_token_of_one_project_cannot_touch_another(server: ServerProcess) -> None:
    with token_env(make_token(server.store, "B")):
        b_run = _write_run(server.url, "B")
    with token_env(make_token(server.store, "A")):
        a_run = _write_run(server.url, "A")
        with pytest.raises(ServerError, match="'B'") as err:
            tracker.init_run("B", store=server.url, system_metrics=False)
        assert err.value.status == 403
        with pytest.raises(ServerError, match="project 'B'") as err:
            tracker.read_run(b_run, store=server.url)
        assert err.value.status == 403
        with pytest.raises(ServerError, match="'B'"):
            tracker.list_runs(project="B", store=server.url)
        assert [row["id"] for row in tracker.list_runs(store=server.url)] == [a_run]
        # Resuming B's run under project A is refused too, before anything is written.
        with pytest.raises(ServerError, match="project 'B'"):
            tracker.init_run("A", run_id=b_run, store=server.url, system_metrics=False)
        # A forged batch for B's run, sent straight to the server: 403, nothing stored.
        body = zlib.compress(pickle.dumps([("tags+", ["pwned"])], protocol=5))
        token = make_token(server.store, "A")
        status, data = _post(
            server.url, f"/api/runs/{b_run}/apply?segment={'0' * 20}-1.jnl&offset=99", body, token
        )
        assert status == 403, data
    assert tracker.read_run(b_run, store=server.store).tags == []


def test_revoked_expired_and_wrong_tokens_are_refused(server: ServerProcess) -> None:
    cli = CliRunner()
    made = cli.invoke(
        main, ["token", "create", "--project", "P", "--scope", "write", "--store", server.store]
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert token.startswith("trk_")
    token_id = token.split("_")[1]
    listed = cli.invoke(main, ["token", "list", "--store", server.store, "--json"])
    assert [t["id"] for t in json.loads(listed.stdout)] == [token_id]
    assert token.split("_", 2)[2] not in listed.stdout

    with token_env(token):
        _write_run(server.url, "P", steps=3)
    revoked = cli.invoke(main, ["token", "revoke", token_id, "--store", server.store])
    assert revoked.exit_code == 0, revoked.output
    with token_env(token), pytest.raises(ServerError, match="revoked") as err:
        tracker.init_run("P", store=server.url, system_metrics=False)
    assert err.value.status == 401 and token not in str(err.value)

    expired = make_token(server.store, "P", expires_in=-1.0)
    with token_env(expired), pytest.raises(ServerError, match="expired"):
        tracker.init_run("P", store=server.url, system_metrics=False)

    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with (
        token_env(wrong),
        pytest.raises(ServerError, match="unknown or its secret is wrong") as err,
    ):
        tracker.list_runs(store=server.url)
    assert wrong not in str(err.value)
    with token_env("not-a-token"), pytest.raises(ServerError, match="not a tracker token"):
        tracker.list_runs(store=server.url)


def test_token_text_appears_nowhere(server: ServerProcess, spool: Path) -> None:
    token = make_token(server.store, "secret-proj")
    secret = token.split("_", 2)[2]
    with token_env(token):
        run_id = _write_run(server.url, "secret-proj")
        with pytest.raises(ServerError) as err:
            tracker.init_run("other", store=server.url, system_metrics=False)
        assert secret not in str(err.value)
    with token_env(token[:-1] + "x"), pytest.raises(ServerError) as err:
        tracker.read_run(run_id, store=server.url)
    assert secret[:-1] not in str(err.value)
    server.stop()  # the log and the database are complete
    for path in [*Path(server.store).rglob("*"), *spool.rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and token.encode() not in data, path
    log = server.log.read_text()
    assert "/api/runs" in log  # it does log requests
    assert secret not in log and token not in log


def test_server_down_at_init_run_fails_at_once(spool: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with token_env("trk_000000000000_" + "a" * 43):
        started = time.monotonic()
        with pytest.raises(StoreError, match="connection refused"):
            tracker.init_run("P", store=url, system_metrics=False)
        assert time.monotonic() - started < 10
        with pytest.raises(StoreError, match="does not resolve"):
            tracker.init_run("P", store="http://no-such-host.invalid:8088", system_metrics=False)
    assert not (spool / "journal").exists() or not any((spool / "journal").iterdir())


def test_server_killed_mid_run_every_point_once(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small catch-up batches: the backlog goes back in many requests, each stored once.
    monkeypatch.setattr(HTTPStore, "replay_batch_bytes", 2000)
    token = make_token(server.store, "P")
    with token_env(token):
        run = tracker.init_run("P", store=server.url, system_metrics=False)
        for i in range(300):
            run.log({"x": float(i)})
        run.flush()
        server.kill()
        # Training goes on while the server is away: run.log costs what it always costs.
        costs = []
        for i in range(300, 3300):
            t0 = time.perf_counter()
            run.log({"x": float(i)})
            costs.append(time.perf_counter() - t0)
            if i % 500 == 0:
                time.sleep(0.2)  # let the writer try (and fail) to reach the server
        assert sorted(costs)[len(costs) // 2] < 0.001 and max(costs) < 0.5
        time.sleep(1.0)
        server.start()
        for i in range(3300, 3600):
            run.log({"x": float(i)})
        run.close()
    r = tracker.read_run(run.id, store=server.store)
    steps = r["x"].fetch_values().step
    assert sorted(steps.tolist()) == list(range(3600))
    assert r.status == "finished"
    assert server.log.read_text().count(f"/api/runs/{run.id}/apply") > 5


def test_close_leaves_the_spool_to_tracker_sync(
    server: ServerProcess, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKER_SERVER_CLOSE_TIMEOUT", "1")
    token = make_token(server.store, "P")
    with token_env(token):
        run = tracker.init_run("P", store=server.url, system_metrics=False)
        run.log({"x": 1.0})
        run.flush()
        server.kill()
        for i in range(100):
            run.log({"x": float(i)})
        with pytest.warns(RuntimeWarning, match="tracker sync --store"):
            run.close()
        assert list(spool.rglob(f"{run.id}/*.jnl"))  # kept for tracker sync
        server.start()
        out = CliRunner().invoke(main, ["sync", "--store", server.url])
        assert out.exit_code == 0, out.output
    r = tracker.read_run(run.id, store=server.store)
    assert len(r["x"].fetch_values()) == 101 and r.status == "finished"


def test_a_batch_sent_twice_is_stored_once(server: ServerProcess) -> None:
    token = make_token(server.store, "P")
    with token_env(token):
        run_id = _write_run(server.url, "P", steps=10)
        client = HTTPStore(server.url)
        segment = f"{time.time_ns():020d}-1.jnl"
        cols = ("cols", ("y",), b"\x01" + b"\x00" * 7, b"\x00" * 8, b"\x00" * 8, None)
        batch = [("logs", 0, 1, [cols])]
        for _ in range(3):  # fresh appliers: only the server can tell it has it
            client.applier(run_id).apply(batch, (segment, 100))
        assert client.applied_offsets(run_id)[segment] == 100
    assert len(tracker.read_run(run_id, store=server.store)["y"].fetch_values()) == 1


def test_two_servers_serve_one_store(server: ServerProcess, tmp_path: Path) -> None:
    second = ServerProcess(server.store, tmp_path / "second.log")
    second.start()
    try:
        token = make_token(server.store, "P")
        with token_env(token):
            run = tracker.init_run("P", store=server.url, run_id="shared", system_metrics=False)
            for i in range(100):
                run.log({"x": float(i)})
            run.close()
            run = tracker.init_run("P", store=second.url, run_id="shared", system_metrics=False)
            for i in range(100, 200):
                run.log({"x": float(i)})
            run.close()
            # Two runs at once, one through each server, into the one store.
            one = tracker.init_run("P", store=server.url, system_metrics=False)
            two = tracker.init_run("P", store=second.url, system_metrics=False)
            for i in range(500):
                one.log({"x": float(i)})
                two.log({"x": float(-i)})
                if i % 100 == 0:
                    one.flush()
                    two.flush()
            one.close()
            two.close()
            seen = {row["id"] for row in tracker.list_runs(store=server.url)}
            assert seen == {"shared", one.id, two.id}
            for rid in (one.id, two.id):
                steps = tracker.read_run(rid, store=second.url)["x"].fetch_values().step
                assert steps.tolist() == list(range(500))
            r = tracker.read_run("shared", store=server.url)
            assert r["x"].fetch_values().step.tolist() == list(range(200))
    finally:
        second.stop()


def test_request_size_limits(server: ServerProcess) -> None:
    token = make_token(server.store, "P")
    path = f"/api/runs/big/apply?segment={'0' * 20}-1.jnl&offset=10"
    # A declared length over 64 MB is refused before the body is read.
    status, data = _post(server.url, path, b"x" * 10, token, {"Content-Length": str(65 << 20)})
    assert status == 413
    # A small body that would inflate past 64 MB (a zip bomb) is refused part way.
    bomb = zlib.compress(b"\x00" * (65 << 20), 9)
    assert len(bomb) < 1 << 20
    status, data = _post(server.url, path, bomb, token)
    assert status == 413, data
    assert b"inflates" in data
    # A small pickle that refers to one long text a million times is refused too.
    text = "x" * 1000
    rows = [[text]] * 200_000
    group = ("rows", ("s",), list(range(200_000)), [0.0] * 200_000, rows, None)
    body = zlib.compress(pickle.dumps([("logs", 0, 200_000, [group])], protocol=5))
    assert len(body) < 1 << 20
    status, data = _post(server.url, path, body, token)
    assert status == 413, data
    assert b"add up to more than" in data


@pytest.mark.parametrize(
    ("batch", "why"),
    [
        ([("tags+", ["ok"]), ("set", "a/../b", "int", 1, 1.0)], "'..'"),
        ([("set", "x", "int", 2**70, 1.0)], "not a value of kind int"),
        ([("rm -rf", "/")], "unknown operation"),
        (
            [("logs", 0, 1, [("cols", ("y",), b"\x00" * 8, b"\x00" * 8, b"\x00" * 4, None)])],
            "value bytes",
        ),
        ([("create", {"project": "P", "evil": 1})], "unknown keys"),
        ({"not": "a list"}, "list of operations"),
    ],
)
def test_validation_refuses_bad_batches(server: ServerProcess, batch: object, why: str) -> None:
    token = make_token(server.store, "P")
    body = zlib.compress(pickle.dumps(batch, protocol=5))
    status, data = _post(
        server.url, f"/api/runs/val/apply?segment={'0' * 20}-1.jnl&offset=10", body, token
    )
    assert status == 400, data
    assert why in json.loads(data)["detail"]
    assert open_store(server.store).run("val") is None


def test_a_pickle_that_names_a_class_is_refused(server: ServerProcess) -> None:
    token = make_token(server.store, "P")

    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    body = zlib.compress(pickle.dumps([Evil()]))
    status, data = _post(
        server.url, f"/api/runs/val/apply?segment={'0' * 20}-1.jnl&offset=10", body, token
    )
    assert status == 400 and b"refusing" in data
    assert "ran code" not in server.log.read_text()


def test_catching_up_backs_off_while_the_server_is_away(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracker.core import ops
    from tracker.core.writer import Writer

    url = f"http://127.0.0.1:{free_port()}"
    store = HTTPStore(url, check=False, token="trk_000000000000_" + "a" * 43)
    store.close_wait = 0.2
    calls = []
    real = HTTPStore.request

    def counted(self, method, path, **kw):
        calls.append(path)
        return real(self, method, path, **kw)

    monkeypatch.setattr(HTTPStore, "request", counted)
    writer = Writer(store, "backoff", flush_interval=0.05, heartbeat_interval=3600)
    writer.queue.append(ops.create({"project": "P", "ts": time.time()}))
    time.sleep(2.0)
    # Without backoff: a catch-up every 50 ms cycle (40); with it: 0.05, 0.1, 0.2 ... s.
    assert len(calls) <= 10, calls
    with pytest.warns(RuntimeWarning, match="tracker sync --store"):
        writer.close()
    assert store.segments("backoff")  # the spool keeps the run for `tracker sync`


def test_a_damaged_chunk_is_caught_by_the_client(server: ServerProcess) -> None:
    import sqlite3

    from tracker.core.errors import CorruptDataError

    with token_env(make_token(server.store, "P")):
        run_id = _write_run(server.url, "P", steps=20)
        conn = sqlite3.connect(Path(server.store) / "store.db")
        with conn:
            conn.execute("UPDATE chunks SET vals = zeroblob(length(vals))")
        conn.close()
        with pytest.raises(CorruptDataError, match="checksum"):
            tracker.read_run(run_id, store=server.url)["train/loss"].fetch_values()


def test_token_commands_need_the_servers_own_store(server: ServerProcess) -> None:
    out = CliRunner().invoke(
        main, ["token", "create", "--project", "P", "--scope", "read", "--store", server.url]
    )
    assert out.exit_code == 1 and "not a server address" in out.output
    made = CliRunner().invoke(
        main,
        ["token", "create", "-p", "P", "--scope", "read", "--name", "ci", "--store", server.store],
    )
    assert made.exit_code == 0
    listed = CliRunner().invoke(main, ["token", "list", "--store", server.store])
    assert "ci" in listed.stdout and "active" in listed.stdout
    assert made.stdout.strip() not in listed.stdout


def test_the_client_imports_no_server_library(server: ServerProcess, spool: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import python_env

    script = (
        "import sys, tracker\n"
        f"run = tracker.init_run('P', store={server.url!r}, system_metrics=False)\n"
        "run.log({'a': 1.0}); run.close()\n"
        f"assert tracker.read_run(run.id, store={server.url!r}).status == 'finished'\n"
        "heavy = ('fastapi', 'uvicorn', 'starlette', 'httpx', 'pydantic')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    env = python_env(TRACKER_API_TOKEN=make_token(server.store, "P"))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_server_command_wants_a_store_not_an_address(server: ServerProcess) -> None:
    out = CliRunner().invoke(main, ["server", "--store", server.url, "--port", "1"])
    assert out.exit_code == 1 and "not a server address" in out.output


def test_incompatible_versions_are_refused_at_init_run(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracker.core.stores import http as client

    monkeypatch.setattr(client, "API_VERSION", client.API_VERSION + 1)
    with token_env(make_token(server.store, "P")):
        with pytest.raises(ServerError, match="API version 1") as err:
            tracker.init_run("P", store=server.url, system_metrics=False)
    assert "same tracker version" in str(err.value)


def test_fork_and_resume_through_the_server(server: ServerProcess) -> None:
    with token_env(make_token(server.store, "P")):
        parent = _write_run(server.url, "P", steps=10)
        child = tracker.init_run("P", store=server.url, fork_from=(parent, 4), system_metrics=False)
        child.log({"train/loss": 0.5})
        child.close()
        resumed = tracker.init_run(
            "P", store=server.url, run_id=parent, resume_from_step=7, system_metrics=False
        )
        resumed.log({"train/loss": 9.0})
        resumed.close()
        c = tracker.read_run(child.id, store=server.url)
        assert c.parent == (parent, 4)
        assert c["train/loss"].fetch_values().step.tolist() == [0, 1, 2, 3, 4, 5]
        p = tracker.read_run(parent, store=server.url)["train/loss"].fetch_values()
        assert p.step.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
        assert p.value[-1] == 9.0


def test_a_client_that_dies_while_the_server_is_away_is_synced_later(
    server: ServerProcess, spool: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from tests.conftest import python_env

    go = tmp_path / "go"
    script = (
        "import os, sys, time, tracker\n"
        f"run = tracker.init_run('P', store={server.url!r}, system_metrics=False)\n"
        "for i in range(100): run.log({'x': float(i)})\n"
        "run.flush(); print(run.id, flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
        "for i in range(100, 200): run.log({'x': float(i)})\n"
        "time.sleep(1.5)\n"  # the writer journals them (the server is away)
        "os._exit(1)\n"  # dies: no close
    )
    token = make_token(server.store, "P")
    env = python_env(TRACKER_API_TOKEN=token, TRACKER_SPOOL_DIR=str(spool))
    child = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()
    server.kill()
    go.touch()
    assert child.wait(60) == 1
    server.start()
    with token_env(token):
        r = tracker.read_run(run_id, store=server.url)
        assert len(r["x"].fetch_values()) == 100  # the rest is in that machine's spool
        out = CliRunner().invoke(main, ["sync", "--store", server.url])
        assert out.exit_code == 0, out.output
        assert run_id in out.stdout
        r = tracker.read_run(run_id, store=server.url)
        assert r["x"].fetch_values().step.tolist() == list(range(200))
        assert r.status == "crashed"


def test_doctor_checks_a_server_by_its_address(server: ServerProcess) -> None:
    token = make_token(server.store, "vision")
    with token_env(token):
        run = tracker.init_run("vision", store=server.url, system_metrics=False, quiet=True)
        run.log({"x": 1.0})
        run.close()
        out = CliRunner().invoke(main, ["doctor", "--store", server.url])
    assert out.exit_code == 0, out.output
    assert "server reachable" in out.output and "token" in out.output
    assert token not in out.output
    with token_env("trk_000000000000_" + "x" * 43):
        out = CliRunner().invoke(main, ["doctor", "--store", server.url])
    assert out.exit_code == 1 and "token" in out.output


def test_events_reach_the_server_and_read_back_over_http(
    server: ServerProcess, spool: Path
) -> None:
    token = make_token(server.store, "vision")
    with token_env(token):
        run = tracker.init_run("vision", store=server.url, system_metrics=False)
        with pytest.warns(RuntimeWarning, match="train/loss is NaN at step 3"):
            for i in range(6):
                run.log({"train/loss": float("nan") if i == 3 else 1.0}, step=i)
            run.flush()
        run.alert("checked", level="info")
        run.close()
        found = tracker.read_run(run.id, store=server.url).events()
        assert [(e["kind"], e["step"], e["rank"]) for e in found] == [
            ("nonfinite", 3, 0),
            ("alert", 5, 0),
        ]
        out = CliRunner().invoke(main, ["events", run.id, "--store", server.url, "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["events"] == found
