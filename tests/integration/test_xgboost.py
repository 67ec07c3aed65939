"""XGBoost TrackerCallback: hook-level tests with made-up eval logs, then real trainings."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost", reason="needs xgboost (pip install 'tracker-dl[xgboost]')")

import tracker  # noqa: E402
from tracker.integrations.xgboost import TrackerCallback  # noqa: E402


def _data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4))
    return x, (x[:, 0] + 0.3 * rng.random(n) > 0.6).astype(int)


def _booster() -> xgb.Booster:
    """A booster with 2 rounds: training it further is a continued training."""
    x, y = _data(50)
    return xgb.train({"max_depth": 2, "objective": "binary:logistic"}, xgb.DMatrix(x, y), 2)


def _untrained() -> xgb.Booster:
    """What xgboost.train hands callbacks when it starts from scratch: no rounds yet."""
    x, y = _data(50)
    return xgb.Booster({"max_depth": 2, "objective": "binary:logistic"}, [xgb.DMatrix(x, y)])


PARAMS = {"max_depth": 2, "eta": 0.3, "objective": "binary:logistic", "eval_metric": "logloss"}


def _split() -> tuple[xgb.DMatrix, xgb.DMatrix]:
    x, y = _data()
    return xgb.DMatrix(x[:150], y[:150]), xgb.DMatrix(x[150:], y[150:])


def _train(
    cb: TrackerCallback, rounds: int, xgb_model: xgb.Booster | None = None
) -> tuple[xgb.Booster, list[float]]:
    """A real xgboost.train through ``cb``; the booster and its valid/logloss history."""
    dtrain, dvalid = _split()
    result: dict = {}
    booster = xgb.train(
        PARAMS,
        dtrain,
        num_boost_round=rounds,
        evals=[(dvalid, "valid")],
        evals_result=result,
        xgb_model=xgb_model,
        callbacks=[cb],
        verbose_eval=False,
    )
    return booster, result["valid"]["logloss"]


def _lower_step_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "lower than its last step" in str(w.message)]


def _only_run(store: str):
    runs = tracker.list_runs(store=store)
    assert len(runs) == 1, runs
    return tracker.read_run(runs[0]["id"], store=store)


# -- hooks fed made-up eval logs ------------------------------------------------------------


def test_hooks_record_params_every_metric_best_and_importance(store: str) -> None:
    run = tracker.init_run("x", store=store, system_metrics=False)
    cb = TrackerCallback(run)
    # The booster has 2 rounds already, so XGBoost's iterations 0..2 are rounds 2..4.
    booster = _booster()
    cb.before_training(booster)
    history = {"train": {"logloss": [], "auc": []}, "valid": {"logloss": [], "auc": []}}
    for epoch, (loss, auc) in enumerate([(0.6, 0.7), (0.4, 0.9), (0.5, 0.8)]):
        for name in history:
            history[name]["logloss"].append(loss)
            history[name]["auc"].append(auc)
        assert cb.after_iteration(booster, epoch, history) is False
    cb.after_training(booster)
    assert run.status == "running"  # a run passed in is the caller's to close
    run.close()
    r = tracker.read_run(run.id, store=store)
    assert r["valid/logloss"].fetch_values().value.tolist() == [0.6, 0.4, 0.5]
    assert r["train/auc"].fetch_values().step.tolist() == [2, 3, 4]
    # The last eval set's last metric decides, and larger AUC is better.
    assert r["best/metric"].fetch() == "valid/auc"
    assert r["best/score"].fetch() == 0.9
    assert r["best/iteration"].fetch() == 3  # the booster's round
    assert r["config/params/max_depth"].fetch() == 2
    assert r["config/params/objective"].fetch() == "binary:logistic"
    assert r["importance/gain/f0"].fetch() > 0
    assert r["importance/weight/f0"].fetch() >= 1


def test_iterations_that_never_reached_the_callback_are_logged_at_the_end(store: str) -> None:
    # Once a callback (early stopping) asks to stop, XGBoost asks no other callback about
    # that iteration; its scores are still in the shared history.
    run = tracker.init_run("x", store=store, system_metrics=False)
    cb = TrackerCallback(run)
    booster = _untrained()
    cb.before_training(booster)
    history: dict = {"valid": {"rmse": []}}
    for epoch, score in zip(range(10, 12), (3.0, 2.0), strict=True):
        history["valid"]["rmse"].append(score)
        cb.after_iteration(booster, epoch, history)
    history["valid"]["rmse"].append(1.0)
    cb.after_training(booster)
    run.close()
    r = tracker.read_run(run.id, store=store)
    series = r["valid/rmse"].fetch_values()
    assert series.step.tolist() == [10, 11, 12]
    assert series.value.tolist() == [3.0, 2.0, 1.0]
    assert r["best/iteration"].fetch() == 12


def test_a_worker_other_than_rank_0_never_touches_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xgboost import collective

    monkeypatch.setattr(collective, "is_distributed", lambda: True)
    monkeypatch.setattr(collective, "get_rank", lambda: 1)
    monkeypatch.setattr(collective, "get_world_size", lambda: 2)
    store = tmp_path / "store"
    cb = TrackerCallback(project="x", store=str(store))
    booster = _booster()
    cb.before_training(booster)
    cb.after_iteration(booster, 0, {"valid": {"logloss": [0.5]}})
    cb.after_training(booster)
    assert cb.run is None
    assert not store.exists()


def test_copies_share_the_run_and_a_run_cannot_travel(store: str) -> None:
    run = tracker.init_run("x", store=store, system_metrics=False)
    cb = TrackerCallback(run)
    assert copy.deepcopy(cb)._given_run is run
    with pytest.raises(TypeError, match="project="):
        pickle.dumps(cb)
    clone = pickle.loads(pickle.dumps(TrackerCallback(project="x", store=store)))
    assert clone._project == "x"
    run.close()


# -- real trainings -------------------------------------------------------------------------


def test_train_with_early_stopping_and_a_saved_model(tmp_path: Path, store: str) -> None:
    x, y = _data()
    dtrain, dvalid = xgb.DMatrix(x[:150], y[:150]), xgb.DMatrix(x[150:], y[150:])
    model_file = tmp_path / "model.json"
    cb = TrackerCallback(project="x", store=store, save_model=model_file, system_metrics=False)
    booster = xgb.train(
        {"max_depth": 2, "eta": 0.5, "objective": "binary:logistic", "eval_metric": "logloss"},
        dtrain,
        num_boost_round=40,
        evals=[(dtrain, "train"), (dvalid, "valid")],
        early_stopping_rounds=3,
        callbacks=[cb],
        verbose_eval=False,
    )
    r = _only_run(store)
    assert r.status == "finished"
    n = booster.num_boosted_rounds()
    assert r["valid/logloss"].fetch_values().step.tolist() == list(range(n))
    assert len(r["train/logloss"].fetch_values()) == n
    assert r["best/iteration"].fetch() == booster.best_iteration
    assert r["best/score"].fetch() == pytest.approx(booster.best_score)
    assert r["config/params/eta"].fetch() == pytest.approx(0.5)
    assert model_file.exists()
    assert r["model/file"].fetch()["size"] == model_file.stat().st_size


def test_sklearn_estimator_and_clone(store: str) -> None:
    from sklearn.base import clone

    x, y = _data()
    run = tracker.init_run("x", store=store, system_metrics=False)
    clf = xgb.XGBClassifier(n_estimators=5, max_depth=2, callbacks=[TrackerCallback(run)])
    clone(clf).fit(x[:150], y[:150], eval_set=[(x[150:], y[150:])], verbose=False)
    run.close()
    r = tracker.read_run(run.id, store=store)
    assert r["validation_0/logloss"].fetch_values().step.tolist() == [0, 1, 2, 3, 4]
    assert r["config/params/max_depth"].fetch() == 2
    assert r["best/metric"].fetch() == "validation_0/logloss"


# -- several trainings through one callback ------------------------------------------------


def test_continued_training_logs_absolute_rounds_in_the_same_run(store: str) -> None:
    cb = TrackerCallback(project="x", store=store, system_metrics=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, first_scores = _train(cb, 4)
        # XGBoost numbers the continued training's iterations 0..2 again.
        second, second_scores = _train(cb, 3, xgb_model=first)
    assert not _lower_step_warnings(caught)
    assert second.num_boosted_rounds() == 7
    r = _only_run(store)
    assert r.status == "finished"
    series = r["valid/logloss"].fetch_values()
    assert series.step.tolist() == list(range(7))
    assert series.value.tolist() == pytest.approx(first_scores + second_scores)
    # Nothing was superseded: the continuation began where the first training ended.
    assert len(r["valid/logloss"].fetch_values(include_superseded=True)) == 7
    # The best round is the model's, among the rounds of the training that made it.
    assert 4 <= r["best/iteration"].fetch() <= 6
    assert r["best/score"].fetch() == pytest.approx(min(second_scores))


def test_continuing_an_earlier_checkpoint_supersedes_what_came_after_it(store: str) -> None:
    cb = TrackerCallback(project="x", store=store, system_metrics=False)
    first, first_scores = _train(cb, 6)
    checkpoint = first[:3]  # the model as it was after round 2
    assert checkpoint.num_boosted_rounds() == 3
    _, again = _train(cb, 2, xgb_model=checkpoint)
    r = _only_run(store)
    shown = r["valid/logloss"].fetch_values()
    assert shown.step.tolist() == [0, 1, 2, 3, 4]
    assert shown.value.tolist() == pytest.approx(first_scores[:3] + again)
    # Rounds 3..5 of the first training are kept, hidden from the default view.
    everything = r["valid/logloss"].fetch_values(include_superseded=True)
    assert everything.step.tolist() == [0, 1, 2, 3, 3, 4, 4, 5]
    assert sorted(everything.value.tolist()) == pytest.approx(sorted(first_scores + again))


def test_a_second_fresh_training_gets_a_linked_run(store: str) -> None:
    cb = TrackerCallback(project="x", store=store, tags=["gbt"], system_metrics=False)
    _, first_scores = _train(cb, 3)
    _, second_scores = _train(cb, 4)
    runs = {r["id"]: r for r in tracker.list_runs(store=store)}
    assert len(runs) == 2
    first, second = sorted(runs.values(), key=lambda r: r["created_at"])
    assert first["status"] == second["status"] == "finished"
    group = f"group:{first['id']}"
    assert group in first["tags"] and group in second["tags"] and "gbt" in second["tags"]
    r1, r2 = (tracker.read_run(run["id"], store=store) for run in (first, second))
    assert r2["lineage/previous_run"].fetch() == first["id"]
    for r, scores in ((r1, first_scores), (r2, second_scores)):
        series = r["valid/logloss"].fetch_values()
        assert series.step.tolist() == list(range(len(scores)))
        assert series.value.tolist() == pytest.approx(scores)
        assert len(r["valid/logloss"].fetch_values(include_superseded=True)) == len(scores)


def test_a_given_run_takes_continuations_at_their_round_and_new_trainings_after(
    store: str,
) -> None:
    run = tracker.init_run("x", store=store, system_metrics=False)
    cb = TrackerCallback(run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, a = _train(cb, 3)
        _, b = _train(cb, 2, xgb_model=first)  # rounds 3, 4
        _, c = _train(cb, 3)  # a new training: after the run's last step
        run.flush()
    assert not _lower_step_warnings(caught)
    assert run.status == "running"
    run.close()
    r = tracker.read_run(run.id, store=store)
    series = r["valid/logloss"].fetch_values()
    assert series.step.tolist() == list(range(8))
    assert series.value.tolist() == pytest.approx(a + b + c)


def test_sklearn_fit_continuing_its_own_model_stays_in_one_run(store: str) -> None:
    x, y = _data()
    cb = TrackerCallback(project="x", store=store, system_metrics=False)
    clf = xgb.XGBClassifier(n_estimators=3, max_depth=2, callbacks=[cb])
    eval_set = [(x[150:], y[150:])]
    clf.fit(x[:150], y[:150], eval_set=eval_set, verbose=False)
    first = clf.evals_result()["validation_0"]["logloss"]
    clf.fit(x[:150], y[:150], eval_set=eval_set, verbose=False, xgb_model=clf.get_booster())
    second = clf.evals_result()["validation_0"]["logloss"]
    assert clf.get_booster().num_boosted_rounds() == 6
    r = _only_run(store)
    assert r.status == "finished"
    series = r["validation_0/logloss"].fetch_values()
    assert series.step.tolist() == list(range(6))
    assert series.value.tolist() == pytest.approx(first + second)


# -- what a training asked for: rounds and patience -----------------------------------------


def test_rounds_and_early_stopping_patience_are_recorded_in_config(store: str) -> None:
    cb = TrackerCallback(project="x", store=store, system_metrics=False)
    dtrain, dvalid = _split()
    xgb.train(
        PARAMS,
        dtrain,
        num_boost_round=40,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=3,
        callbacks=[cb],
        verbose_eval=False,
    )
    _, _ = _train(cb, 5)  # a second training, without early stopping: its own run
    first, second = (
        tracker.read_run(row["id"], store=store)
        for row in sorted(tracker.list_runs(store=store), key=lambda r: r["created_at"])
    )
    assert first["config/num_boost_round"].fetch() == 40
    assert first["config/early_stopping_rounds"].fetch() == 3
    assert second["config/num_boost_round"].fetch() == 5
    assert "config/early_stopping_rounds" not in second.paths()


def test_sklearn_estimator_records_its_rounds_and_patience(store: str) -> None:
    x, y = _data()
    cb = TrackerCallback(project="x", store=store, system_metrics=False)
    clf = xgb.XGBClassifier(n_estimators=30, max_depth=2, early_stopping_rounds=2, callbacks=[cb])
    clf.fit(x[:150], y[:150], eval_set=[(x[150:], y[150:])], verbose=False)
    r = _only_run(store)
    assert r["config/num_boost_round"].fetch() == 30
    assert r["config/early_stopping_rounds"].fetch() == 2
    assert r["best/iteration"].fetch() == clf.best_iteration


# -- xgboost.cv: mean and std ----------------------------------------------------------------


def test_cv_logs_the_mean_and_the_std_of_every_metric(store: str) -> None:
    x, y = _data()
    cb = TrackerCallback(project="x", store=store, system_metrics=False)
    frame = xgb.cv(PARAMS, xgb.DMatrix(x, y), num_boost_round=4, nfold=3, seed=0, callbacks=[cb])
    r = _only_run(store)
    assert r.status == "finished"
    for name in ("train", "test"):
        mean = r[f"{name}/logloss"].fetch_values()
        std = r[f"{name}/logloss_std"].fetch_values()
        assert mean.step.tolist() == std.step.tolist() == [0, 1, 2, 3]
        assert mean.value.tolist() == pytest.approx(frame[f"{name}-logloss-mean"].tolist())
        assert std.value.tolist() == pytest.approx(frame[f"{name}-logloss-std"].tolist())
    assert r["config/num_boost_round"].fetch() == 4
    assert r["config/nfold"].fetch() == 3
    best = int(np.argmin(frame["test-logloss-mean"]))
    assert r["best/iteration"].fetch() == best
    assert r["best/score"].fetch() == pytest.approx(frame["test-logloss-mean"][best])
    assert r["best/std"].fetch() == pytest.approx(frame["test-logloss-std"][best])


# -- the best round of a continued model -----------------------------------------------------

# With eta=1 the validation loss is lowest after a few rounds and worse after (which
# round depends on the XGBoost release: the tests read it from the curve).
OVERFIT = {**PARAMS, "eta": 1.0, "max_depth": 4}


def _overfit(
    cb: TrackerCallback,
    rounds: int,
    xgb_model: xgb.Booster | None = None,
    flip: bool = False,
    **kwargs,
) -> tuple[xgb.Booster, list[float]]:
    dtrain, dvalid = _split()
    if flip:  # training on the wrong labels: every round it adds is worse
        dtrain.set_label(1 - dtrain.get_label())
    result: dict = {}
    booster = xgb.train(
        {**OVERFIT, **kwargs.pop("params", {})},
        dtrain,
        num_boost_round=rounds,
        evals=[(dvalid, "valid")],
        evals_result=result,
        xgb_model=xgb_model,
        callbacks=[cb],
        verbose_eval=False,
        **kwargs,
    )
    return booster, result["valid"]["logloss"]


@pytest.mark.parametrize("stopping", [None, 2], ids=["no-early-stopping", "early-stopping"])
def test_the_best_round_of_a_continued_model_counts_all_its_rounds(
    store: str, stopping: int | None
) -> None:
    cb = TrackerCallback(project="x", store=store, system_metrics=False)
    first, a = _overfit(cb, 5)
    second, b = _overfit(cb, 4, xgb_model=first, early_stopping_rounds=stopping)
    scores = a + b  # rounds 0..8 of the model
    # The premise (the curve differs between XGBoost releases): the continuation never
    # beat the first training's best round.
    assert min(b) > min(a)
    r = _only_run(store)
    assert r["best/iteration"].fetch() == int(np.argmin(a))
    assert r["best/score"].fetch() == pytest.approx(min(scores))
    assert r["best/metric"].fetch() == "valid/logloss"
    assert r["model/num_boosted_rounds"].fetch() == second.num_boosted_rounds() == 9


def test_the_best_round_after_continuing_a_checkpoint_forgets_the_rounds_it_replaced(
    store: str,
) -> None:
    cb = TrackerCallback(project="x", store=store, system_metrics=False)
    first, a = _overfit(cb, 9)
    cut = int(np.argmin(a))  # the best round (where depends on the XGBoost release)...
    assert cut >= 1
    # ...is replaced: continued from the round before it, on labels that only hurt.
    _, b = _overfit(cb, 3, xgb_model=first[:cut], flip=True)
    scores = a[:cut] + b  # the model's rounds
    assert min(scores) > min(a)  # the replaced best round is gone from the model
    r = _only_run(store)
    assert r["best/iteration"].fetch() == int(np.argmin(scores))
    assert r["best/score"].fetch() == pytest.approx(min(scores))
    assert r["model/num_boosted_rounds"].fetch() == cut + 3


# -- two workers of XGBoost's collective ----------------------------------------------------


def _worker(worker_args: dict, rank: int, store: str, queue: multiprocessing.Queue) -> None:
    from xgboost import collective

    with collective.CommunicatorContext(**worker_args):
        x, y = _data(seed=collective.get_rank())
        dtrain = xgb.DMatrix(x[:150], y[:150])
        dvalid = xgb.DMatrix(x[150:], y[150:])
        result: dict = {}
        xgb.train(
            {"max_depth": 2, "objective": "binary:logistic", "eval_metric": "logloss"},
            dtrain,
            num_boost_round=4,
            evals=[(dvalid, "valid")],
            evals_result=result,
            callbacks=[TrackerCallback(project="x", store=store, system_metrics=False)],
            verbose_eval=False,
        )
        queue.put((collective.get_rank(), result["valid"]["logloss"]))


def _start_rabit(n_workers: int) -> tuple[dict, Callable[[], None]]:
    """XGBoost's own tracker: worker arguments and a function that waits for its end."""
    from xgboost.tracker import RabitTracker

    if hasattr(RabitTracker, "worker_args"):  # xgboost >= 2.1
        rabit = RabitTracker(host_ip="127.0.0.1", n_workers=n_workers)
        rabit.start()
        return rabit.worker_args(), lambda: rabit.wait_for(timeout=30)
    rabit = RabitTracker(host_ip="127.0.0.1", n_workers=n_workers)
    rabit.start(n_workers)
    thread = threading.Thread(target=rabit.join, daemon=True)
    thread.start()
    return rabit.worker_envs(), lambda: thread.join(timeout=30)


