"""A throwaway PostgreSQL cluster for tests: fixtures ``postgres_url`` and ``pg_store_url``.

``postgres_url`` (session-scoped) runs ``initdb`` into a temporary directory, starts the
server on a free loopback port (trust authentication, no other access: a Unix socket in
that directory and 127.0.0.1 only) and yields ``postgresql://postgres@127.0.0.1:PORT/
postgres``; the server is stopped and the directory removed at the end of the session.
``pg_store_url`` (function-scoped) creates a fresh database for one test, yields its
URL, and drops it afterwards; it also points ``TRACKER_PG_JOURNAL_DIR`` (where the
PostgreSQL store keeps its local journals) into the test's ``tmp_path``.

The server binaries are looked for in /usr/lib/postgresql/<version>/bin (the newest
version first), then on PATH; tests using these fixtures are skipped, saying what is
missing, where there are none. Run as root (initdb refuses root), the server runs as
the ``postgres`` user through ``runuser``.

Use it from a test module (or a conftest) by importing the fixtures::

    from tests.server.postgres_cluster import pg_store_url, postgres_url  # noqa: F401
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 60


def find_binaries() -> tuple[Path | None, str]:
    """The directory holding initdb, pg_ctl and postgres, or None and what is missing."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: [int(p) if p.isdigit() else 0 for p in Path(d).parent.name.split(".")],
        reverse=True,
    )
    for directory in candidates:
        if all(os.access(Path(directory) / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return Path(directory), ""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl") and shutil.which("postgres"):
        return Path(initdb).parent, ""
    return None, (
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in "
        "/usr/lib/postgresql/*/bin or on PATH"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str]) -> None:
    done = subprocess.run(
        _as_server_user(argv), capture_output=True, text=True, timeout=START_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({done.returncode}): {done.stdout}\n{done.stderr}"
        )


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """Start a throwaway cluster; yield the URL of its ``postgres`` database."""
    bindir, missing = find_binaries()
    if bindir is None:
        pytest.skip(missing)
    if os.geteuid() == 0:
        try:
            import pwd

            server_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no `postgres` user to run the server as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root, and there is no runuser to run the server as postgres")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg (3) is not installed")
    base = Path(tempfile.mkdtemp(prefix="tracker-pg-"))
    data, log = base / "data", base / "server.log"
    if os.geteuid() == 0:
        os.chown(base, server_user.pw_uid, server_user.pw_gid)
    port = _free_port()
    started = False
    try:
        _run(
            [
                str(bindir / "initdb"),
                "-D", str(data),
                "-U", "postgres",
                "--auth=trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )  # fmt: skip
        options = (
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=100 "
            "-c shared_buffers=64MB"
        )
        _run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
             "-t", str(START_TIMEOUT_S), "start"]
        )  # fmt: skip
        started = True
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a throwaway cluster's ``postgres`` database (one cluster a session)."""
    with cluster() as url:
        yield url


def database_url(server_url: str, name: str) -> str:
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def pg_store_url(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh, empty database for one test (dropped after it); its URL."""
    import psycopg

    name = f"tracker_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("TRACKER_PG_JOURNAL_DIR", str(tmp_path / "pg-journals"))
    try:
        yield database_url(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
