"""One contract, every integration: what each must do whatever its framework.

Static part, for each of the six integrations:

- ``import tracker`` imports no framework; importing an integration imports its own only;
- without its framework, importing the integration fails with the install command;
- building the callback/logger creates no run and touches no store (frameworks build
  them on every rank, and in spawned processes), and it survives a pickle round trip.

Driven part, like Lightning's own ``tests_pytorch/loggers/test_all.py`` does for every
logger: each integration goes through start -> metrics -> end with a real (tiny) run of
its framework, built in each form of the one constructor convention (an open run or a
project name, first or by keyword; other keywords go to ``init_run``), and the store is
read back:

- one run per training (Optuna: one per trial, plus the study's record);
- the integration's own metric at the framework's steps;
- hyperparameters under ``config/``, a ``np.float32(0.5)`` among them stored as the number
  0.5 (so that ``list_runs(config=...)`` and ``tracker compare`` see it), and the
  framework's version under ``config/framework/<module>_version``;
- a run the integration opened ends ``finished``; a run the user gave is left open after
  the end-of-training hook (status ``running``, still loggable) and is not rewritten.

Each integration's own module then tests its framework in depth.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tracker

from ..conftest import python_env

# integration -> (module that must be importable, pip extra, class name)
INTEGRATIONS = {
    "lightning": ("lightning", "lightning", "TrackerLogger"),
    "transformers": ("transformers", "transformers", "TrackerCallback"),
    "keras": ("keras", "keras", "TrackerCallback"),
    "xgboost": ("xgboost", "xgboost", "TrackerCallback"),
    "optuna": ("optuna", "optuna", "TrackerCallback"),
    "sklearn": ("sklearn", "sklearn", None),
}
# What subclassing the framework's own callback class needs, imported alone.
BASE_IMPORT = {
    "lightning": "import lightning.pytorch",
    "transformers": "from transformers import TrainerCallback",
    "keras": "import keras",
    "xgboost": "import xgboost.callback",
    "optuna": "import optuna",
    "sklearn": "import sklearn.metrics, sklearn.base",
}
HEAVY = (
    "torch",
    "tensorflow",
    "lightning",
    "pytorch_lightning",
    "transformers",
    "xgboost",
    "optuna",
    "sklearn",
    "keras",
    "horovod",
)
PROJECT = "contract"
HALF = np.float32(0.5)  # a hyperparameter every driver passes: stored as the number 0.5


def _require(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module, reason=f"{module} is not installed")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=python_env(KERAS_BACKEND="torch"),
        capture_output=True,
        text=True,
        timeout=300,
    )


# -- static: imports, install hints, building --------------------------------------------


def test_import_tracker_and_the_package_import_no_framework() -> None:
    proc = _python(
        "import sys, tracker, tracker.integrations, tracker.rank_utils; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(INTEGRATIONS))
def test_missing_framework_names_the_install_command(name: str) -> None:
    framework, extra, _ = INTEGRATIONS[name]
    # sys.modules[name] = None makes "import name" fail as if it were not installed.
    blocked = [framework, "pytorch_lightning"] if name == "lightning" else [framework]
    proc = _python(
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"
        f"try:\n    import tracker.integrations.{name}\n"
        "except ImportError as e:\n    print('IMPORT-ERROR', e)\n"
    )
    assert "IMPORT-ERROR" in proc.stdout, proc.stdout + proc.stderr
    assert f"tracker-dl[{extra}]" in proc.stdout


@pytest.mark.parametrize("name", sorted(INTEGRATIONS))
def test_integration_imports_only_its_own_framework(name: str) -> None:
    framework = INTEGRATIONS[name][0]
    _require(framework)
    probe = "import sys; {}; print(sorted(m for m in {!r} if m in sys.modules))"
    alone = _python(probe.format(BASE_IMPORT[name], HEAVY))
    ours = _python(probe.format(f"import tracker.integrations.{name}", HEAVY))
    assert ours.returncode == 0 and alone.returncode == 0, ours.stderr + alone.stderr
    # Nothing beyond what the framework itself imports.
    extra = set(eval(ours.stdout.strip())) - set(eval(alone.stdout.strip()))
    assert not extra, f"tracker.integrations.{name} also imports {sorted(extra)}"


CALLBACKS = [n for n, (_, _, cls) in sorted(INTEGRATIONS.items()) if cls]


def _callback_class(name: str) -> Any:
    framework, _, cls_name = INTEGRATIONS[name]
    _require(framework)
    module = __import__(f"tracker.integrations.{name}", fromlist=[cls_name])
    return getattr(module, cls_name)


@pytest.mark.parametrize("name", CALLBACKS)
@pytest.mark.parametrize("form", ["positional", "keyword"])
def test_building_creates_no_run_and_pickles(name: str, form: str, tmp_path: Path) -> None:
    cls = _callback_class(name)
    store = tmp_path / "store"
    if form == "positional":
        callback = cls(PROJECT, store=str(store), tags=["t"])
    else:
        callback = cls(project=PROJECT, store=str(store), tags=["t"])
    clone = pickle.loads(pickle.dumps(callback))
    assert type(clone) is type(callback)
    assert not store.exists(), "building a callback must not open a run"


@pytest.mark.parametrize("name", sorted(INTEGRATIONS))
def test_constructor_mistakes_are_refused_when_building(name: str, store: str) -> None:
    """One convention, one set of mistakes, each refused at once (not later, on a rank)."""
    build = _builder(name)
    run = tracker.init_run(project=PROJECT, store=store, system_metrics=False)
    try:
        with pytest.raises((TypeError, ValueError)):
            build(run, project="other")  # a run and a project
        with pytest.raises(TypeError):
            build(run, run=run)  # the run twice
        with pytest.raises(TypeError):
            build("p", project="p")  # the project twice
        with pytest.raises(TypeError):
            build(42)  # neither a run nor a project name
        with pytest.raises(TypeError):
            build("p", no_such_init_run_argument=1)  # init_run would refuse it
        with pytest.raises((TypeError, ValueError)):
            build(run, run_id="x")  # a run is already a run id
    finally:
        run.close()


def _builder(name: str) -> Callable[..., Any]:
    """Build the integration's object; for scikit-learn, call ``log_estimator`` (its one
    entry point) with a fitted estimator, so that its arguments are checked the same way."""
    if name != "sklearn":
        return _callback_class(name)
    _require("sklearn")
    from sklearn.linear_model import LinearRegression

    from tracker.integrations.sklearn import log_estimator

    fitted = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])

    def build(*args: Any, **kwargs: Any) -> Any:
        return log_estimator(*args, estimator=fitted, **kwargs)

    return build


# -- driven: start -> metrics -> end with the real framework ------------------------------


@dataclass
class Driven:
    """What one tiny real training through an integration must leave in the store."""

    metric: str  # a series the integration logs...
    steps: list[int]  # ...at the framework's own steps
    half: str  # the path (below config/) where np.float32(0.5) went in
    framework: str  # config/framework/<framework>_version == that module's __version__
    extra_config: dict[str, Any]  # further config values the integration records
    train: Callable[[Any], None]  # runs the training with the integration object
    build: Callable[..., Any]  # builds the integration object (the constructor convention)
    owned_runs: int = 1  # runs a training through an owned run leaves (Optuna: + record)


def _lightning(tmp_path: Path) -> Driven:
    _require("lightning", "torch")
    import lightning
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    from tracker.integrations.lightning import TrackerLogger

    class Model(BoringModel):
        def __init__(self, lr: Any = 0.1, act: Any = None) -> None:
            super().__init__()
            self.save_hyperparameters()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            out = super().training_step(batch, batch_idx)
            self.log("train_loss", out["loss"])
            return out

    def train(logger: Any) -> None:
        Trainer(
            logger=logger,
            max_steps=3,
            limit_val_batches=0,
            log_every_n_steps=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            default_root_dir=str(tmp_path / "root"),
            accelerator="cpu",
            devices=1,
        ).fit(Model(lr=HALF, act=np.tanh))

    return Driven(
        metric="train_loss",
        steps=[0, 1, 2],
        half="lr",
        framework=lightning.__name__,
        extra_config={"act": "tanh"},  # a callable, by its qualified name
        train=train,
        build=TrackerLogger,
    )


def _transformers(tmp_path: Path) -> Driven:
    _require("transformers", "accelerate", "torch")
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from tracker.integrations.transformers import TrackerCallback

    class Tokens(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> dict[str, Any]:
            ids = torch.randint(1, 50, (6,), generator=torch.Generator().manual_seed(i))
            return {"input_ids": ids, "labels": int(ids[0] % 2)}

    def train(callback: Any) -> None:
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            max_position_embeddings=8,
        )
        args = TrainingArguments(
            output_dir=str(tmp_path / "out"),
            max_steps=3,
            per_device_train_batch_size=2,
            logging_steps=1,
            save_strategy="no",
            eval_strategy="no",
            weight_decay=HALF,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
        )
        Trainer(
            model=BertForSequenceClassification(config),
            args=args,
            train_dataset=Tokens(),
            callbacks=[callback],
        ).train()

    return Driven(
        metric="train/loss",
        steps=[1, 2, 3],
        half="training_args/weight_decay",
        framework="transformers",
        extra_config={"model/hidden_size": 16, "training_args/max_steps": 3},
        train=train,
        build=TrackerCallback,
    )


def _keras(tmp_path: Path) -> Driven:
    _require("keras")
    import keras

    from tracker.integrations.keras import TrackerCallback

    def train(callback: Any) -> None:
        keras.utils.set_random_seed(0)
        x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
        y = (x[:, 0] > 0).astype("float32")
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(0.01, beta_1=HALF), loss="mse")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])

    return Driven(
        metric="train/loss",
        steps=[0, 1],
        half="optimizer/beta_1",
        framework="keras",
        extra_config={
            "fit/epochs": 2,
            "optimizer/class": "Adam",
            "framework/keras_backend": keras.backend.backend(),
        },
        train=train,
        build=TrackerCallback,
    )


def _xgboost(tmp_path: Path) -> Driven:
    _require("xgboost")
    import xgboost

    from tracker.integrations.xgboost import TrackerCallback

    def train(callback: Any) -> None:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 3))
        dtrain = xgboost.DMatrix(x, (x[:, 0] > 0).astype(int))
        params = {"objective": "binary:logistic", "eta": HALF, "max_depth": 2}
        xgboost.train(
            params,
            dtrain,
            num_boost_round=3,
            evals=[(dtrain, "train")],
            callbacks=[callback],
            verbose_eval=False,
        )

    return Driven(
        metric="train/logloss",
        steps=[0, 1, 2],
        half="params/eta",
        framework="xgboost",
        extra_config={"params/max_depth": 2, "params/objective": "binary:logistic"},
        train=train,
        build=TrackerCallback,
    )


def _optuna(tmp_path: Path) -> Driven:
    _require("optuna")
    import optuna

    from tracker.integrations.optuna import TrackerCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def train(callback: Any) -> None:
        @callback.track
        def objective(trial: optuna.Trial) -> float:
            x = trial.suggest_float("x", 0.0, 1.0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a numpy choice: Optuna warns, keeps it
                trial.suggest_categorical("half", [HALF])
            for epoch in range(3):
                callback.run_for(trial).log({"train/loss": x / (epoch + 1)}, step=epoch)
                trial.report(x / (epoch + 1), epoch)
            return x

        optuna.create_study(study_name="contract").optimize(
            objective, n_trials=1, callbacks=[callback]
        )

    return Driven(
        metric="trial/intermediate",
        steps=[0, 1, 2],
        half="half",
        framework="optuna",
        extra_config={"sweep/study": "contract", "sweep/trial": 0},
        train=train,
        build=TrackerCallback,
        owned_runs=2,  # the trial's run and the study's record
    )


def _sklearn(tmp_path: Path) -> Driven:
    _require("sklearn")
    import sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    from tracker.integrations.sklearn import log_estimator

    x, y = load_iris(return_X_y=True)
    search = GridSearchCV(LogisticRegression(C=HALF, max_iter=200), {"tol": [1e-3, 1e-4]}, cv=2)
    search.fit(x, y)

    class Recorder:
        """log_estimator's arguments, in the constructor convention's forms."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.args, self.kwargs = args, kwargs

    def train(recorder: Recorder) -> None:
        log_estimator(*recorder.args, estimator=search, X_test=x, y_test=y, **recorder.kwargs)

    return Driven(
        metric="model/search/mean_test_score",
        steps=[0, 1],
        half="model/params/estimator/C",
        framework=sklearn.__name__,
        extra_config={"model/estimator": "GridSearchCV", "model/params/cv": 2},
        train=train,
        build=Recorder,
    )


