"""Hugging Face Trainer habits other trackers' callbacks take in their stride, on real
``Trainer`` runs with the tiny BERT of ``test_transformers``:

- ``compute_metrics`` returning per-class arrays (sklearn's ``average=None``), tensors,
  lists, nested dicts, bools and None;
- ``predict()`` after training (its ``test_*`` metrics);
- ``report_to="all"``;
- an evaluation script sharing the training's ``TRACKER_RUN_ID`` (with other arguments);
- gradient accumulation whose last window of an epoch is short.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "transformers", reason="needs transformers (pip install 'tracker-dl[transformers]')"
)
pytest.importorskip(
    "accelerate", reason="needs accelerate (pip install 'tracker-dl[transformers]')"
)
torch = pytest.importorskip("torch", reason="needs torch")
np = pytest.importorskip("numpy", reason="needs numpy")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import Trainer, TrainerCallback  # noqa: E402

import tracker  # noqa: E402
from tests.conftest import PYTHON, python_env  # noqa: E402
from tests.integration.test_transformers import Tokens, _args, _model  # noqa: E402
from tracker.integrations.transformers import MAX_ELEMENTS, TrackerCallback  # noqa: E402


def _only_run(store: str, project: str = "hf") -> Any:
    [row] = tracker.list_runs(project=project, store=store)
    return tracker.read_run(row["id"], project=project, store=store)


def _tracker_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("tracker: metric")]


# -- compute_metrics in every form ----------------------------------------------------------


def test_compute_metrics_arrays_tensors_dicts_bools_and_none_never_stop_the_training(
    tmp_path: Path, store: str
) -> None:
    def compute_metrics(prediction: Any) -> dict[str, Any]:
        return {
            "f1": np.array([0.25, 0.75]),  # what sklearn's f1_score(average=None) returns
            "per_class": torch.tensor([1.0, 2.0, 3.0]),
            "confusion": [[5, 1], [2, 8]],
            "report": {"macro avg": {"f1-score": 0.5}, "accuracy": np.float32(0.625)},
            "improved": True,
            "kappa": None,
            "scores": np.zeros(MAX_ELEMENTS + 1),
            "half": torch.tensor(0.5),
        }

    callback = TrackerCallback(project="hf", store=store)
    trainer = Trainer(
        model=_model(),
        args=_args(tmp_path, save_strategy="no", metric_for_best_model=None),
        train_dataset=Tokens(),
        eval_dataset=Tokens(),
        compute_metrics=compute_metrics,
        callbacks=[callback],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()  # evaluating at steps 2 and 4
        trainer.evaluate()  # and once more at 4, after training

    r = _only_run(store)
    assert r.status == "finished"
    expected = {
        "eval/f1/0": 0.25,
        "eval/f1/1": 0.75,
        "eval/per_class/0": 1.0,
        "eval/per_class/2": 3.0,
        "eval/confusion/0/1": 1,
        "eval/confusion/1/1": 8,
        "eval/report/macro avg/f1-score": 0.5,
        "eval/report/accuracy": 0.625,
        "eval/improved": 1,  # a bool as 0/1
        "eval/half": 0.5,
    }
    for path, value in expected.items():
        values = r[path].fetch_values()
        assert list(values.step) == [2, 4, 4], path
        assert list(values.value) == pytest.approx([value] * 3), path
    assert list(r["eval/loss"].fetch_values().step) == [2, 4, 4]
    paths = r.paths()
    assert not [p for p in paths if p.startswith(("eval/kappa", "eval/scores"))]
    # Each skipped metric said once, by name, though three evaluations returned it.
    said = _tracker_warnings(caught)
    assert len(said) == 2, said
    [none] = [w for w in said if "'eval/kappa'" in w]
    assert "None" in none
    [big] = [w for w in said if "'eval/scores'" in w]
    assert f"{MAX_ELEMENTS + 1} elements" in big


# -- predict() -------------------------------------------------------------------------------


def test_predict_after_training_records_test_metrics_in_the_training_run(
    tmp_path: Path, store: str
) -> None:
    callback = TrackerCallback(project="hf", store=store)
    trainer = Trainer(
        model=_model(),
        args=_args(tmp_path, eval_strategy="no", save_strategy="no"),
        train_dataset=Tokens(),
        callbacks=[callback],
    )
    trainer.train()
    output = trainer.predict(Tokens())
    holdout = trainer.predict(Tokens(), metric_key_prefix="holdout")

    # predict() reopened the run and closed it again before returning.
    assert callback.run is None
    r = _only_run(store)
    assert r.id == callback.run_id and r.status == "finished"
    for key in ("loss", "runtime", "samples_per_second", "steps_per_second"):
        values = r[f"test/{key}"].fetch_values()
        assert list(values.step) == [4], key  # at the training's last step
        assert values.value[0] == pytest.approx(output.metrics[f"test_{key}"]), key
    # A prefix of the script's own: under its name, not under train/.
    assert r["holdout/loss"].fetch() == pytest.approx(holdout.metrics["holdout_loss"])
    assert not [p for p in r.paths() if p.startswith("train/holdout")]


# -- report_to="all" -----------------------------------------------------------------------------


@pytest.mark.parametrize("report_to", ["all", ["all"]], ids=["str", "list"])
def test_report_to_all_reports_to_tracker(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch, report_to: Any
) -> None:
    monkeypatch.setenv("TRACKER_PROJECT", "everything")
    monkeypatch.setenv("TRACKER_STORE", store)
    args = _args(tmp_path, report_to=report_to, eval_strategy="no", save_strategy="no")
    assert "tracker" in args.report_to
    trainer = Trainer(model=_model(), args=args, train_dataset=Tokens())
    [callback] = [c for c in trainer.callback_handler.callbacks if isinstance(c, TrackerCallback)]
    trainer.train()
    r = _only_run(store, "everything")
    assert r.id == callback.run_id and r.status == "finished"
    assert list(r["train/loss"].fetch_values().step) == [1, 2, 3, 4]


# -- an evaluation script sharing the run ----------------------------------------------------

EVAL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, {tests!r})
    from test_transformers import Tokens, _args, _model
    from transformers import Trainer

    # An evaluation-only script: report_to=["tracker"], TRACKER_RUN_ID from the training.
    args = _args(Path({tmp!r}) / "eval", learning_rate=0.123, report_to=["tracker"],
                 eval_strategy="no", save_strategy="no")
    print(Trainer(model=_model(), args=args, eval_dataset=Tokens()).evaluate())
    """
)


