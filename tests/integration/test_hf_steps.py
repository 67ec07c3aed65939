"""Hugging Face Trainer and the steps contract: nothing a training logs is dropped.

Real ``Trainer`` runs on the tiny BERT of ``test_transformers``: ``evaluate()`` after
training (twice, and after ``load_best_model_at_end``) is kept at the last step of the
training's run, which it closes again before returning; each ``train()`` on one Trainer and each ``hyperparameter_search`` trial
gets a run of its own, linked to the first; a resume from a checkpoint continues the
checkpoint's run and supersedes what the abandoned attempt logged after it; a user's run
takes each training after its last step.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import Trainer  # noqa: E402

import tracker  # noqa: E402
from tests.integration.test_transformers import Tokens, _args, _model  # noqa: E402
from tracker.integrations._common import GROUP_TAG_PREFIX, PREVIOUS_RUN_FIELD  # noqa: E402
from tracker.integrations.transformers import CHECKPOINT_MARKER, TrackerCallback  # noqa: E402


class OtherTokens(Tokens):
    """Different batches: a resumed attempt that logs other values than the first did."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        return super().__getitem__(i + 1000)


def _runs(store: str, project: str = "hf") -> list[Any]:
    """Every run of ``project``, oldest first."""
    rows = tracker.list_runs(project=project, store=store)
    readers = [tracker.read_run(row["id"], project=project, store=store) for row in rows]
    return sorted(readers, key=lambda r: r.created_at)