DRIVERS: dict[str, Callable[[Path], Driven]] = {
    "lightning": _lightning,
    "transformers": _transformers,
    "keras": _keras,
    "xgboost": _xgboost,
    "optuna": _optuna,
    "sklearn": _sklearn,
}
assert set(DRIVERS) == set(INTEGRATIONS)

# The constructor convention: (positional args, keyword args) of each form, where RUN
# stands for the open run and every project form also passes init_run keywords.
RUN = object()
OWNED_FORMS = {
    "positional project": (("contract",), {}),
    "project=": ((), {"project": PROJECT}),
}
GIVEN_FORMS = {
    "positional run": ((RUN,), {}),
    "run=": ((), {"run": RUN}),
}


def _build(driven: Driven, form: tuple[tuple[Any, ...], dict[str, Any]], run: Any, **kw: Any):
    args, kwargs = form
    args = tuple(run if a is RUN else a for a in args)
    kwargs = {k: run if v is RUN else v for k, v in kwargs.items()}
    return driven.build(*args, **kwargs, **kw)


def _check_layout(r: Any, driven: Driven) -> None:
    """The run's metric at its steps, its config (numbers as numbers) and versions."""
    series = r[driven.metric].fetch_values()
    assert series.step.tolist() == driven.steps, driven.metric
    half = r[f"config/{driven.half}"].fetch()
    assert half == 0.5 and type(half) is float, f"np.float32 stored as {half!r}"
    module = sys.modules[driven.framework]
    version = r[f"config/framework/{driven.framework}_version"].fetch()
    assert version == str(module.__version__)
    for path, value in driven.extra_config.items():
        assert r[f"config/{path}"].fetch() == value, path
    # Nothing the integration records as a hyperparameter lives outside config/.
    for old in ("params/", "fit/", "optimizer/", "model/params/", "model/estimator"):
        assert not any(p.startswith(old) for p in r.paths()), old


