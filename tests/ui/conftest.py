"""The web UI in a real browser: a real ``tracker ui`` (and ``tracker server``) process
over a store written once per session, driven by Debian's Chromium through Playwright.

Skipped, saying what is missing, without /usr/bin/chromium (or $TRACKER_UI_CHROMIUM),
Playwright for Python, or fastapi/uvicorn. Screenshots go to tests/ui/artifacts/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import PYTHON, python_env
from tests.server.conftest import free_port

from .populate import cols_logs, make_many, make_run

CHROMIUM = os.environ.get("TRACKER_UI_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
BIG_POINTS = 10_000_000
SPIKE_STEP = 6_543_210
SPIKE = 1234.5
RANKS = 4


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt install chromium, or set TRACKER_UI_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no playwright (pip install playwright)"
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return "no fastapi/uvicorn (pip install 'tracker-dl[server]')"
    return None


MISSING = _missing()


class UIData:
    """Ids of the runs the session's store holds."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}


def _write_big(store: Any, run_id: str) -> None:
    """A run with one 10,000,000-point series (a sine, one spike, a few NaNs), written
    through the store's applier in 1 M-point batches."""
    make_run(store, run_id, "vision", name="big-run", config={"lr": 0.1}, tags=["big"],
             status=None)  # fmt: skip
    per = 1_000_000
    applier = store.applier(run_id)
    for k in range(BIG_POINTS // per):
        steps = np.arange(k * per, (k + 1) * per, dtype=np.int64)
        vals = np.sin(steps / 50_000.0)
        if k * per <= SPIKE_STEP < (k + 1) * per:
            vals[SPIKE_STEP - k * per] = SPIKE
        if k == 3:
            vals[10:13] = np.nan
        applier.apply([cols_logs(0, {"train/loss": vals}, steps, 1.0e9)], ("0001.jnl", 100 + k))
    applier.apply([("status", "finished", time.time(), None)], ("0001.jnl", 1000))


def _populate(root: Path) -> UIData:
    from tracker.core.stores import open_store

    data = UIData()
    st = open_store(str(root))
    try:
        rng = np.random.default_rng(1)
        steps = 2000
        loss = 2.0 * np.exp(-np.arange(steps) / 400.0) + 0.02 * rng.random(steps)
        loss[1500] = 9.0  # a spike the band keeps
        loss[700] = np.nan
        data.ids["baseline"] = make_run(
            st, "base000001", "vision", name="baseline",
            config={"lr": 0.001, "opt": "adam", "batch": 64, "model/depth": 50, "model/width": 2},
            tags=["baseline", "study:sweep1"],
            series={"train/loss": loss, "val/acc": np.linspace(0.1, 0.9, steps)},
            fields={"sys/git/commit": ("str", "0123456789abcdef"), "sys/host/name": ("str", "node-7"),
                    "sys/packages": ("str", "torch==2.4.0 numpy==2.1.0"),
                    "trial/value": ("float", 0.31),
                    "checkpoints/best": ("file", '{"uri": "s3://bucket/best.pt", "size": 1024, "sha256": "ab12cd34ef56"}')},
            created=time.time() - 3600,
        )  # fmt: skip
        data.ids["other"] = make_run(
            st, "othr000002", "vision", name="higher-lr",
            config={"lr": 0.01, "opt": "sgd", "batch": 64, "model/depth": 50, "model/width": 4},
            tags=["study:sweep1"],
            series={"train/loss": 1.5 * loss[:1500] + 0.1, "val/acc": np.linspace(0.1, 0.7, 1500)},
            fields={"trial/value": ("float", 0.45)}, created=time.time() - 3000,
        )  # fmt: skip
        data.ids["third"] = make_run(
            st, "thrd000003", "vision", name="big-batch",
            config={"lr": 0.003, "opt": "adam", "batch": 256, "model/depth": 101, "model/width": 2},
            tags=["study:sweep1"], series={"train/loss": loss * 0.8, "val/acc": np.linspace(0.2, 0.8, steps)},
            fields={"trial/value": ("float", 0.28)}, created=time.time() - 2900,
        )  # fmt: skip
        data.ids["failed"] = make_run(
            st, "fail000004", "vision", name="oom", config={"lr": 0.1, "opt": "adam", "batch": 1024},
            series={"train/loss": loss[:300]}, status="failed",
            error='Traceback (most recent call last):\n  File "train.py", line 12, in <module>\n'
                  "torch.OutOfMemoryError: CUDA out of memory",
            created=time.time() - 2000,
        )  # fmt: skip
        data.ids["fork"] = make_run(
            st, "fork000005", "vision", name="baseline-fork", config={"lr": 0.0005, "opt": "adam"},
            series={"train/loss": 0.5 * loss[1000:]}, parent=(data.ids["baseline"], 999),
            created=time.time() - 1000,
        )  # fmt: skip
        n = 3000
        per_rank = {}
        for r in range(RANKS):
            diverge = np.linspace(0, 3.0, n) if r == 3 else 0.0
            per_rank[r] = {
                "train/loss": 2.0 * np.exp(-np.arange(n) / 600.0) + 0.01 * r + diverge,
                "per_rank/step_time": 0.1 + 0.005 * rng.random(n) + (0.08 if r == 2 else 0.0),
                "sys/gpu/util": 90.0 - (40.0 if r == 2 else 0.0) + rng.random(n),
            }
        data.ids["ddp"] = make_run(
            st, "ddpr000006", "vision", name="ddp-4gpu", config={"lr": 0.002, "world": RANKS},
            rank_series=per_rank, created=time.time() - 500,
        )  # fmt: skip
        data.ids["big"] = "bigr000007"
        _write_big(st, data.ids["big"])
        make_many(st, 10_000, project="big")
    finally:
        st.close()
    return data


class Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        out = open(log, "ab")
        env = python_env(TRACKER_QUIET="1")
        env.pop("TRACKER_API_TOKEN", None)
        self.log = log
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "tracker.cli", *args, "--port", str(self.port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        out.close()
        import urllib.request

        from tracker.core.stores.http import wait_for_server

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                wait_for_server(self.url, 0.2)
        self.stop()
        raise RuntimeError(f"{args[0]} did not answer: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="session")
def ui_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, UIData]:
    root = tmp_path_factory.mktemp("ui") / "store"
    return root, _populate(root)


@pytest.fixture(scope="session")
def ui_server(
    ui_store: tuple[Path, UIData], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    root, _data = ui_store
    proc = Proc(["ui", "--store", str(root)], tmp_path_factory.mktemp("ui-log") / "ui.log")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def ids(ui_store: tuple[Path, UIData]) -> dict[str, str]:
    return ui_store[1].ids


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if MISSING is not None:
        pytest.skip(MISSING)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"JavaScript errors: {errors}"


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)
