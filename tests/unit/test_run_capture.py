"""What init_run records by itself: system metrics at the set interval, the environment,
and nothing secret."""

from __future__ import annotations

import threading

import pytest

import tracker
from tracker.core import system_metrics


class _Ticks:
    """The sampler's wait, driven by the test: each tick() allows one more reading.

    Stands in for ``stop_event.wait(interval)``, so that the test counts readings it
    asked for instead of readings a wall-clock second happened to allow.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ticks = 0
        self.asked: list[float] = []  # the interval of each wait: one per reading taken

    def __call__(self, stop_event: threading.Event, interval: float) -> bool:
        with self._cond:
            self.asked.append(interval)
            self._cond.notify_all()
            while not stop_event.is_set():
                if self._ticks:
                    self._ticks -= 1
                    return False
                # Woken by tick(); the timeout only re-checks the stop event, which
                # the sampler sets without telling this condition.
                self._cond.wait(0.05)
        return True

    def tick(self) -> None:
        with self._cond:
            self._ticks += 1
            self._cond.notify_all()

    def until_asked(self, n: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.asked) >= n, 30), self.asked


def test_system_metrics_at_the_set_interval_and_stop_on_close(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = _Ticks()
    monkeypatch.setattr(system_metrics, "_wait_for_event", ticks)
    run = tracker.init_run(project="p", store=store, system_metrics=0.1)
    ticks.until_asked(1)  # the first reading is taken at once
    for n in range(2, 11):
        ticks.tick()
        ticks.until_asked(n)
    run.close()
    assert ticks.asked == [0.1] * 10  # every wait was for the interval set
    r = tracker.read_run(run.id, store=store)
    rss = r["sys/process/rss_mb"].fetch_values()
    assert len(rss) == 10
    assert (rss.value > 1).all()
    assert "sys/host/ram_used_percent" in r.paths()
    assert not any(p.startswith("sys/gpu/") for p in r.paths())  # no NVML here: left out
    ticks.tick()  # after close the sampler is gone: no reading follows
    assert len(tracker.read_run(run.id, store=store)["sys/process/rss_mb"].fetch_values()) == 10


def test_system_metrics_do_not_move_the_run_step_counter(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = _Ticks()
    monkeypatch.setattr(system_metrics, "_wait_for_event", ticks)
    with tracker.init_run(project="p", store=store, system_metrics=0.05) as run:
        for n in range(2, 6):  # system samples before the first log call
            ticks.tick()
            ticks.until_asked(n)
        run.log({"loss": 1.0})
        run.log({"loss": 2.0})
    assert tracker.read_run(run.id, store=store)["loss"].fetch_values().step.tolist() == [0, 1]


def test_system_metrics_off(store: str) -> None:
    with tracker.init_run(project="p", store=store, system_metrics=False):
        pass
    r = tracker.read_run(tracker.list_runs(store=store)[0]["id"], store=store)
    assert "sys/process/rss_mb" not in r.paths() and "sys/host/cpu_percent" not in r.paths()


def test_environment_is_recorded(store: str) -> None:
    with tracker.init_run(project="p", store=store, system_metrics=False) as run:
        pass
    r = tracker.read_run(run.id, store=store)
    assert r["sys/python/version"].fetch().count(".") == 2
    assert r["sys/host/name"].fetch()
    assert "pytest" in r["sys/argv"].fetch() or "py" in r["sys/argv"].fetch()


def test_secrets_in_environment_and_config_are_masked(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKER_API_TOKEN", "sekrit-env-value")
    monkeypatch.setenv("HOROVOD_PASSWORD", "sekrit-env-2")
    config = {
        "lr": 0.1,
        "wandb_api_key": "sekrit-config-value",
        "db": {"password": "sekrit-nested", "host": "db.local"},
        "tokenizer_name": "gpt2",
    }
    with tracker.init_run(project="p", store=store, config=config, system_metrics=False) as run:
        pass
    r = tracker.read_run(run.id, store=store)
    fields = r.fields()
    assert fields["config/wandb_api_key"] == "********"
    assert fields["config/db/password"] == "********"
    assert fields["config/db/host"] == "db.local"
    assert fields["config/tokenizer_name"] == "gpt2"  # not a secret, kept
    assert fields["config/lr"] == 0.1
    assert fields["sys/env/TRACKER_API_TOKEN"] == "********"
    # The raw secrets are nowhere in the store's files.
    from pathlib import Path

    for path in Path(store).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"sekrit" not in data, path
