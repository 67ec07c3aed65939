"""What init_run records by itself: system metrics at the set interval, the environment,
and nothing secret."""

from __future__ import annotations

import time

import pytest

import tracker


def test_system_metrics_at_the_set_interval_and_stop_on_close(store: str) -> None:
    run = tracker.init_run(project="p", store=store, system_metrics=0.1)
    time.sleep(1.05)
    run.close()
    r = tracker.read_run(run.id, store=store)
    rss = r["sys/process/rss_mb"].fetch_values()
    assert 5 <= len(rss) <= 13, len(rss)  # about ten samples in a second
    gaps = rss.timestamp[1:] - rss.timestamp[:-1]
    assert 0.05 < float(gaps.mean()) < 0.3
    assert (rss.value > 1).all()
    assert "sys/host/ram_used_percent" in r.paths()
    assert not any(p.startswith("sys/gpu/") for p in r.paths())  # no NVML here: left out
    time.sleep(0.3)
    assert len(tracker.read_run(run.id, store=store)["sys/process/rss_mb"].fetch_values()) == len(
        rss
    )


def test_system_metrics_do_not_move_the_run_step_counter(store: str) -> None:
    with tracker.init_run(project="p", store=store, system_metrics=0.05) as run:
        time.sleep(0.3)
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
