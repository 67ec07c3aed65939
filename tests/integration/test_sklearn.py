"""scikit-learn log_estimator: params, metrics by estimator kind, and search candidates."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="needs scikit-learn (pip install 'tracker-dl[sklearn]')")

from sklearn.datasets import load_iris, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import tracker
from tracker.integrations.sklearn import log_estimator


def _read(run: tracker.Run, store: str):
    run.close()
    return tracker.read_run(run.id, store=store)


def _iris(binary: bool = False):
    x, y = load_iris(return_X_y=True)
    if binary:
        x, y = x[y > 0], np.where(y[y > 0] == 2, "virginica", "versicolor")
    return train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)


def test_pipeline_classifier_params_flattened_and_metrics(store: str) -> None:
    x_train, x_test, y_train, y_test = _iris()
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=0.5))])
    pipe.fit(x_train, y_train)
    run = tracker.init_run("s", store=store, system_metrics=False)
    scores = log_estimator(run, pipe, x_test, y_test)
    r = _read(run, store)
    assert r["config/model/estimator"].fetch() == "Pipeline"
    assert r["config/model/params/clf/C"].fetch() == 0.5
    assert r["config/model/params/clf/class"].fetch() == "LogisticRegression"
    assert r["config/model/params/scale/with_mean"].fetch() is True
    assert not any(p.startswith("config/model/params/steps") for p in r.paths())
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert r[f"model/metrics/{name}"].fetch() == pytest.approx(scores[name])
    assert scores["accuracy"] == pytest.approx(pipe.score(x_test, y_test))
    counts = [[r[f"model/metrics/confusion_matrix/{t}/{p}"].fetch() for p in "012"] for t in "012"]
    assert np.sum(counts) == len(y_test)
    assert np.trace(counts) == round(scores["accuracy"] * len(y_test))


def test_binary_string_labels_and_no_probabilities(store: str) -> None:
    x_train, x_test, y_train, y_test = _iris(binary=True)
    svc = SVC().fit(x_train, y_train)  # no predict_proba without probability=True
    run = tracker.init_run("s", store=store, system_metrics=False)
    scores = log_estimator(run, svc, x_test, y_test, prefix="svm")
    r = _read(run, store)
    assert "roc_auc" not in scores
    assert set(scores) == {"accuracy", "precision", "recall", "f1"}
    assert r["svm/metrics/confusion_matrix_labels"].fetch() == '["versicolor", "virginica"]'
    assert r["svm/metrics/confusion_matrix/virginica/virginica"].fetch() >= 0


def test_regressor_metrics(store: str) -> None:
    x, y = make_regression(n_samples=80, n_features=3, noise=5.0, random_state=0)
    model = LinearRegression().fit(x[:60], y[:60])
    run = tracker.init_run("s", store=store, system_metrics=False)
    scores = log_estimator(run, model, x[60:], y[60:])
    r = _read(run, store)
    assert set(scores) == {"r2", "mae", "rmse"}
    assert r["model/metrics/r2"].fetch() == pytest.approx(model.score(x[60:], y[60:]))
    residual = y[60:] - model.predict(x[60:])
    assert r["model/metrics/rmse"].fetch() == pytest.approx(np.sqrt(np.mean(residual**2)))
    assert r["config/model/params/fit_intercept"].fetch() is True


def test_grid_search_every_candidate(store: str) -> None:
    x_train, x_test, y_train, y_test = _iris()
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    grid = {"clf__C": [0.1, 1.0, 10.0], "clf__fit_intercept": [True, False]}
    search = GridSearchCV(pipe, grid, cv=3).fit(x_train, y_train)
    run = tracker.init_run("s", store=store, system_metrics=False)
    log_estimator(run, search, x_test, y_test)
    r = _read(run, store)
    n = len(search.cv_results_["params"])
    c = r["model/search/params/clf/C"].fetch_values()
    assert c.step.tolist() == list(range(n))
    assert c.value.tolist() == [p["clf__C"] for p in search.cv_results_["params"]]
    scores = r["model/search/mean_test_score"].fetch_values()
    assert scores.value == pytest.approx(search.cv_results_["mean_test_score"])
    assert r["model/search/rank_test_score"].fetch_values().value.tolist() == list(
        search.cv_results_["rank_test_score"]
    )
    assert len(r["model/search/std_test_score"].fetch_values()) == n
    assert len(r["model/search/mean_fit_time"].fetch_values()) == n
    assert r["model/search/best_index"].fetch() == search.best_index_
    assert r["model/search/best_score"].fetch() == pytest.approx(search.best_score_)
    assert r["model/search/best_params/clf/C"].fetch() == search.best_params_["clf__C"]
    assert r["config/model/params/estimator/clf/class"].fetch() == "LogisticRegression"
    assert r["model/metrics/accuracy"].fetch() == pytest.approx(search.score(x_test, y_test))
