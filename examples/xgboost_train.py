"""Train XGBoost with early stopping, recorded by tracker's XGBoost callback.

    python examples/xgboost_train.py

The run gets the booster's parameters (config/params/...) and the XGBoost version
(config/framework/xgboost_version), every iteration's metrics for each eval set
(train/logloss, valid/logloss, valid/auc), the best iteration and score, feature
importance by gain and weight, and the saved model as a tracked file. The same callback
works with the sklearn estimators: XGBClassifier(..., callbacks=[TrackerCallback(...)]).
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
        f"run {run['id']} ({r.status}): best iteration {r['best/iteration'].fetch()}, "
        f"{r['best/metric'].fetch()} = {r['best/score'].fetch():.4f}, "
        f"gain of x0 = {r['importance/gain/x0'].fetch():.1f}"
    )


if __name__ == "__main__":
    main()