def _nested(path: str, value: Any) -> dict[str, Any]:
    *parents, leaf = path.split("/")
    out: dict[str, Any] = {leaf: value}
    for part in reversed(parents):
        out = {part: out}
    return out


@pytest.mark.parametrize("form", sorted(OWNED_FORMS))
@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_an_owned_run_from_start_to_end(name: str, form: str, store: str, tmp_path: Path) -> None:
    """Built with a project (and init_run keywords): the integration opens one run per
    training, lays it out as the contract says and closes it ``finished``."""
    driven = DRIVERS[name](tmp_path)
    obj = _build(driven, OWNED_FORMS[form], None, store=store, tags=["c"], system_metrics=False)
    driven.train(obj)

    rows = tracker.list_runs(project=PROJECT, store=store)
    assert len(rows) == driven.owned_runs, [row["name"] for row in rows]
    assert {row["status"] for row in rows} == {"finished"}
    training = [row for row in rows if "optuna-study" not in row["tags"]]
    (row,) = training
    assert "c" in row["tags"]  # init_run's keywords reached the run
    _check_layout(tracker.read_run(row["id"], store=store), driven)
    # The config filter of list_runs finds the run by the hyperparameter.
    found = tracker.list_runs(project=PROJECT, store=store, config=_nested(driven.half, 0.5))
    assert [f["id"] for f in found] == [row["id"]]


