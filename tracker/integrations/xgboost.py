"""XGBoost: ``TrackerCallback`` records ``xgboost.train`` and the sklearn estimators.

Importing this module imports XGBoost; ``import tracker`` never imports it.

>>> from tracker.integrations.xgboost import TrackerCallback
>>> xgboost.train(params, dtrain, evals=[(dvalid, "valid")],
...               callbacks=[TrackerCallback(project="higgs")])
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

try:
    import xgboost
    from xgboost import collective
    from xgboost.callback import CallbackContainer, EarlyStopping, TrainingCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tracker.integrations.xgboost needs XGBoost: pip install 'tracker-dl[xgboost]'"
    ) from exc

import tracker
from tracker.integrations._common import (
    TrainingRuns,
    record_config,
    record_frameworks,
    records_here,
    take_run_or_project,
)

__all__ = ["TrackerCallback"]

# Metrics where larger is better, as XGBoost's own early stopping decides.
_MAXIMIZE = ("auc", "aucpr", "pre", "pre@", "map", "ndcg", "auc@", "aucpr@", "map@", "ndcg@")

# Sections of ``Booster.save_config()`` that hold the training parameters.
_PARAM_SECTIONS = ("generic_param", "learner_train_param", "learner_model_param")


class TrackerCallback(TrainingCallback):
    """Log an XGBoost training to a tracker run.

    Records when training starts the booster's parameters (``config/params/...``), the
    rounds asked for (``config/num_boost_round``: ``xgboost.train``'s argument, an
    estimator's ``n_estimators``), early stopping's patience when it is on
    (``config/early_stopping_rounds``), ``xgboost.cv``'s ``config/nfold`` and the XGBoost
    version (``config/framework/xgboost_version``); each iteration's metric for each eval
    set at the boosting round, as ``<eval set>/<metric>`` (under ``xgboost.cv`` the mean
    over the folds, and their standard deviation as ``<eval set>/<metric>_std``); at the
    end the best round and score (``best/iteration``, ``best/score``, ``best/metric``,
    ``best/std`` under ``xgboost.cv``), the rounds the model has
    (``model/num_boosted_rounds``), feature importance by gain and weight
    (``importance/gain/<feature>``), and with ``save_model="model.json"`` the model saved
    there and tracked as ``model/file``.

    The best round is a round of the model (what ``iteration_range`` takes), picked over
    all the model's rounds this callback saw, by early stopping's metric and direction
    (else the last eval set's last metric): after a continued training, a round of an
    earlier training stays the best unless a new round beats it, and the rounds a
    continuation from an earlier checkpoint replaced no longer count.

    The first argument is an open ``Run`` (never closed here) or a project name;
    ``run=`` and ``project=`` say the same by keyword, and other keyword arguments go to
    ``tracker.init_run``: the run is then opened when training starts and closed when it
    ends. In a distributed training (XGBoost's collective, dask, Spark) the callback runs
    on every worker and the scores it sees are already reduced across workers, so only
    rank 0 records them; the other workers never touch the store. Construct it with a
    project there: a callback holding an open run cannot be sent to workers.

    One callback, several trainings:

    - **Continued training** (``xgboost.train(..., xgb_model=booster)``, or an estimator's
      ``fit(..., xgb_model=...)``): XGBoost numbers the new iterations from 0 again; they
      are logged at the booster's absolute round, after the rounds it already had, in the
      run of the callback's last training. A run the callback opened is resumed from the
      booster's last round (``init_run(resume_from_step=...)``), so that when the booster
      is an earlier checkpoint, what the last training logged after it is superseded.
    - **A fresh training** (no ``xgb_model``) is a new training: a run the callback opens
      is a new one, linked to the first (``group:<first run id>`` tag and
      ``lineage/previous_run``); a run passed in continues after its last step.

    >>> clf = xgboost.XGBClassifier(n_estimators=50, callbacks=[TrackerCallback(run)])
    >>> clf.fit(X, y, eval_set=[(X_valid, y_valid)])  # doctest: +SKIP
    >>> clf.fit(X, y, eval_set=[(X_valid, y_valid)], xgb_model=clf)  # rounds 50..99
    >>> xgboost.train(params, dtrain, callbacks=[TrackerCallback("higgs", tags=["gbt"])])
    """

    def __init__(
        self,
        run_or_project: tracker.Run | str | None = None,
        /,
        *,
        project: str | None = None,
        run: tracker.Run | None = None,
        save_model: str | os.PathLike[str] | None = None,
        importance: bool = True,
        **init_run_kwargs: Any,
    ) -> None:
        super().__init__()
        self._given_run, self._project = take_run_or_project(
            run_or_project, run=run, project=project, init_kwargs=init_run_kwargs
        )
        self._init_kwargs = init_run_kwargs
        self._save_model = None if save_model is None else os.fspath(save_model)
        self._importance = importance
        self._runs = self._new_runs()
        self.run: tracker.Run | None = None
        self._evals_log: Mapping[str, Any] = {}
        self._logged = 0  # iterations of the eval history logged so far
        self._last_epoch = -1  # XGBoost's iteration number of the last one logged
        self._start_round = 0  # rounds the booster had when this training started
        self._base = 0  # the step of the model's round 0 in the run
        # "<eval set>/<metric>" (and its "_std" under cv) -> the model's round -> score,
        # over the rounds of the model's trainings through this callback.
        self._history: dict[str, dict[int, float]] = {}
        self._stopper: Any = None  # this training's EarlyStopping callback, if any
        self._prior_best: tuple[int, float] | None = None  # of a booster trained elsewhere

    def _new_runs(self) -> TrainingRuns:
        # Only rank 0 opens a run, as this process's own: XGBoost reduced the scores.
        return TrainingRuns.from_arguments(
            run=self._given_run, project=self._project, init_kwargs=self._init_kwargs, local=True
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> TrackerCallback:
        # sklearn's clone() deep-copies estimator params. A copy logs to the same given
        # run, or opens runs of its own: copies may fit at the same time (cross-validation
        # with threads), so they share no training state.
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(
            self.__dict__, run=None, _evals_log={}, _logged=0, _history={}, _stopper=None
        )
        new._runs = new._new_runs()
        return new

    def __getstate__(self) -> dict[str, Any]:
        if self._given_run is not None:
            raise TypeError(
                "a TrackerCallback holding an open run cannot be sent to other processes; "
                "construct it with project=... so that rank 0 opens the run"
            )
        state = self.__dict__.copy()
        state["run"] = None
        state["_stopper"] = None
        state["_runs"] = self._new_runs()  # an open run cannot travel either
        return state

    # -- hooks ----------------------------------------------------------------------------

    def before_training(self, model: Any) -> Any:
        self._evals_log, self._logged, self._last_epoch = {}, 0, -1
        if collective.is_distributed():
            chief = records_here(
                self._given_run,
                rank=collective.get_rank(),
                world_size=collective.get_world_size(),
            )
        else:
            # One process trains alone (whatever its launcher says): it records.
            chief = records_here(self._given_run, rank=0, world_size=1)
        if not chief:
            self.run = None
            return model
        rounds = _boosted_rounds(model)
        if rounds > 0:
            # Continued training: XGBoost counts this call's iterations from 0, but they
            # are rounds ``rounds``... of the model. The model's round 0 stays where the
            # callback's last training put it (0 in a run of its own); a booster trained
            # elsewhere starts at 0. An owned run is rewound to the booster's last round:
            # nothing is hidden when it continues the last training's end, and when it is
            # an earlier checkpoint, what came after it is superseded, not doubled.
            base = self._base if self._runs.trainings else 0
            self.run = self._runs.start(resume_step=base + rounds - 1)
        else:
            # A fresh training: a new linked run, or after the given run's last step.
            self.run = self._runs.start()
            base = self._runs.offset
        self._base, self._start_round = base, rounds
        self._remember_history(model, rounds)
        # XGBoost hands a callback neither its fellow callbacks nor train's arguments:
        # both are read from the calls that run this hook (xgboost.train/cv, and the
        # CallbackContainer they made).
        callbacks, arguments = _training_call(self)
        stoppers = [cb for cb in callbacks if isinstance(cb, EarlyStopping)]
        self._stopper = stoppers[0] if stoppers else None
        booster = _first_booster(model)
        if booster is not None:
            record_config(self.run, _booster_params(booster), under="params")
        asked: dict[str, Any] = {
            k: arguments[k] for k in ("num_boost_round", "nfold") if arguments.get(k) is not None
        }
        patience = getattr(self._stopper, "rounds", None) or arguments.get("early_stopping_rounds")
        if patience:
            asked["early_stopping_rounds"] = patience
        elif rounds > 0:
            asked["early_stopping_rounds"] = None  # not the earlier training's patience
        record_config(self.run, asked)
        record_frameworks(self.run, "xgboost")
        return model

    def _remember_history(self, model: Any, rounds: int) -> None:
        """Keep the scores of the model's earlier rounds: all the rounds of a fresh
        training are new; a continuation keeps those before the booster's last round (a
        checkpoint replaces the rounds after it)."""
        self._prior_best = None
        if rounds == 0:
            self._history = {}
            return
        self._history = {
            path: {r: s for r, s in scores.items() if r < rounds}
            for path, scores in self._history.items()
        }
        if not any(self._history.values()):
            # A booster trained elsewhere: its early stopping's pick, if it made one.
            try:
                iteration, score = model.attr("best_iteration"), model.attr("best_score")
                if iteration is not None and score is not None and int(iteration) < rounds:
                    self._prior_best = (int(iteration), float(score))
            except (AttributeError, ValueError, xgboost.core.XGBoostError):
                pass

    def after_iteration(self, model: Any, epoch: int, evals_log: Mapping[str, Any]) -> bool:
        if self.run is not None:
            self._evals_log = evals_log
            self._log_new(epoch)
        return False

    def _step(self, epoch: int) -> int:
        """The run's step for XGBoost's iteration ``epoch`` of this training."""
        return self._base + self._start_round + epoch

    def _log_new(self, last_epoch: int) -> None:
        """Log the iterations of the eval history not logged yet; the last is ``last_epoch``."""
        assert self.run is not None
        n = _length(self._evals_log)
        for i in range(self._logged, n):
            epoch = last_epoch - (n - 1 - i)
            data: dict[str, float] = {}
            for eval_name, metrics in self._evals_log.items():
                for metric, scores in metrics.items():
                    if i >= len(scores):
                        continue
                    path = f"{eval_name}/{metric}"
                    data[path] = _score(scores[i])
                    if isinstance(scores[i], tuple) and len(scores[i]) > 1:
                        data[f"{path}_std"] = float(scores[i][1])  # xgboost.cv: (mean, std)
            for path, value in data.items():
                self._history.setdefault(path, {})[self._start_round + epoch] = value
            self.run.log(data, step=self._step(epoch))
        self._logged, self._last_epoch = n, last_epoch

    def after_training(self, model: Any) -> Any:
        if self.run is None:
            return model
        # XGBoost stops asking callbacks once one asks to stop (early stopping), so the
        # last iterations may be in its history without having reached after_iteration.
        n = _length(self._evals_log)
        self._log_new(self._last_epoch + n - self._logged)
        run, self.run = self.run, None
        best = self._best(model)
        self._stopper = None
        if best is not None:
            run["best"] = best
        total = _boosted_rounds(model)
        if isinstance(model, xgboost.Booster) and total:
            run["model/num_boosted_rounds"] = total
        if isinstance(model, xgboost.Booster):
            if self._importance:
                for kind in ("gain", "weight"):
                    try:
                        scores = model.get_score(importance_type=kind)
                    except xgboost.core.XGBoostError:  # gblinear has no gain
                        continue
                    if scores:
                        run[f"importance/{kind}"] = _importance(scores)
            if self._save_model is not None:
                model.save_model(self._save_model)
                run["model/file"].track_files(self._save_model)
        self._runs.end("finished")  # closes a run the callback opened; flushes a given one
        return model

    def _best(self, model: Any) -> dict[str, Any] | None:
        """The model's best round and its score, over every round of it this callback
        saw (see the class docstring); early stopping's pick among this training's rounds.

        The round is the model's (what ``iteration_range`` takes), not the run's step.
        """
        if not self._evals_log:
            return None
        # Early stopping's data set and metric decide; by default, like it, the last eval
        # set's last metric.
        stopper = self._stopper
        eval_name = getattr(stopper, "data", None) or list(self._evals_log)[-1]
        metrics = self._evals_log.get(eval_name) or {}
        metric = getattr(stopper, "metric_name", None) or (list(metrics)[-1] if metrics else None)
        if metric is None:
            return None
        path = f"{eval_name}/{metric}"
        scores = self._history.get(path, {})
        maximize = getattr(stopper, "maximize", None)
        if maximize is None:
            maximize = metric.startswith(_MAXIMIZE) and metric != "mape"

        def better(a: float, b: float) -> bool:
            return a > b if maximize else a < b

        def best_of(rounds: list[int]) -> tuple[int, float] | None:
            found: tuple[int, float] | None = None
            for r in sorted(rounds):  # the first of equal scores, as early stopping keeps
                if found is None or better(scores[r], found[1]):
                    found = (r, scores[r])
            return found

        earlier = best_of([r for r in scores if r < self._start_round]) or self._prior_best
        latest = best_of([r for r in scores if r >= self._start_round])
        attr = getattr(model, "attr", None)
        if attr is not None:
            stopped, stopped_score = attr("best_iteration"), attr("best_score")
            # Set at one of this training's rounds, it is this training's early stopping's
            # pick (which heeds min_delta); a lower one is an earlier training's, stale.
            if stopped is not None and stopped_score is not None:
                if int(stopped) >= self._start_round:
                    latest = (int(stopped), float(stopped_score))
        if latest is None or (earlier is not None and not better(latest[1], earlier[1])):
            best = earlier
        else:
            best = latest
        if best is None:
            return None
        out: dict[str, Any] = {"iteration": best[0], "score": best[1], "metric": path}
        std = self._history.get(f"{path}_std", {}).get(best[0])
        if std is not None:
            out["std"] = std
        return out


def _training_call(callback: Any, depth: int = 8) -> tuple[list[Any], dict[str, Any]]:
    """The callbacks of the ``CallbackContainer`` running ``callback``'s hook, and the
    arguments of the ``xgboost.train``/``xgboost.cv`` call that runs it (both empty when
    the hook is called some other way)."""
    callbacks: list[Any] = []
    frame: FrameType | None = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            break
        names = frame.f_locals
        owner = names.get("self")
        if not callbacks and isinstance(owner, CallbackContainer):
            found = list(getattr(owner, "callbacks", []))
            if any(cb is callback for cb in found):
                callbacks = found
        code = frame.f_code
        if (
            code.co_name in ("train", "cv")
            and frame.f_globals.get("__name__") == "xgboost.training"
        ):
            wanted = ("num_boost_round", "early_stopping_rounds", "nfold")
            return callbacks, {k: names.get(k) for k in wanted if k in code.co_varnames}
        frame = frame.f_back
    return callbacks, {}


def _first_booster(model: Any) -> Any:
    """The booster whose parameters a training has: the model, or under ``xgboost.cv``
    the first fold's."""
    if isinstance(model, xgboost.Booster):
        return model
    folds = getattr(model, "cvfolds", None)
    booster = getattr(folds[0], "bst", None) if folds else None
    return booster if isinstance(booster, xgboost.Booster) else None


def _boosted_rounds(model: Any) -> int:
    """Rounds the model already has: non-zero when training continues ``xgb_model``."""
    try:
        return int(model.num_boosted_rounds())
    except Exception:  # noqa: BLE001 - not a Booster (xgboost.cv's folds), or no rounds yet
        return 0


def _length(evals_log: Mapping[str, Any]) -> int:
    return max((len(s) for m in evals_log.values() for s in m.values()), default=0)


def _score(value: Any) -> float:
    # xgboost.cv gives (mean, std) pairs.
    return float(value[0] if isinstance(value, tuple) else value)


def _booster_params(model: Any) -> dict[str, Any]:
    """The effective training parameters, from the booster's saved config."""
    try:
        learner = json.loads(model.save_config())["learner"]
    except (KeyError, ValueError, xgboost.core.XGBoostError):
        return {}
    sections = [learner.get(name, {}) for name in _PARAM_SECTIONS]
    booster = learner.get("gradient_booster", {})
    sections += [v for k, v in booster.items() if k.endswith("_param") and isinstance(v, dict)]
    objective = learner.get("objective", {})
    sections += [v for k, v in objective.items() if k.endswith("_param") and isinstance(v, dict)]
    out: dict[str, Any] = {}
    for section in sections:
        for key, value in section.items():
            if not isinstance(value, dict | list):
                out[key] = _number(value)
    if "name" in objective:
        out["objective"] = objective["name"]
    metrics = [m.get("name") for m in learner.get("metrics", []) if isinstance(m, dict)]
    if metrics:
        out["eval_metric"] = ",".join(str(m) for m in metrics)
    return out


def _number(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        number = int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
    # Sentinels such as 2**64 - 1 do not fit a stored int64.
    return number if -(2**63) <= number < 2**63 else text


def _importance(scores: dict[str, Any]) -> dict[str, Any]:
    """Feature -> score; a multi-class gblinear model scores each class (a list), which
    becomes one value per class (``feature/class_<k>``)."""
    out: dict[str, Any] = {}
    for feature, value in scores.items():
        name = str(feature).replace("/", "_")
        if isinstance(value, list | tuple):
            out[name] = {f"class_{k}": float(v) for k, v in enumerate(value)}
        else:
            out[name] = float(value)
    return out
