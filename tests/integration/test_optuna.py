"""Optuna TrackerCallback: one run per trial, grouped under the study; threads and processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="needs optuna (pip install 'tracker-dl[optuna]')")

import tracker  # noqa: E402
from tracker.integrations.optuna import TrackerCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _trial_runs(store: str, study: optuna.Study) -> dict[int, dict]:
    rows = tracker.list_runs(store=store, tags=[TrackerCallback.study_tag(study)])
    by_number = {row["config"]["sweep"]["trial"]: row for row in rows}
    assert len(by_number) == len(rows), "two runs for one trial"
    return by_number


def _record(store: str, study: optuna.Study):
    return tracker.read_run(TrackerCallback.study_run_id(study), store=store)


# -- the callback fed made-up trials --------------------------------------------------------


def test_made_up_trials_complete_pruned_and_failed(store: str) -> None:
    study = optuna.create_study(study_name="made-up", direction="maximize")
    cb = TrackerCallback(project="o", store=store, system_metrics=False)
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
    made = [
        optuna.trial.create_trial(
            params={"lr": 0.1}, distributions=dist, value=0.8, intermediate_values={0: 0.5, 2: 0.7}
        ),
        optuna.trial.create_trial(
            params={"lr": 0.01},
            distributions=dist,
            state=optuna.trial.TrialState.PRUNED,
            intermediate_values={0: 0.1},
        ),
        optuna.trial.create_trial(
            params={"lr": 0.5}, distributions=dist, state=optuna.trial.TrialState.FAIL
        ),
    ]
    for trial in made:
        study.add_trial(trial)
    for frozen in study.trials:
        cb(study, frozen)
    runs = _trial_runs(store, study)
    assert sorted(runs) == [0, 1, 2]
    assert [runs[n]["status"] for n in (0, 1, 2)] == ["finished", "finished", "failed"]
    assert "pruned" in runs[1]["tags"]
    assert runs[0]["config"]["lr"] == 0.1
    done = tracker.read_run(runs[0]["id"], store=store)
    assert done["trial/value"].fetch() == 0.8
    assert done["trial/state"].fetch() == "complete"
    inter = done["trial/intermediate"].fetch_values()
    assert inter.step.tolist() == [0, 2] and inter.value.tolist() == [0.5, 0.7]
    assert tracker.read_run(runs[2]["id"], store=store)["trial/state"].fetch() == "fail"
    record = _record(store, study)
    assert record["study/direction"].fetch() == "maximize"
    assert record["study/best_trial"].fetch() == 0
    assert record["study/best_value"].fetch() == 0.8
    assert record["study/n_trials"].fetch() == 3
    assert "optuna-study" in tracker.list_runs(store=store, tags=["optuna-study"])[0]["tags"]
    # The config filter finds the study's trials and its record.
    assert len(tracker.list_runs(store=store, config={"sweep": {"study": "made-up"}})) == 4


# -- real studies ---------------------------------------------------------------------------


def test_study_with_pruning_and_per_trial_curves(store: str) -> None:
    cb = TrackerCallback(project="o", store=store, system_metrics=False, tags=["sweep-a"])

    @cb.track
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -4.0, 4.0)
        run = cb.run_for(trial)
        for epoch in range(4):
            loss = (x - 1.0) ** 2 + 1.0 / (epoch + 1)
            run.log({"train/loss": loss}, step=epoch)
            trial.report(loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss

    study = optuna.create_study(
        study_name="curves",
        sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    study.optimize(objective, n_trials=8, callbacks=[cb])
    runs = _trial_runs(store, study)
    assert sorted(runs) == list(range(8))
    for trial in study.trials:
        row = runs[trial.number]
        assert "sweep-a" in row["tags"]
        assert row["config"]["x"] == pytest.approx(trial.params["x"])
        r = tracker.read_run(row["id"], store=store)
        assert r["trial/state"].fetch() == trial.state.name.lower()
        assert len(r["train/loss"].fetch_values()) == len(trial.intermediate_values)
        assert r["trial/intermediate"].fetch_values().step.tolist() == sorted(
            trial.intermediate_values
        )
        assert ("pruned" in row["tags"]) == (trial.state == optuna.trial.TrialState.PRUNED)
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    record = _record(store, study)
    assert record["study/best_trial"].fetch() == study.best_trial.number
    assert record["study/best_value"].fetch() == pytest.approx(study.best_value)


def test_failed_trials_close_failed_whether_caught_or_not(store: str) -> None:
    cb = TrackerCallback(project="o", store=store, system_metrics=False)

    @cb.track
    def objective(trial: optuna.Trial) -> float:
        cb.run_for(trial).log({"train/loss": 1.0}, step=0)
        if trial.number == 0:
            raise ValueError("caught by optuna")
        raise KeyError("re-raised by optuna")

    study = optuna.create_study(study_name="failing")
    study.optimize(objective, n_trials=1, catch=(ValueError,), callbacks=[cb])
    with pytest.raises(KeyError):
        study.optimize(objective, n_trials=1, catch=(ValueError,), callbacks=[cb])
    runs = _trial_runs(store, study)
    assert [runs[n]["status"] for n in (0, 1)] == ["failed", "failed"]
    for n in (0, 1):
        assert tracker.read_run(runs[n]["id"], store=store)["trial/state"].fetch() == "fail"


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_multi_objective_values_and_pareto_front(store: str) -> None:
    cb = TrackerCallback(project="o", store=store, system_metrics=False)
    study = optuna.create_study(study_name="multi", directions=["minimize", "maximize"])
    study.set_metric_names(["error", "speed"])
    study.optimize(
        lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)),
        n_trials=4,
        callbacks=[cb],
    )
    runs = _trial_runs(store, study)
    for trial in study.trials:
        r = tracker.read_run(runs[trial.number]["id"], store=store)
        assert r["trial/values/error"].fetch() == trial.values[0]
        assert r["trial/values/speed"].fetch() == trial.values[1]
    record = _record(store, study)
    assert record["study/directions"].fetch() == "minimize,maximize"
    assert record["study/best_trials"].fetch() == str(sorted(t.number for t in study.best_trials))


def test_four_threads_every_trial_exactly_one_run(store: str) -> None:
    cb = TrackerCallback(project="o", store=store, system_metrics=False)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -2.0, 2.0)
        cb.run_for(trial).log({"x2": x * x}, step=0)
        return x * x

    study = optuna.create_study(study_name="threads")
    study.optimize(objective, n_trials=16, n_jobs=4, callbacks=[cb])
    runs = _trial_runs(store, study)
    assert sorted(runs) == list(range(16))
    assert all(row["status"] == "finished" for row in runs.values())
    record = _record(store, study)
    assert record["study/best_trial"].fetch() == study.best_trial.number
    assert record["study/n_trials"].fetch() == 16


_PROCESS = """
import sys
import optuna
from tracker.integrations.optuna import TrackerCallback

