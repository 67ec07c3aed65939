"""An Optuna sweep with pruning, one tracker run per trial grouped under the study.

    python examples/optuna_sweep.py

Each trial trains a small ridge regression by gradient descent; its per-epoch
validation loss goes into the trial's own run (TrackerCallback.run_for) and to Optuna's
pruner (trial.report). A learning rate too large diverges: the trial raises, Optuna
catches it (catch=...), and its run closes as failed with the reason in trial/error.
Trials run on two threads. Afterwards the trials are listed by the study's tag, and the
study's record names the best trial. Run it again: the new study of the same name gets
runs of its own.
"""

from __future__ import annotations

import numpy as np
import optuna

import tracker
from tracker.integrations.optuna import TrackerCallback

rng = np.random.default_rng(0)
X = rng.normal(size=(500, 10))
Y = X @ rng.normal(size=10) + 0.5 * rng.normal(size=500)
X_TRAIN, Y_TRAIN, X_VALID, Y_VALID = X[:400], Y[:400], X[400:], Y[400:]

callback = TrackerCallback(project="examples")


class Diverged(ArithmeticError):
    """The loss is no longer finite: the learning rate is too large."""


def objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 3.0, log=True)
    alpha = trial.suggest_float("alpha", 1e-4, 10.0, log=True)
    run = callback.run_for(trial)
    w = np.zeros(X.shape[1])
    for epoch in range(30):
        grad = X_TRAIN.T @ (X_TRAIN @ w - Y_TRAIN) / len(Y_TRAIN) + alpha * w
        w -= lr * grad
        loss = float(np.mean((X_VALID @ w - Y_VALID) ** 2))
        if not np.isfinite(loss) or loss > 1e6:
            raise Diverged(f"valid mse {loss:.3g} at epoch {epoch} with lr={lr:.3g}")
        run.log({"valid/mse": loss}, step=epoch)
        trial.report(loss, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return loss


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="ridge-sweep", pruner=optuna.pruners.MedianPruner(n_warmup_steps=5)
    )
    study.optimize(objective, n_trials=20, n_jobs=2, catch=(Diverged,), callbacks=[callback])

    # The study's tag names every study of this name; the record id is this one's.
    record_id = callback.study_run_id(study)
    trials = [
        t
        for t in tracker.list_runs(project="examples", tags=[callback.study_tag(study)])
        if t["id"].startswith(record_id + "-t")
    ]
    pruned = sum("pruned" in t["tags"] for t in trials)
    failed = [t for t in trials if t["status"] == "failed"]
    record = tracker.read_run(record_id)
    print(
        f"{len(trials)} trial runs ({pruned} pruned, {len(failed)} failed); best trial "
        f"{record['study/best_trial'].fetch()} with valid mse {record['study/best_value'].fetch():.4f}"
    )
    if failed:
        why = tracker.read_run(failed[0]["id"])["trial/error"].fetch()
        print(f"{failed[0]['name']} failed: {why}")


if __name__ == "__main__":
    main()
