"""Events: NaN/inf found on the writer, watch rules, silence, run.alert, reading them back
(read_run(...).events(), `tracker events`), and that they travel with the journal."""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tracker
from tracker.cli import main
from tracker.core import events as ev
from tracker.core.watch import Watcher, check_rule


def _events(run_id: str, store: str, **kw: object) -> list[dict]:
    return tracker.read_run(run_id, store=store).events(**kw)


def test_nan_becomes_one_event_with_its_step_and_rank_and_one_warning(store: str) -> None:
    run = tracker.init_run(project="p", store=store)
    with pytest.warns(RuntimeWarning, match=r"train/loss is NaN at step 7 on rank 0"):
        for step in range(20):
            value = float("nan") if step in (7, 9) else 1.0 / (step + 1)
            run.log({"train/loss": value, "train/lr": 0.1}, step=step)
        run.flush()
    run.close()
    found = _events(run.id, store)
    assert [(e["kind"], e["path"], e["step"], e["rank"]) for e in found] == [
        ("nonfinite", "train/loss", 7, 0)
    ]
    assert found[0]["value"] == "nan" and found[0]["level"] == "warning"
    # The values are stored as they were logged, NaN included.
    values = tracker.read_run(run.id, store=store)["train/loss"].fetch_values().value
    assert np.isnan(values[7]) and np.isnan(values[9]) and values[8] == pytest.approx(1 / 9)