journal, store = sys.argv[1], sys.argv[2]
try:
    backend = optuna.storages.journal.JournalFileBackend(journal)
except AttributeError:  # optuna < 4
    backend = optuna.storages.JournalFileStorage(journal)
storage = optuna.storages.JournalStorage(backend)
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="shared", storage=storage)
cb = TrackerCallback(project="o", store=store, system_metrics=False)

def objective(trial):
    x = trial.suggest_float("x", -3.0, 3.0)
    for step in range(3):
        trial.report(x * x + 1.0 / (step + 1), step)
    return x * x

study.optimize(objective, n_trials=5, callbacks=[cb])
"""


@pytest.mark.distributed
def test_three_processes_share_one_storage_and_one_store(tmp_path: Path, store: str) -> None:
    journal = str(tmp_path / "optuna.log")
    try:
        backend = optuna.storages.journal.JournalFileBackend(journal)
    except AttributeError:  # optuna < 4
        backend = optuna.storages.JournalFileStorage(journal)
    storage = optuna.storages.JournalStorage(backend)
    optuna.create_study(study_name="shared", storage=storage)
    script = tmp_path / "worker.py"
    script.write_text(_PROCESS)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), journal, store],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        outputs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 15
    runs = _trial_runs(store, study)
    assert sorted(runs) == list(range(15))
    for trial in study.trials:
        r = tracker.read_run(runs[trial.number]["id"], store=store)
        assert r.status == "finished"
        assert r["trial/value"].fetch() == pytest.approx(trial.value)
        assert len(r["trial/intermediate"].fetch_values()) == 3
    record = _record(store, study)
    assert record["study/best_trial"].fetch() == study.best_trial.number
    assert record["study/best_value"].fetch() == pytest.approx(study.best_value)
    assert record["study/n_trials"].fetch() == 15


# -- one study, one set of run ids -----------------------------------------------------------


def _xy_objective(cb: TrackerCallback, offset: float):
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -1.0, 1.0)
        cb.run_for(trial).log({"y": x + offset}, step=0)
        return x + offset

    return objective


def _check_own_runs(store: str, study: optuna.Study, offset: float) -> None:
    """Every trial of ``study`` has its own run, holding this study's params and curve."""
    sid = TrackerCallback.study_run_id(study)
    for trial in study.trials:
        r = tracker.read_run(f"{sid}-t{trial.number}", store=store)
        assert r.status == "finished"
        assert r["config/x"].fetch() == pytest.approx(trial.params["x"])
        assert r["y"].fetch_values().value.tolist() == pytest.approx([trial.value])
        assert r["trial/value"].fetch() == pytest.approx(trial.params["x"] + offset)
    record = tracker.read_run(sid, store=store)
    assert record["study/n_trials"].fetch() == len(study.trials)
    assert record["study/best_value"].fetch() == pytest.approx(study.best_value)


