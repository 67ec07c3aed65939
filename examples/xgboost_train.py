"""Train XGBoost with early stopping, recorded by tracker's XGBoost callback.

    python examples/xgboost_train.py

The run gets the booster's parameters (config/params/...), the rounds asked for and
early stopping's patience (config/num_boost_round, config/early_stopping_rounds) and the
XGBoost version (config/framework/xgboost_version), every iteration's metrics for each
eval set (train/logloss, valid/logloss, valid/auc), the best iteration and score, the
rounds the model has (model/num_boosted_rounds), feature importance by gain and weight,
and the saved model as a tracked file. The same callback works with the sklearn
estimators (XGBClassifier(..., callbacks=[TrackerCallback(...)])) and with xgboost.cv,
whose runs hold the mean over the folds and its standard deviation (test/logloss_std).
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb

import tracker
from tracker.integrations.xgboost import TrackerCallback


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + 0.3 * rng.normal(size=3000) > 0.5).astype(int)
    dtrain = xgb.DMatrix(x[:2400], y[:2400], feature_names=[f"x{i}" for i in range(6)])
    dvalid = xgb.DMatrix(x[2400:], y[2400:], feature_names=[f"x{i}" for i in range(6)])

    callback = TrackerCallback(
        project="examples", name="xgboost-train", save_model="xgb-model.json"
    )
    xgb.train(
        {
            "objective": "binary:logistic",
            "eval_metric": ["logloss", "auc"],
            "max_depth": 3,
            "eta": 0.2,
        },
        dtrain,
        num_boost_round=200,
        evals=[(dtrain, "train"), (dvalid, "valid")],
        early_stopping_rounds=10,
        callbacks=[callback],
        verbose_eval=False,
    )

    run = tracker.list_runs(project="examples")[0]
    r = tracker.read_run(run["id"])
    print(
        f"run {run['id']} ({r.status}): {r['model/num_boosted_rounds'].fetch()} of "
        f"{r['config/num_boost_round'].fetch()} rounds (patience "
        f"{r['config/early_stopping_rounds'].fetch()}); best iteration "
        f"{r['best/iteration'].fetch()}, {r['best/metric'].fetch()} = "
        f"{r['best/score'].fetch():.4f}, gain of x0 = {r['importance/gain/x0'].fetch():.1f}"
    )


if __name__ == "__main__":
    main()
