"""scikit-learn: ``log_estimator`` records a fitted estimator in a tracker run.

Importing this module imports scikit-learn; ``import tracker`` never imports it.

>>> from tracker.integrations.sklearn import log_estimator
>>> log_estimator(run, model.fit(X_train, y_train), X_test, y_test)  # into your open run
>>> log_estimator("iris", model, X_test, y_test)  # a run of its own, opened and closed
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from typing import Any

try:
    import numpy as np
    from sklearn import metrics
    from sklearn.base import is_classifier, is_regressor
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tracker.integrations.sklearn needs scikit-learn: pip install 'tracker-dl[sklearn]'"
    ) from exc

import tracker
from tracker.integrations._common import (
    CONFIG,
    clean_value,
    open_run,
    record_frameworks,
    take_run_or_project,
)

__all__ = ["log_estimator"]

_SEARCH_KEY = re.compile(r"^(mean|std|rank)_(test|train)_|^(mean|std)_(fit|score)_time$")


def log_estimator(
    run_or_project: tracker.Run | str | None = None,
    /,
    estimator: Any = None,
    X_test: Any = None,
    y_test: Any = None,
    prefix: str = "model",
    *,
    project: str | None = None,
    run: tracker.Run | None = None,
    **init_run_kwargs: Any,
) -> dict[str, float]:
    """Record a fitted estimator's params, test metrics and search results under ``prefix``.

    The first argument is an open ``Run`` (written into and left open) or a project name
    (a run is opened with the other keyword arguments for ``tracker.init_run``, written
    and closed: ``finished``, or ``failed`` if recording raises); ``run=`` and
    ``project=`` say the same by keyword.

    - ``config/<prefix>/estimator``: the class name; ``config/<prefix>/params/...``:
      ``get_params``, nested pipelines flattened (``params/clf/C``; a nested estimator's
      class name at ``params/clf/class``); ``config/framework/sklearn_version``.
    - With ``X_test`` and ``y_test``, ``<prefix>/metrics/...``: for a classifier accuracy,
      precision, recall and F1 (binary, else macro-averaged), ROC AUC when it has
      ``predict_proba`` and the confusion matrix (``confusion_matrix/<true>/<pred>``
      counts, labels in ``confusion_matrix_labels``); for a regressor R2, MAE and RMSE.
    - For a ``GridSearchCV``/``RandomizedSearchCV``, every candidate at its index as a step:
      series ``<prefix>/search/params/<param>`` and ``<prefix>/search/mean_test_score`` (and
      every other score and time column), plus ``search/best_index``,
      ``search/best_score`` and ``search/best_params/...``.

    Returns the metrics it computed.

    >>> run = tracker.init_run(project="iris")
    >>> log_estimator(run, GridSearchCV(pipe, grid).fit(X, y), X_test, y_test)
    {'accuracy': 0.97, ...}
    >>> log_estimator(project="iris", estimator=model, tags=["baseline"])
    {}
    """
    if estimator is None:
        raise TypeError("log_estimator() needs the fitted estimator (second argument)")
    given, project = take_run_or_project(
        run_or_project, run=run, project=project, init_kwargs=init_run_kwargs, who="log_estimator"
    )
    if given is not None:
        scores = _record(given, estimator, X_test, y_test, prefix)
        given.flush()
        return scores
    with open_run(project, **init_run_kwargs) as opened:  # closed failed if this raises
        return _record(opened, estimator, X_test, y_test, prefix)


def _record(
    run: tracker.Run, estimator: Any, X_test: Any, y_test: Any, prefix: str
) -> dict[str, float]:
    run[f"{CONFIG}/{prefix}/estimator"] = type(estimator).__name__
    params = _params(estimator.get_params(deep=True))
    if params:
        run[f"{CONFIG}/{prefix}/params"] = params
    record_frameworks(run, "sklearn")
    if hasattr(estimator, "cv_results_"):
        _log_search(run, estimator, f"{prefix}/search")
    if X_test is None or y_test is None:
        return {}
    if is_classifier(estimator):
        scores = _classification(run, estimator, X_test, y_test, f"{prefix}/metrics")
    elif is_regressor(estimator):
        y_pred = estimator.predict(X_test)
        scores = {
            "r2": metrics.r2_score(y_test, y_pred),
            "mae": metrics.mean_absolute_error(y_test, y_pred),
            "rmse": math.sqrt(metrics.mean_squared_error(y_test, y_pred)),
        }
    else:
        warnings.warn(
            f"log_estimator: {type(estimator).__name__} is neither a classifier nor a "
            "regressor; recorded its params but no test metrics",
            stacklevel=3,
        )
        return {}
    scores = {k: float(v) for k, v in scores.items()}
    run[f"{prefix}/metrics"] = scores
    return scores


def _classification(
    run: tracker.Run, estimator: Any, X: Any, y: Any, prefix: str
) -> dict[str, float]:
    classes = list(getattr(estimator, "classes_", np.unique(y)))
    y_pred = estimator.predict(X)
    if len(classes) == 2:
        averaging: dict[str, Any] = {"average": "binary", "pos_label": classes[1]}
    else:
        averaging = {"average": "macro"}
    scores = {
        "accuracy": metrics.accuracy_score(y, y_pred),
        "precision": metrics.precision_score(y, y_pred, zero_division=0, **averaging),
        "recall": metrics.recall_score(y, y_pred, zero_division=0, **averaging),
        "f1": metrics.f1_score(y, y_pred, zero_division=0, **averaging),
    }
    if hasattr(estimator, "predict_proba"):
        proba = estimator.predict_proba(X)
        try:
            if len(classes) == 2:
                scores["roc_auc"] = metrics.roc_auc_score(np.asarray(y) == classes[1], proba[:, 1])
            else:
                scores["roc_auc"] = metrics.roc_auc_score(
                    y, proba, multi_class="ovr", labels=classes
                )
        except ValueError as exc:  # e.g. a class missing from y_test
            warnings.warn(f"log_estimator: ROC AUC not recorded: {exc}", stacklevel=4)
    matrix = metrics.confusion_matrix(y, y_pred, labels=classes)
    names = [_part(c) for c in classes]
    run[f"{prefix}/confusion_matrix"] = {
        t: {p: int(matrix[i, j]) for j, p in enumerate(names)} for i, t in enumerate(names)
    }
    run[f"{prefix}/confusion_matrix_labels"] = json.dumps([clean_value(c) for c in classes])
    return scores


def _log_search(run: tracker.Run, search: Any, prefix: str) -> None:
    results = search.cv_results_
    candidates: list[Mapping[str, Any]] = results["params"]
    steps = list(range(len(candidates)))
    names = sorted({name for p in candidates for name in p})
    for name in names:
        present = [i for i in steps if name in candidates[i]]
        values = [candidates[i][name] for i in present]
        numeric = all(
            isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in values
        )
        points = [float(v) for v in values] if numeric else [str(clean_value(v)) for v in values]
        run[f"{prefix}/params/{name.replace('__', '/')}"].extend(points, steps=present)
    for key in sorted(results):
        if _SEARCH_KEY.match(key):
            column = np.asarray(results[key], dtype=float)
            run[f"{prefix}/{key}"].extend([float(v) for v in column], steps=steps)
    if hasattr(search, "best_index_"):
        run[f"{prefix}/best_index"] = int(search.best_index_)
    if hasattr(search, "best_score_"):
        run[f"{prefix}/best_score"] = float(search.best_score_)
    if getattr(search, "best_params_", None):
        run[f"{prefix}/best_params"] = _params(search.best_params_)


def _params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``get_params(deep=True)`` as a nested dict: ``a__b`` nests, estimators by class."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if _is_step_list(value):
            continue  # each step is expanded under its own name
        if hasattr(value, "get_params"):
            key, value = f"{key}__class", type(value).__name__
        node = out
        *parents, leaf = key.split("__")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # a value and a sub-tree share a name
                child = node[part] = {"value": child}
            node = child
        if isinstance(node.get(leaf), dict):
            node[leaf]["value"] = clean_value(value)
        else:
            node[leaf] = clean_value(value)
    return out


def _is_step_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(s, tuple) and len(s) >= 2 and isinstance(s[0], str) for s in value)
    )


def _part(value: Any) -> str:
    return str(clean_value(value)).replace("/", "_") or "_"