@pytest.mark.parametrize("form", sorted(GIVEN_FORMS))
@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_a_given_run_is_written_and_left_open(
    name: str, form: str, store: str, tmp_path: Path
) -> None:
    """Built with the user's open run: everything lands in it, and after the
    end-of-training hook it is still open (``running``) and loggable."""
    driven = DRIVERS[name](tmp_path)
    run = tracker.init_run(project=PROJECT, store=store, system_metrics=False)
    obj = _build(driven, GIVEN_FORMS[form], run)
    with warnings.catch_warnings():
        # Logging to a closed run warns: any such warning is a broken contract.
        warnings.filterwarnings("error", message=".*is closed.*", category=RuntimeWarning)
        driven.train(obj)
        assert run.status == "running"
        assert tracker.read_run(run.id, store=store).status == "running"
        run.log({"after/end": 1.0}, step=1000)  # still the user's to log into
    run.close()

    rows = {row["id"]: row for row in tracker.list_runs(project=PROJECT, store=store)}
    assert run.id in rows
    r = tracker.read_run(run.id, store=store)
    assert r.status == "finished"  # closed by its owner, not before
    assert r["after/end"].fetch_values().value.tolist() == [1.0]
    if name == "optuna":
        # Trials still get runs of their own (by design); the given run is the record.
        assert len(rows) == 2
        assert r["study/n_trials"].fetch() == 1
        assert r["config/sweep/study"].fetch() == "contract"
        (trial,) = (row for rid, row in rows.items() if rid != run.id)
        assert trial["status"] == "finished"
        trial_run = tracker.read_run(trial["id"], store=store)
        assert trial_run["lineage/study_run"].fetch() == run.id
        _check_layout(trial_run, driven)
    else:
        assert list(rows) == [run.id], "a given run must be the only run written"
        _check_layout(r, driven)
