"""A scikit-learn grid search recorded with tracker's log_estimator.

    python examples/sklearn_model.py

The run gets the pipeline's params under config/ (nested steps flattened:
config/model/params/estimator/clf/C) and the scikit-learn version
(config/framework/sklearn_version), every candidate of the search at its index
(model/search/params/..., mean_test_score, ...), the best candidate, and the test metrics
of the refitted model: accuracy, precision, recall, F1, ROC AUC and the confusion matrix.
"""

from __future__ import annotations

from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import tracker
from tracker.integrations.sklearn import log_estimator


def main() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=1000))])
    search = GridSearchCV(
        pipe, {"clf__C": [0.01, 0.1, 1.0, 10.0], "clf__class_weight": [None, "balanced"]}, cv=3
    )
    search.fit(x_train, y_train)

    with tracker.init_run(project="examples", name="sklearn-grid-search") as run:
        scores = log_estimator(run, search, x_test, y_test)
    print(
        f"run {run.id}: best {search.best_params_}, test",
        {k: round(v, 3) for k, v in scores.items()},
    )


if __name__ == "__main__":
    main()
