"""A real ``tracker server`` (uvicorn, a subprocess) on a free loopback port, over a
temporary directory store; clients spool to a temporary directory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PYTHON, python_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One ``tracker server`` process; ``start``/``stop``/``kill`` it, read its ``log``."""

    def __init__(self, store: str, log: Path, port: int | None = None) -> None:
        self.store = store
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        out = open(self.log, "ab")
        env = python_env(TRACKER_QUIET="1")
        env.pop("TRACKER_API_TOKEN", None)
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "tracker.cli", "server", "--store", self.store,
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "info"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        out.close()
        from tracker.core.stores.http import wait_for_server

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tracker server exited: {self.log.read_text()[-2000:]}")
            if wait_for_server(self.url, 0.5):
                return
        self.kill()
        raise RuntimeError(f"tracker server did not answer: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spool"
    monkeypatch.setenv("TRACKER_SPOOL_DIR", str(path))
    monkeypatch.setenv("TRACKER_QUIET", "1")
    monkeypatch.delenv("TRACKER_API_TOKEN", raising=False)
    return path


@pytest.fixture
def server_store(tmp_path: Path) -> str:
    return str(tmp_path / "server-store")


@pytest.fixture
def server(server_store: str, tmp_path: Path, spool: Path) -> Iterator[ServerProcess]:
    """A running server; yields it (``.url``, ``.store``, ``.log``), stops it after."""
    proc = ServerProcess(server_store, tmp_path / "server.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def make_token(store: str, project: str, scope: str = "write", **kwargs: object) -> str:
    """A token made directly in the server's store, as `tracker token create` does."""
    from tracker.core.stores import open_store
    from tracker.server.tokens import create_token

    st = open_store(store)
    try:
        text, _record = create_token(st, project, scope, **kwargs)  # type: ignore[arg-type]
    finally:
        st.close()
    return text


@contextlib.contextmanager
def token_env(token: str) -> Iterator[None]:
    old = os.environ.get("TRACKER_API_TOKEN")
    os.environ["TRACKER_API_TOKEN"] = token
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TRACKER_API_TOKEN", None)
        else:
            os.environ["TRACKER_API_TOKEN"] = old