def test_rerunning_a_named_in_memory_study_gets_new_run_ids(store: str) -> None:
    cb = TrackerCallback(project="o", store=store, system_metrics=False)
    first = optuna.create_study(study_name="rerun", sampler=optuna.samplers.RandomSampler(0))
    first.optimize(_xy_objective(cb, 0.0), n_trials=3, callbacks=[cb])
    # The same cell run again: a new in-memory study of the same name (its id is 0 again).
    second = optuna.create_study(study_name="rerun", sampler=optuna.samplers.RandomSampler(1))
    second.optimize(_xy_objective(cb, 10.0), n_trials=3, callbacks=[cb])
    assert TrackerCallback.study_run_id(first) != TrackerCallback.study_run_id(second)
    _check_own_runs(store, first, 0.0)
    _check_own_runs(store, second, 10.0)
    assert len(tracker.list_runs(store=store)) == 2 * (3 + 1)


def test_a_study_recreated_in_a_new_database_gets_new_run_ids(tmp_path: Path, store: str) -> None:
    cb = TrackerCallback(project="o", store=store, system_metrics=False)
    studies = []
    for db, offset in (("a.db", 0.0), ("b.db", 10.0)):
        # Both databases number their first study 1.
        storage = f"sqlite:///{tmp_path / db}"
        study = optuna.create_study(study_name="recreated", storage=storage)
        study.optimize(_xy_objective(cb, offset), n_trials=2, callbacks=[cb])
        # Loaded again (as another process sharing the database loads it): the same ids.
        again = optuna.load_study(study_name="recreated", storage=storage)
        assert TrackerCallback.study_run_id(again) == TrackerCallback.study_run_id(study)
        studies.append((study, offset))
    assert len({TrackerCallback.study_run_id(s) for s, _ in studies}) == 2
    for study, offset in studies:
        _check_own_runs(store, study, offset)


# -- failed trials: failed, with their reason, whichever way Optuna ends them ---------------


def _failing_objective(cb: TrackerCallback, track: bool, open_run: bool = True):
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if open_run:
            cb.run_for(trial).log({"train/loss": x}, step=0)
        if trial.number == 1:
            raise ValueError(f"diverged at x={x:.3f}")
        return x

    return cb.track(objective) if track else objective


