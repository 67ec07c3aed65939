"""One contract, every integration: what each must do whatever its framework.

- ``import tracker`` imports no framework; importing an integration imports its own only;
- without its framework, importing the integration fails with the install command;
- building the callback/logger creates no run and touches no store (frameworks build
  them on every rank, and in spawned processes), and it survives a pickle round trip;
- given an open run, it leaves it open (the caller owns it).
Each integration's own module then runs the real framework end to end.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

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


def _require(framework: str) -> None:
    pytest.importorskip(framework, reason=f"{framework} is not installed")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=python_env(KERAS_BACKEND="torch"),
        capture_output=True,
        text=True,
        timeout=300,
    )


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
    assert f"tracker[{extra}]" in proc.stdout


@pytest.mark.parametrize("name", sorted(INTEGRATIONS))
def test_integration_imports_only_its_own_framework(name: str) -> None:
    framework = INTEGRATIONS[name][0]
    _require(framework)
    probe = "import sys; {}; print(sorted(m for m in {!r} if m in sys.modules))"
    alone = _python(probe.format(BASE_IMPORT[name], HEAVY))
    ours = _python(probe.format(f"import tracker.integrations.{name}", HEAVY))
    assert ours.returncode == 0 and alone.returncode == 0, ours.stderr + alone.stderr
    # Nothing beyond what the framework itself imports.
    extra = set(eval(ours.stdout.strip())) - set(eval(alone.stdout.strip()))  # noqa: S307
    assert not extra, f"tracker.integrations.{name} also imports {sorted(extra)}"


CALLBACKS = [n for n, (_, _, cls) in sorted(INTEGRATIONS.items()) if cls]


@pytest.mark.parametrize("name", CALLBACKS)
def test_building_creates_no_run_and_pickles(name: str, tmp_path: Path) -> None:
    framework, _, cls_name = INTEGRATIONS[name]
    _require(framework)
    module = __import__(f"tracker.integrations.{name}", fromlist=[cls_name])
    store = tmp_path / "store"
    callback = getattr(module, cls_name)(project="contract", store=str(store))
    clone = pickle.loads(pickle.dumps(callback))
    assert type(clone) is type(callback)
    assert not store.exists(), "building a callback must not open a run"


# Optuna's callback opens one run per trial by design, so it takes no run=.
TAKES_A_RUN = [n for n in CALLBACKS if n != "optuna"]


@pytest.mark.parametrize("name", TAKES_A_RUN)
def test_a_given_run_is_left_open(name: str, store: str) -> None:
    framework, _, cls_name = INTEGRATIONS[name]
    _require(framework)
    module = __import__(f"tracker.integrations.{name}", fromlist=[cls_name])
    run = tracker.init_run(project="contract", store=store, system_metrics=False)
    callback = getattr(module, cls_name)(run=run)
    del callback
    run.log({"still/open": 1.0})  # the run is ours: still usable
    run.close()
    assert tracker.read_run(run.id, store=store)["still/open"].fetch() == 1.0