def test_inf_and_minus_inf_in_two_series_each_give_their_own_event(store: str) -> None:
    run = tracker.init_run(project="p", store=store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run.log({"a": 1.0, "b": 1.0}, step=0)
        run.log({"a": math.inf, "b": 2.0}, step=1)
        run.log({"a": 3.0, "b": -math.inf}, step=2)
        run["c"].append(float("nan"), step=3)  # a series of its own call
        run.close()
    got = {(e["path"], e["step"], e["value"]) for e in _events(run.id, store)}
    assert got == {("a", 1, "inf"), ("b", 2, "-inf"), ("c", 3, "nan")}


def test_nan_in_a_call_that_holds_text_is_found(store: str) -> None:
    run = tracker.init_run(project="p", store=store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run.log({"note": "warmup", "loss": float("nan")}, step=4)
        run.close()
    found = _events(run.id, store, kind="nonfinite")
    assert [(e["path"], e["step"]) for e in found] == [("loss", 4)]


def test_watching_can_be_turned_off_per_path_and_for_the_run(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tracker.init_run(project="p", store=store)
    run.watch("grad_norm", nonfinite=False)  # AMP overflow steps are routine here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.log({"grad_norm": math.inf, "loss": 1.0}, step=0)
        run.close()
    assert _events(run.id, store) == []
    assert not [w for w in caught if "non-finite" in str(w.message)]

    monkeypatch.setenv("TRACKER_WATCH", "0")
    run = tracker.init_run(project="p", store=store)
    run.log({"loss": float("nan")}, step=0)
    run.close()
    assert _events(run.id, store) == []


def test_system_metrics_reading_nan_are_no_alarm(store: str) -> None:
    run = tracker.init_run(project="p", store=store, system_metrics=False)
    run._log_system({"sys/gpu/0/power_w": float("nan")})
    run.close()
    assert _events(run.id, store) == []


def test_a_spike_rule_fires_at_the_spike_once_per_cooldown(store: str) -> None:
    rng = np.random.default_rng(0)
    run = tracker.init_run(project="p", store=store)
    run.watch("loss", zscore=6, window=50, cooldown=100)
    t0 = 1_700_000_000.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(400):
            value = 1.0 + 0.01 * rng.standard_normal()
            if step in (200, 230, 350):
                value = 5.0  # 230 is within 100 s of 200: held back by the cooldown
            run["loss"].append(value, step=step, timestamp=t0 + step)
        run.close()
    spikes = _events(run.id, store, kind="spike")
    assert [(e["step"], e["rank"], e["path"]) for e in spikes] == [
        (200, 0, "loss"),
        (350, 0, "loss"),
    ]
    assert spikes[0]["zscore"] > 6 and spikes[0]["value"] == 5.0


def test_threshold_rules_above_and_below(store: str) -> None:
    run = tracker.init_run(project="p", store=store)
    run.watch("gpu/temp", above=85, below=10, cooldown=60)
    t0 = 1_700_000_000.0
    temps = [70, 86, 90, 91, 70, 5, 88, 70]
    seconds = [0, 10, 20, 30, 40, 50, 80, 90]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step, (temp, s) in enumerate(zip(temps, seconds, strict=True)):
            run["gpu/temp"].append(float(temp), step=step, timestamp=t0 + s)
        run.close()
    found = _events(run.id, store, kind="threshold")
    # above: at 10 s, then nothing until 70 s; 88 at 80 s fires again. below: 5 at 50 s.
    assert [(e["step"], e["value"]) for e in found] == [(1, 86.0), (5, 5.0), (6, 88.0)]
    assert "above 85" in found[0]["message"] and "below 10" in found[1]["message"]


def test_rules_are_checked_at_the_call() -> None:
    run = tracker.init_run(project="p", mode="disabled")
    with pytest.raises(ValueError, match="zscore must be above 0"):
        run.watch("loss", zscore=-1)
    with pytest.raises(TypeError, match="above must be a number"):
        run.watch("loss", above="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window must be an int"):
        run.watch("loss", zscore=3, window=2)
    with pytest.raises(ValueError, match="empty part"):
        run.watch("loss//x", above=1)
    run.watch("loss", zscore=3)  # a disabled run accepts rules and does nothing


def test_rule_state_is_per_rank() -> None:
    # Rank 1's values must not feed rank 0's window: a rank at another level is no spike.
    watcher = Watcher(nonfinite=True, silent_after=300)
    watcher.add_rule(check_rule("x", zscore=5, window=20))

    def batch(rank: int, values: list[float], start: int) -> list:
        steps = np.arange(start, start + len(values), dtype=np.int64)
        ts = np.full(len(values), 1.0e9) + steps
        cols = ("cols", ("x",), steps.tobytes(), ts.tobytes(), np.array(values).tobytes(), None)
        return [("logs", rank, len(values), [cols])]

    calm = list(1.0 + 0.01 * np.sin(np.arange(30)))
    assert watcher.scan(batch(0, calm, 0)) == []
    assert watcher.scan(batch(1, [v + 100 for v in calm], 0)) == []
    found = watcher.scan(batch(1, [1.0], 30))
    assert [(e["kind"], e["rank"], e["step"]) for e in found] == [("spike", 1, 30)]


def test_alert_is_stored_masked_with_rank_and_step(store: str) -> None:
    run = tracker.init_run(project="p", store=store)
    for step in range(5):
        run.log({"loss": 1.0}, step=step)
    run.alert("accuracy stuck", "see postgresql://bob:hunter2@db/x", level="error")
    with pytest.raises(ValueError, match="level must be one of info, warning, error"):
        run.alert("x", level="fatal")
    with pytest.raises(ValueError, match="title must be a non-empty str"):
        run.alert("")
    run.close()
    (event,) = _events(run.id, store)
    assert event["kind"] == "alert" and event["level"] == "error"
    assert event["rank"] == 0 and event["step"] == 4
    assert event["title"] == "accuracy stuck"
    assert "hunter2" not in json.dumps(event) and "bob" in event["text"]


def test_a_run_that_stops_logging_becomes_a_silent_run_event(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKER_RANK_SILENT_AFTER", "1")
    run = tracker.init_run(project="p", store=store, system_metrics=False)
    run.log({"loss": 1.0}, step=3)
    run.flush()
    with pytest.warns(RuntimeWarning, match="no points for"):
        time.sleep(2.2)  # the writer checks every flush interval (0.5 s)
        run.flush()
    run.log({"loss": 0.9}, step=4)
    run.close()
    (event,) = _events(run.id, store, kind="silent_run")
    assert event["step"] == 3 and event["rank"] is None and event["silent_for"] >= 1


def test_events_filter_and_the_cli(store: str) -> None:
    run = tracker.init_run(project="p", store=store, name="night")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run.log({"loss": float("nan")}, step=2)
        run.alert("checkpoint saved", level="info")
        run.close()
    assert [e["kind"] for e in _events(run.id, store, level="warning")] == ["nonfinite"]
    assert len(_events(run.id, store)) == 2
    with pytest.raises(ValueError, match="use one of info, warning, error"):
        _events(run.id, store, level="loud")

    cli = CliRunner()
    out = cli.invoke(main, ["events", "night", "--store", store, "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["run"] == run.id and [e["kind"] for e in doc["events"]] == ["nonfinite", "alert"]
    out = cli.invoke(main, ["events", run.id, "--store", store, "--kind", "nonfinite"])
    assert out.exit_code == 0, out.output
    assert "loss is NaN at step 2 on rank 0" in out.output and "checkpoint" not in out.output
    out = cli.invoke(main, ["show", run.id, "--store", store])
    assert out.exit_code == 0, out.output
    assert f"2 (nonfinite 1, alert 1): `tracker events {run.id}`" in out.output
    assert "sys/events" not in out.output  # the line above stands for the series


def test_events_travel_with_an_offline_journal(store: str, tmp_path: Path) -> None:
    run = tracker.init_run(project="p", store=store, mode="offline")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run.log({"loss": float("inf")}, step=11)
        run.close()
    out = CliRunner().invoke(main, ["sync", "--store", store])
    assert out.exit_code == 0, out.output
    assert [(e["kind"], e["step"]) for e in _events(run.id, store)] == [("nonfinite", 11)]


def test_event_text_round_trips_and_ignores_foreign_points() -> None:
    event = ev.make_event("spike", path="x", step=3, rank=2, value=np.float32("inf"))
    assert ev.decode(ev.encode(event)) == event and event["value"] == "inf"
    assert ev.decode("not json") is None and ev.decode('{"a": 1}') is None
    with pytest.raises(ValueError, match="event level"):
        ev.make_event("alert", level="loud")


def test_a_failing_watch_never_costs_a_point(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Watcher, batch: list, now: float | None = None) -> list:
        raise RuntimeError("boom")

    monkeypatch.setattr(Watcher, "scan", broken)
    with pytest.warns(RuntimeWarning, match=r"watching its points failed \(RuntimeError: boom\)"):
        run = tracker.init_run(project="p", store=store, system_metrics=False)
        for step in range(100):
            run.log({"loss": 1.0}, step=step)
        run.flush()
    run.close()
    assert len(tracker.read_run(run.id, store=store)["loss"].fetch_values()) == 100


def test_other_ranks_activity_keeps_a_run_from_counting_as_silent() -> None:
    # In a distributed run other ranks' points reach the store through the ingest
    # process, which tells rank 0's watcher (note_activity) that the run goes on.
    watcher = Watcher(nonfinite=True, silent_after=1.0)
    steps = np.array([5], dtype=np.int64)
    cols = ("cols", ("loss",), steps.tobytes(), np.array([1e9]).tobytes(), b"\0" * 8, None)
    assert watcher.scan([("logs", 0, 1, [cols])], now=100.0) == []
    watcher.note_activity(100.8)
    assert watcher.idle(101.5) == []  # 0.7 s after the other ranks' points
    (event,) = watcher.idle(101.9)
    assert event["kind"] == "silent_run" and event["step"] == 5
    assert watcher.idle(105.0) == []  # one event per silence
    watcher.note_activity(106.0)
    assert [e["kind"] for e in watcher.idle(107.5)] == ["silent_run"]  # re-armed