def _logged(trainer: Trainer, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` in the Trainer's own history, in the order logged."""
    entries = [e for e in trainer.state.log_history if key in e]
    return [e["step"] for e in entries], [e[key] for e in entries]


@contextmanager
def _no_lower_step_warning() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    lower = [str(w.message) for w in caught if "lower than its last step" in str(w.message)]
    assert lower == []


def _no_eval_no_save(tmp_path: Path, **kwargs: Any) -> Any:
    return _args(tmp_path, **{"eval_strategy": "no", "save_strategy": "no", **kwargs})


# -- evaluate() after training --------------------------------------------------------------


def test_evaluate_twice_after_training_keeps_both_points_in_the_training_run(
    tmp_path: Path, store: str
) -> None:
    callback = TrackerCallback(project="hf", store=store)
    trainer = Trainer(
        model=_model(),
        args=_args(tmp_path),  # 4 steps, evaluating at 2 and 4
        train_dataset=Tokens(),
        eval_dataset=Tokens(),
        callbacks=[callback],
    )
    with _no_lower_step_warning():
        trainer.train()
        first = trainer.evaluate()
        second = trainer.evaluate()

    [r] = _runs(store)
    assert r.id == callback.run_id
    # Every evaluation is readable: the training's at 2 and 4, then both evaluate() at 4.
    steps, losses = _logged(trainer, "eval_loss")
    assert steps == [2, 4, 4, 4]
    loss = r["eval/loss"].fetch_values()
    assert list(loss.step) == steps
    assert list(loss.value) == pytest.approx(losses)
    runtime = r["eval/runtime"].fetch_values()
    assert list(runtime.value)[-2:] == [first["eval_runtime"], second["eval_runtime"]]
    # One point per step by choice: the second evaluate() is the last at step 4.
    last = r["eval/runtime"].fetch_values(per_step="last")
    assert list(last.step) == [2, 4]
    assert last.value[-1] == second["eval_runtime"]
    earliest = r["eval/runtime"].fetch_values(per_step="first")
    assert earliest.value[-1] == _logged(trainer, "eval_runtime")[1][1]  # the training's
    # Each evaluation reopened the run and closed it again: nothing left open.
    assert callback.run is None
    assert r.status == "finished"
    assert r["summary/global_step"].fetch() == 4


def test_evaluate_before_training_closes_the_run_that_training_then_continues(
    tmp_path: Path, store: str
) -> None:
    callback = TrackerCallback(project="hf", store=store)
    trainer = Trainer(
        model=_model(),
        args=_args(tmp_path, eval_strategy="no", save_strategy="no"),
        train_dataset=Tokens(),
        eval_dataset=Tokens(),
        callbacks=[callback],
    )
    with _no_lower_step_warning():
        baseline = trainer.evaluate()
        assert callback.run is None
        assert _runs(store)[0].status == "finished"
        trainer.train()

    [r] = _runs(store)
    assert r.status == "finished"
    assert r["eval/loss"].fetch() == baseline["eval_loss"]
    assert list(r["eval/loss"].fetch_values().step) == [0]
    assert list(r["train/loss"].fetch_values().step) == [1, 2, 3, 4]


def test_evaluate_after_load_best_model_at_end_is_kept(tmp_path: Path, store: str) -> None:
    callback = TrackerCallback(project="hf", store=store)
    trainer = Trainer(
        model=_model(),
        args=_args(tmp_path, load_best_model_at_end=True),
        train_dataset=Tokens(),
        eval_dataset=Tokens(),
        callbacks=[callback],
    )
    with _no_lower_step_warning():
        trainer.train()
        best = trainer.evaluate()  # the best checkpoint's model, at the last global step

    [r] = _runs(store)
    steps, losses = _logged(trainer, "eval_loss")
    assert steps == [2, 4, 4]
    loss = r["eval/loss"].fetch_values()
    assert list(loss.step) == steps
    assert list(loss.value) == pytest.approx(losses)
    assert loss.value[-1] == best["eval_loss"]
    assert r["eval/loss"].fetch_values(per_step="last").value[-1] == best["eval_loss"]
    assert r["checkpoints/best"].fetch() == os.path.abspath(trainer.state.best_model_checkpoint)
    assert r.status == "finished"


# -- one run per training --------------------------------------------------------------------


def test_train_twice_on_one_trainer_gives_two_linked_runs(tmp_path: Path, store: str) -> None:
    callback = TrackerCallback(project="hf", store=store, name="twice")
    trainer = Trainer(
        model=_model(),
        args=_no_eval_no_save(tmp_path, max_steps=3),
        train_dataset=Tokens(),
        callbacks=[callback],
    )
    with _no_lower_step_warning():
        trainer.train()
        first_losses = _logged(trainer, "loss")[1]
        trainer.train()
        second_losses = _logged(trainer, "loss")[1]

    first, second = _runs(store)
    group = GROUP_TAG_PREFIX + first.id
    assert group in first.tags and group in second.tags
    assert second[PREVIOUS_RUN_FIELD].fetch() == first.id
    with pytest.raises(KeyError):
        first[PREVIOUS_RUN_FIELD].fetch()
    for r, losses in ((first, first_losses), (second, second_losses)):
        assert r.status == "finished"
        assert r.name == "twice"
        loss = r["train/loss"].fetch_values(include_superseded=True)
        assert list(loss.step) == [1, 2, 3]  # each training from its own step 1
        assert list(loss.value) == pytest.approx(losses)
        assert list(r["per_rank/step_time"].fetch_values().step) == [1, 2, 3]
        assert r["summary/global_step"].fetch() == 3


def test_hyperparameter_search_gives_each_trial_a_run_in_one_group(
    tmp_path: Path, store: str
) -> None:
    optuna = pytest.importorskip("optuna", reason="needs optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    callback = TrackerCallback(project="hf", store=store, name="sweep")
    trainer = Trainer(
        model_init=_model,
        args=_no_eval_no_save(tmp_path, max_steps=2),
        train_dataset=Tokens(),
        eval_dataset=Tokens(),
        callbacks=[callback],
    )

    def space(trial: Any) -> dict[str, float]:
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)}

    with _no_lower_step_warning():
        trainer.hyperparameter_search(
            hp_space=space,
            hp_name=lambda trial: f"trial-{trial.number}",
            n_trials=3,
            direction="minimize",
            backend="optuna",
            sampler=optuna.samplers.RandomSampler(seed=0),
        )
    # The search's evaluate() after each trial reopened the trial's run and closed it.
    assert callback.run is None

    runs = _runs(store)
    assert len(runs) == 3
    group = GROUP_TAG_PREFIX + runs[0].id
    learning_rates = set()
    for number, r in enumerate(runs):
        assert group in r.tags
        # The trial's name (hp_name) over the callback's; reopening for evaluate() keeps it.
        assert r.name == f"trial-{number}"
        assert r.status == "finished"
        lr = r["config/trial_params/learning_rate"].fetch()
        assert r["config/training_args/learning_rate"].fetch() == pytest.approx(lr)
        assert r["config/trial_name"].fetch() == f"trial-{number}"
        learning_rates.add(lr)
        assert list(r["train/loss"].fetch_values(include_superseded=True).step) == [1, 2]
        # The search evaluates each trial after its training: in that trial's run.
        assert list(r["eval/loss"].fetch_values(include_superseded=True).step) == [2]
        if number:
            assert r[PREVIOUS_RUN_FIELD].fetch() == runs[number - 1].id
    assert len(learning_rates) == 3


# -- resuming from a checkpoint --------------------------------------------------------------


def test_resume_from_checkpoint_continues_the_run_and_supersedes_the_abandoned_branch(
    tmp_path: Path, store: str
) -> None:
    args = _no_eval_no_save(tmp_path, save_strategy="steps", save_steps=2)
    first = Trainer(
        model=_model(),
        args=args,
        train_dataset=Tokens(),
        callbacks=[TrackerCallback(project="hf", store=store)],
    )
    first.train()
    abandoned = dict(zip(*_logged(first, "loss"), strict=True))
    checkpoint = tmp_path / "out" / "checkpoint-2"
    [run_id] = [r.id for r in _runs(store)]
    assert json.loads((checkpoint / CHECKPOINT_MARKER).read_text())["run_id"] == run_id

    # A new process would build a new Trainer and callback: the marker names the run.
    callback = TrackerCallback(project="hf", store=store)
    resumed = Trainer(
        model=_model(),
        args=args,
        train_dataset=OtherTokens(),
        callbacks=[callback],
    )
    with _no_lower_step_warning():
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert callback.run_id == run_id
    again = dict(zip(*_logged(resumed, "loss"), strict=True))
    assert again[3] != pytest.approx(abandoned[3])  # other batches: other values

    [r] = _runs(store)
    assert r.status == "finished"
    # The default view: each step once, the resumed attempt's after the checkpoint.
    loss = r["train/loss"].fetch_values()
    assert list(loss.step) == [1, 2, 3, 4]
    expected = [abandoned[1], abandoned[2], again[3], again[4]]
    assert list(loss.value) == pytest.approx(expected)
    # Everything logged is still there: the abandoned branch's 3 and 4 too, first.
    everything = r["train/loss"].fetch_values(include_superseded=True)
    assert list(everything.step) == [1, 2, 3, 3, 4, 4]
    assert list(everything.value) == pytest.approx(
        [abandoned[1], abandoned[2], abandoned[3], again[3], abandoned[4], again[4]]
    )
    assert list(r["per_rank/step_time"].fetch_values().step) == [1, 2, 3, 4]
    ref = r["checkpoints/checkpoint-4/files"].fetch()
    assert ref["uri"] == (tmp_path / "out" / "checkpoint-4").resolve().as_uri()


def test_resume_without_a_marker_continues_the_callbacks_last_run(
    tmp_path: Path, store: str
) -> None:
    """A checkpoint saved without tracker: the same Trainer resumes its last run."""
    callback = TrackerCallback(project="hf", store=store)
    trainer = Trainer(
        model=_model(),
        args=_no_eval_no_save(tmp_path, save_strategy="steps", save_steps=2),
        train_dataset=Tokens(),
        callbacks=[callback],
    )
    trainer.train()
    run_id = callback.run_id
    (tmp_path / "out" / "checkpoint-2" / CHECKPOINT_MARKER).unlink()
    with _no_lower_step_warning():
        trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))

    [r] = _runs(store)
    assert r.id == run_id and r.status == "finished"
    assert list(r["train/loss"].fetch_values().step) == [1, 2, 3, 4]
    assert list(r["train/loss"].fetch_values(include_superseded=True).step) == [1, 2, 3, 3, 4, 4]


# -- a run the user opened -------------------------------------------------------------------


def test_a_users_run_takes_a_second_training_after_its_last_step(
    tmp_path: Path, store: str
) -> None:
    run = tracker.init_run(project="hf", store=store)
    callback = TrackerCallback(run=run)
    trainer = Trainer(
        model=_model(),
        args=_no_eval_no_save(tmp_path, max_steps=3),
        train_dataset=Tokens(),
        callbacks=[callback],
    )
    with _no_lower_step_warning():
        trainer.train()
        first_losses = _logged(trainer, "loss")[1]
        trainer.train()
        second_losses = _logged(trainer, "loss")[1]
        evaluation = trainer.evaluate(Tokens())
    assert run.status == "running"  # the user's run: flushed, never closed by the callback
    run.close()

    [r] = _runs(store)
    assert r.id == run.id
    # The second training's step 0 is the run's next step (4): its logged steps 1-3 follow.
    loss = r["train/loss"].fetch_values()
    assert list(loss.step) == [1, 2, 3, 5, 6, 7]
    assert list(loss.value) == pytest.approx(first_losses + second_losses)
    assert list(r["per_rank/step_time"].fetch_values().step) == [1, 2, 3, 5, 6, 7]
    # evaluate() after it: at that training's last step.
    assert list(r["eval/loss"].fetch_values().step) == [7]
    assert r["eval/loss"].fetch() == evaluation["eval_loss"]
