"""Shared fixtures: every test gets its own store directory; nothing touches ./.tracker."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh store directory for one test."""
    return str(tmp_path / "store")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A test that forgets store= must not write into the checkout's .tracker.
    monkeypatch.setenv("TRACKER_STORE", str(tmp_path / "default-store"))
    monkeypatch.delenv("TRACKER_PROJECT", raising=False)
    monkeypatch.delenv("TRACKER_RUN_ID", raising=False)
    # A developer's own webhook must never receive a test's NaN.
    for name in ("TRACKER_ALERT_WEBHOOK", "TRACKER_ALERT_SECRET", "TRACKER_RANK_SILENT_AFTER"):
        monkeypatch.delenv(name, raising=False)


def python_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python that imports this checkout's tracker."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


PYTHON = sys.executable