def _check_failed(store: str, study: optuna.Study, number: int, reason: str) -> None:
    sid = TrackerCallback.study_run_id(study)
    r = tracker.read_run(f"{sid}-t{number}", store=store)
    assert r.status == "failed"
    assert r["trial/state"].fetch() == "fail"
    assert r["trial/error"].fetch().startswith(reason)
    assert reason in r["sys/failure/traceback"].fetch()  # the run's error: the traceback
    record = tracker.read_run(sid, store=store)
    finished = [t for t in study.get_trials() if t.state.is_finished()]
    assert record["study/n_trials"].fetch() == len(finished)


@pytest.mark.parametrize("track", [True, False], ids=["track", "no-track"])
@pytest.mark.parametrize("caught", [True, False], ids=["catch", "escapes"])
def test_a_failed_trial_reads_failed_with_its_reason(store: str, track: bool, caught: bool) -> None:
    cb = TrackerCallback(project="o", store=store, system_metrics=False)
    study = optuna.create_study(study_name=f"fails-{track}-{caught}")
    objective = _failing_objective(cb, track)
    if caught:
        study.optimize(objective, n_trials=3, catch=(ValueError,), callbacks=[cb])
    else:
        with pytest.raises(ValueError, match="diverged"):
            study.optimize(objective, n_trials=3, callbacks=[cb])
    states = [t.state.name for t in study.trials]
    assert states == (["COMPLETE", "FAIL", "COMPLETE"] if caught else ["COMPLETE", "FAIL"])
    _check_failed(store, study, 1, "ValueError: diverged at x=")
    sid = TrackerCallback.study_run_id(study)
    done = tracker.read_run(f"{sid}-t0", store=store)
    assert done.status == "finished"
    assert "trial/error" not in done.paths()
    record = tracker.read_run(sid, store=store)
    assert record["study/n_trials"].fetch() == len(states)


@pytest.mark.parametrize("caught", [True, False], ids=["catch", "escapes"])
def test_a_trial_that_fails_before_opening_its_run_still_gets_a_failed_run(
    store: str, caught: bool
) -> None:
    cb = TrackerCallback(project="o", store=store, system_metrics=False)
    study = optuna.create_study(study_name=f"early-{caught}")
    objective = _failing_objective(cb, track=False, open_run=False)
    if caught:
        study.optimize(objective, n_trials=2, catch=(ValueError,), callbacks=[cb])
    else:
        with pytest.raises(ValueError):
            study.optimize(objective, n_trials=2, callbacks=[cb])
    _check_failed(store, study, 1, "ValueError: diverged at x=")
    assert tracker.read_run(f"{TrackerCallback.study_run_id(study)}-t1", store=store)[
        "config/x"
    ].fetch() == pytest.approx(study.trials[1].params["x"])


def test_a_value_optuna_refuses_fails_the_trial_with_the_value_as_reason(store: str) -> None:
    cb = TrackerCallback(project="o", store=store, system_metrics=False)
    study = optuna.create_study(study_name="nan")
    study.optimize(lambda t: float("nan"), n_trials=1, callbacks=[cb])
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    r = tracker.read_run(f"{TrackerCallback.study_run_id(study)}-t0", store=store)
    assert r.status == "failed"
    assert "nan" in r["trial/error"].fetch()


def test_a_failure_escaping_from_a_thread_of_n_jobs_leaves_no_run_open(store: str) -> None:
    cb = TrackerCallback(project="o", store=store, system_metrics=False)
    study = optuna.create_study(study_name="threads-fail")
    with pytest.raises(ValueError):
        study.optimize(_failing_objective(cb, track=False), n_trials=8, n_jobs=2, callbacks=[cb])
    runs = _trial_runs(store, study)
    assert sorted(runs) == [t.number for t in study.trials]
    for trial in study.trials:
        expected = "failed" if trial.state == optuna.trial.TrialState.FAIL else "finished"
        assert runs[trial.number]["status"] == expected
    _check_failed(store, study, 1, "ValueError: diverged at x=")
