"""Secrets planted on every path into the store reach none of its files.

Each test plants distinct secrets through one or more paths (config assignment, plain
assignment, connection strings, str series, argv, environment variables, tracebacks,
Lightning's ``log_hyperparams``), then reads every byte of every file under the store
directory (``store.db``, its WAL, the journal segments) and checks that no secret is
there, and that the masked forms read back where they help debugging.
"""

from __future__ import annotations

import shlex
import sqlite3
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest

import tracker
from tests.conftest import PYTHON, python_env
from tracker.core.secrets import MASK


def _secret(name: str) -> str:
    # Letters and digits only: a secret must survive any delimiter it is planted between.
    return f"Zq{name}{uuid.uuid4().hex[:12]}"


def _assert_nowhere(store: str | Path, secrets: dict[str, str]) -> int:
    """Check that no secret is in any file under ``store``; return how many files."""
    files = [p for p in Path(store).rglob("*") if p.is_file()]
    assert files, f"nothing under {store}"
    for path in files:
        data = path.read_bytes()
        for where, secret in secrets.items():
            assert secret.encode() not in data, f"the secret planted via {where} is in {path}"
    return len(files)


def test_secrets_from_a_failing_script_reach_no_file(store: str, tmp_path: Path) -> None:
    s = {
        where: _secret(f"s{i}")
        for i, where in enumerate(
            [
                "run['config'] = {hub_token}",
                "run['db'] = postgres URL",
                "run['conn'] = connection string",
                "str series URL",
                "argv --db-url",
                "argv --api-key",
                "environment variable",
                "traceback",
                "config= URL",
                "append() connection string",
                "str series under a secret key",
                "dict repr in a str",
            ],
            start=1,
        )
    }
    s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12 = s.values()
    hf_token = "hf_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3"
    s["token shape"] = hf_token
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import tracker

            config = {{"lr": 0.1, "db_url": "postgres://u:{s9}@h/db"}}
            with tracker.init_run(
                project="p", run_id="leaky", store={store!r}, config=config,
                system_metrics=False,
            ) as run:
                run["config"] = {{"hub_token": "{s1}", "model": "bert-base-uncased"}}
                run["db"] = "postgres://u:{s2}@h/db"
                run["conn"] = "Server=x;Password={s3};"
                run["cfg_text"] = str({{"api_key": "{s12}", "lr": 0.1}})
                run["note"] = "logged in with {hf_token}"
                run["auth/port"] = 443
                run.log({{"text": "fetched https://user:{s4}@host/data"}})
                run.log({{"debug/api_token": "{s11}"}})
                run["events"].append("reconnect Server=x;Pwd={s10}")
                run.flush()
                raise RuntimeError("could not connect to postgres://u:{s8}@h/db")
            """
        )
    )
    argv = [PYTHON, str(script), "--db-url", f"postgres://u:{s5}@h/db", "--api-key", s6]
    env = python_env(TRACKER_TEST_DSN=f"primary postgres://u:{s7}@h/db")
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and f"postgres://u:{s8}@h/db" in proc.stderr, proc.stderr

    _assert_nowhere(store, s)

    r = tracker.read_run("leaky", store=store)
    assert r.status == "failed"
    assert r["config/hub_token"].fetch() == MASK
    assert r["config/model"].fetch() == "bert-base-uncased"
    assert r["config/lr"].fetch() == 0.1
    assert r["config/db_url"].fetch() == f"postgres://u:{MASK}@h/db"
    assert r["db"].fetch() == f"postgres://u:{MASK}@h/db"
    assert r["conn"].fetch() == f"Server=x;Password={MASK};"
    assert r["cfg_text"].fetch() == f"{{'api_key': '{MASK}', 'lr': 0.1}}"
    assert r["note"].fetch() == f"logged in with hf_{MASK}"
    assert r["auth/port"].fetch() == MASK
    assert list(r["text"].fetch_values().value) == [f"fetched https://{MASK}@host/data"]
    assert list(r["debug/api_token"].fetch_values().value) == [MASK]
    assert list(r["events"].fetch_values().value) == [f"reconnect Server=x;Pwd={MASK}"]
    argv_stored = shlex.split(r["sys/argv"].fetch())
    assert argv_stored[-4:] == ["--db-url", f"postgres://u:{MASK}@h/db", "--api-key", MASK]
    assert r["sys/env/TRACKER_TEST_DSN"].fetch() == f"primary postgres://u:{MASK}@h/db"
    failure = r["sys/failure/traceback"].fetch()
    assert "RuntimeError: could not connect to" in failure
    assert f"postgres://u:{MASK}@h/db" in failure
    db = sqlite3.connect(Path(store) / "store.db")
    try:
        (error,) = db.execute("SELECT error FROM runs WHERE run_id='leaky'").fetchone()
    finally:
        db.close()
    assert f"postgres://u:{MASK}@h/db" in error  # the run's status row


def test_journal_holds_no_secret_while_the_run_is_open(store: str) -> None:
    # Offline: the journal is all there is, and it is written before anything is applied.
    s = {"assignment": _secret("a"), "series": _secret("b"), "close error": _secret("c")}
    run = tracker.init_run(project="p", store=store, mode="offline", system_metrics=False)
    run["db"] = f"postgres://u:{s['assignment']}@h/db"
    run["log"].append(f"GET https://{s['series']}@api.example.com/v1")
    run.flush()
    assert any(Path(store, "journal").rglob("*")), "no journal segment written"
    _assert_nowhere(store, s)
    run.close("failed", error=f"ConnectionError: Server=x;Password={s['close error']}")
    _assert_nowhere(store, s)


def test_lightning_hyperparameters_reach_no_file(store: str) -> None:
    pytest.importorskip("lightning", reason="needs lightning (pip install 'tracker-dl[lightning]')")
    from argparse import Namespace

    from tracker.integrations.lightning import TrackerLogger

    s = {
        "hub_token": _secret("h"),
        "nested password": _secret("p"),
        "URL value": _secret("u"),
        "Namespace": _secret("n"),
    }
    logger = TrackerLogger(project="p", store=store, system_metrics=False)
    logger.log_hyperparams(
        {
            "hub_token": s["hub_token"],
            "lr": 0.01,
            "db": {"password": s["nested password"], "host": "db.local"},
            "data_url": f"https://user:{s['URL value']}@data.example.com/train",
            "args": Namespace(api_key=s["Namespace"], batch_size=32),
        }
    )
    run_id = logger.version
    logger.finalize("success")

    _assert_nowhere(store, s)
    fields = tracker.read_run(run_id, store=store).fields()
    assert fields["config/hub_token"] == MASK
    assert fields["config/db/password"] == MASK
    assert fields["config/db/host"] == "db.local"
    assert fields["config/data_url"] == f"https://{MASK}@data.example.com/train"
    assert fields["config/args/api_key"] == MASK
    assert fields["config/args/batch_size"] == 32
    assert fields["config/lr"] == 0.01