@pytest.mark.distributed
def test_two_collective_workers_write_one_run_from_rank_0(store: str) -> None:
    worker_args, wait_for_tracker = _start_rabit(2)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(worker_args, i, store, queue)) for i in range(2)]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    wait_for_tracker()
    assert all(p.exitcode == 0 for p in procs)
    # The workers saw the same scores, reduced across both shards; rank 0 wrote them once.
    assert results[0] == pytest.approx(results[1])
    r = _only_run(store)
    assert r.status == "finished"
    series = r["valid/logloss"].fetch_values()
    assert series.step.tolist() == [0, 1, 2, 3]
    assert series.value.tolist() == pytest.approx(results[0])


def test_multi_class_gblinear_importance_is_recorded_per_class(store: str) -> None:
    import numpy as np
    import xgboost as xgb

    from tracker.integrations.xgboost import TrackerCallback

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = rng.integers(0, 3, size=60)
    dtrain = xgb.DMatrix(x, label=y)
    callback = TrackerCallback(project="xgb", store=store)
    xgb.train(
        {"booster": "gblinear", "objective": "multi:softprob", "num_class": 3},
        dtrain,
        num_boost_round=3,
        evals=[(dtrain, "train")],
        callbacks=[callback],
    )
    (row,) = tracker.list_runs(project="xgb", store=store)
    r = tracker.read_run(row["id"], store=store)
    weights = [p for p in r.paths() if p.startswith("importance/weight/")]
    assert {p.rsplit("/", 1)[1] for p in weights} == {"class_0", "class_1", "class_2"}
    assert len(weights) == 9  # 3 features x 3 classes
    assert r.status == "finished"