def test_an_evaluation_script_sharing_the_run_id_keeps_the_trainings_config(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKER_RUN_ID", "shared-run")
    monkeypatch.setenv("TRACKER_PROJECT", "hf")
    monkeypatch.setenv("TRACKER_STORE", store)
    training = Trainer(
        model=_model(),
        args=_args(tmp_path, learning_rate=0.001, eval_strategy="no", save_strategy="no"),
        train_dataset=Tokens(),
        callbacks=[TrackerCallback()],
    )
    training.train()

    script = tmp_path / "evaluate.py"
    script.write_text(EVAL_SCRIPT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path)))
    done = subprocess.run(
        [PYTHON, str(script)],
        env=python_env(HF_HUB_OFFLINE="1", TRACKER_DISABLE_HF_HOOK=""),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0 and "not supported" in done.stderr:
        pytest.skip("report_to=['tracker'] needs the installed .pth in a fresh interpreter")
    assert done.returncode == 0, done.stderr[-4000:]

    # A third evaluation, in this process, through a callback of its own.
    again = Trainer(
        model=_model(),
        args=_args(tmp_path / "again", learning_rate=0.5, eval_strategy="no", save_strategy="no"),
        eval_dataset=Tokens(),
        callbacks=[TrackerCallback()],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again.evaluate()

    r = tracker.read_run("shared-run", project="hf", store=store)
    assert r.status == "finished"
    # The training's arguments are the run's config; the later ones are beside them.
    assert r["config/training_args/learning_rate"].fetch() == 0.001
    assert r["config_later/1/training_args/learning_rate"].fetch() == 0.123
    assert r["config_later/2/training_args/learning_rate"].fetch() == 0.5
    assert r["config_later/1/model/hidden_size"].fetch() == 32
    assert r["config_later/1/framework/transformers_version"].fetch()
    [row] = tracker.list_runs(
        project="hf", store=store, config={"training_args": {"learning_rate": 0.001}}
    )
    assert row["id"] == "shared-run"
    assert list(r["train/loss"].fetch_values().step) == [1, 2, 3, 4]
    # Each evaluation at the run's last step (theirs is 0: they never trained).
    assert list(r["eval/loss"].fetch_values().step) == [4, 4]
    assert "lower than its last step" not in done.stderr
    # No step below the training's, nothing else to say.
    assert [str(w.message) for w in caught if "tracker" in str(w.message)] == []


# -- gradient accumulation ---------------------------------------------------------------------


class TenTokens(Tokens):
    """10 samples: batches of 4, 4 and 2."""

    def __len__(self) -> int:
        return 10


class SamplesPerStep(TrainerCallback):
    """What each optimizer step really took, counted from the model's inputs: the
    samples of the micro-batches between a step's begin and its end."""

    def __init__(self, model: Any) -> None:
        self.steps: list[int] = []
        self._window = 0
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if module.training:
            self._window += int(kwargs["input_ids"].shape[0])

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        self._window = 0

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        self.steps.append(self._window)
        self._window = 0


def test_samples_per_second_counts_the_samples_each_step_took(tmp_path: Path, store: str) -> None:
    model = _model()
    truth = SamplesPerStep(model)
    trainer = Trainer(
        model=model,
        args=_args(
            tmp_path,
            max_steps=-1,
            num_train_epochs=2,
            gradient_accumulation_steps=2,  # windows of 4 + 4 samples, then 2 alone
            eval_strategy="no",
            save_strategy="no",
        ),
        train_dataset=TenTokens(),
        callbacks=[TrackerCallback(project="hf", store=store), truth],
    )
    trainer.train()

    full = 4 * 2
    assert min(truth.steps) < full  # a short window is what this is about
    r = _only_run(store)
    seconds = r["per_rank/step_time"].fetch_values()
    rate = r["per_rank/samples_per_second"].fetch_values()
    assert list(rate.step) == list(seconds.step) == list(range(1, len(truth.steps) + 1))
    # samples per second times the step's seconds: the samples it took.
    samples = [s * t for s, t in zip(rate.value, seconds.value, strict=True)]
    assert samples == pytest.approx(truth.steps)
