"""Hugging Face TrackerCallback: hook-level tests with made-up Trainer data, then real
``Trainer.train()`` runs with a tiny BERT built from a config (no hub download).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
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

from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import tracker  # noqa: E402
from tracker.integrations import _hf_hook  # noqa: E402
from tracker.integrations.transformers import TrackerCallback  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids = torch.randint(1, 100, (8,), generator=torch.Generator().manual_seed(i))
        return {
            "input_ids": ids,
            "attention_mask": torch.ones(8, dtype=torch.long),
            "labels": int(ids[0] % 2),
        }


def _model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=16,
    )
    return BertForSequenceClassification(config)


def _args(tmp_path: Path, **kwargs: Any) -> TrainingArguments:
    options: dict[str, Any] = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=4,
        per_device_train_batch_size=4,
        logging_steps=1,
        save_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        metric_for_best_model="loss",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    options.update(kwargs)
    return TrainingArguments(**options)


def _sha256_tree(path: Path) -> str:
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        h.update(f"{file.relative_to(path).as_posix()}\0{digest}\n".encode())
    return "sha256:" + h.hexdigest()


# -- hook level: made-up Trainer data ---------------------------------------------------------


def test_on_log_prefixes_like_transformers_and_keeps_totals_as_single_values(store: str) -> None:
    callback = TrackerCallback(project="hf", store=store)
    args = SimpleNamespace(run_name=None, output_dir="o", to_dict=lambda: {"learning_rate": 0.1})
    state = SimpleNamespace(global_step=5, total_flos=123.0)
    callback.on_log(args, state, None, logs={"loss": 0.5, "learning_rate": 0.1, "epoch": 1.0})
    callback.on_log(args, state, None, logs={"eval_loss": 0.4, "eval_runtime": 0.2})
    callback.on_log(args, state, None, logs={"test_accuracy": 0.9})
    callback.on_log(
        args, state, None, logs={"train_runtime": 9.5, "total_flos": 123.0, "train_loss": 0.45}
    )
    callback.on_train_end(args, state, None)
    r = tracker.read_run(callback.run_id, project="hf", store=store)
    assert r.status == "finished"
    for path in ("train/loss", "train/learning_rate", "eval/loss", "eval/runtime", "test/accuracy"):
        assert list(r[path].fetch_values().step) == [5], path
    assert r["summary/train_runtime"].fetch() == 9.5
    assert r["summary/total_flos"].fetch() == 123.0
    assert r["summary/train_loss"].fetch() == 0.45
    assert r["config/training_args/learning_rate"].fetch() == 0.1


def test_hook_registers_tracker_in_report_to_table() -> None:
    module = SimpleNamespace(INTEGRATION_TO_CALLBACK={"wandb": object})
    assert _hf_hook.register(module)
    assert module.INTEGRATION_TO_CALLBACK["tracker"] is _hf_hook.TrackerCallbackFactory
    assert not _hf_hook.register(SimpleNamespace())
    # The stand-in builds the real callback, which is a TrainerCallback.
    built = _hf_hook.TrackerCallbackFactory(project="x")
    assert isinstance(built, TrackerCallback) and isinstance(built, TrainerCallback)
    # Importing the integration registers it in the loaded transformers, .pth or not.
    from transformers.integrations import integration_utils

    assert integration_utils.INTEGRATION_TO_CALLBACK["tracker"] is _hf_hook.TrackerCallbackFactory


# -- real Trainer runs -------------------------------------------------------------------------


def test_train_records_config_logs_flos_checkpoints_and_closes(tmp_path: Path, store: str) -> None:
    callback = TrackerCallback(project="hf", store=store, tags=["tiny"])
    trainer = Trainer(
        model=_model(),
        args=_args(tmp_path, run_name="tiny-bert"),
        train_dataset=Tokens(),
        eval_dataset=Tokens(),
        callbacks=[callback],
    )
    trainer.train()

    [row] = tracker.list_runs(project="hf", store=store)
    # The first run of a callback names the group later trainings join.
    assert row["name"] == "tiny-bert"
    assert sorted(row["tags"]) == sorted(["tiny", f"group:{row['id']}"])
    r = tracker.read_run(row["id"], project="hf", store=store)
    assert r.status == "finished"
    assert r["config/training_args/learning_rate"].fetch() == trainer.args.learning_rate
    assert r["config/training_args/max_steps"].fetch() == 4
    assert r["config/model/hidden_size"].fetch() == 32
    assert r["config/model/model_type"].fetch() == "bert"
    # Every on_log at state.global_step, grouped train/ and eval/.
    assert list(r["train/loss"].fetch_values().step) == [1, 2, 3, 4]
    assert list(r["eval/loss"].fetch_values().step) == [2, 4]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert list(r["train/loss"].fetch_values().value) == pytest.approx(losses)
    # Totals and runtime figures.
    assert r["summary/total_flos"].fetch() == pytest.approx(trainer.state.total_flos)
    assert r["summary/total_flos"].fetch() > 0
    assert r["summary/train_runtime"].fetch() > 0
    assert r["summary/train_samples_per_second"].fetch() > 0
    # Each checkpoint as a reference: the directory stays where it is.
    for step in (2, 4):
        directory = tmp_path / "out" / f"checkpoint-{step}"
        ref = r[f"checkpoints/checkpoint-{step}/files"].fetch()
        assert ref["uri"] == directory.resolve().as_uri()
        assert ref["size"] == sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        assert ref["hash"] == _sha256_tree(directory)
        eval_loss = [
            e["eval_loss"]
            for e in trainer.state.log_history
            if e.get("step") == step and "eval_loss" in e
        ]
        assert r[f"checkpoints/checkpoint-{step}/score"].fetch() == pytest.approx(eval_loss[0])
        assert r[f"checkpoints/checkpoint-{step}/monitor"].fetch() == "eval_loss"
    assert r["checkpoints/best"].fetch() == os.path.abspath(trainer.state.best_model_checkpoint)
    # This process's own step figures.
    assert list(r["per_rank/step_time"].fetch_values().step) == [1, 2, 3, 4]
    assert min(r["per_rank/samples_per_second"].fetch_values().value) > 0


def test_environment_variables_configure_the_callback(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKER_PROJECT", "from-env")
    monkeypatch.setenv("TRACKER_RUN_ID", "hf-env-run")
    monkeypatch.setenv("TRACKER_STORE", store)
    trainer = Trainer(
        model=_model(),
        args=_args(tmp_path, report_to=["tracker"], eval_strategy="no", save_strategy="no"),
        train_dataset=Tokens(),
    )
    assert any(isinstance(cb, TrackerCallback) for cb in trainer.callback_handler.callbacks)
    trainer.train()
    r = tracker.read_run("hf-env-run", project="from-env", store=store)
    assert r.status == "finished"
    assert len(r["train/loss"].fetch_values()) == 4


def test_existing_run_is_flushed_not_closed(tmp_path: Path, store: str) -> None:
    run = tracker.init_run(project="hf", store=store)
    trainer = Trainer(
        model=_model(),
        args=_args(tmp_path, max_steps=2, eval_strategy="no", save_strategy="no"),
        train_dataset=Tokens(),
        callbacks=[TrackerCallback(run=run)],
    )
    trainer.train()
    run["after"] = 1
    run.close()
    r = tracker.read_run(run.id, project="hf", store=store)
    assert r["after"].fetch() == 1
    assert len(r["train/loss"].fetch_values()) == 2


def test_a_crashing_training_leaves_the_run_failed(tmp_path: Path, store: str) -> None:
    """transformers has no exception hook for callbacks; the process's end closes the run."""
    import subprocess
    import textwrap

    from tests.conftest import PYTHON, python_env

    script = tmp_path / "crash.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from transformers import Trainer, TrainerCallback
            from test_transformers import Tokens, _args, _model
            from tracker.integrations.transformers import TrackerCallback
            from pathlib import Path

            class Boom(TrainerCallback):
                def on_step_end(self, args, state, control, **kwargs):
                    if state.global_step == 2:
                        raise RuntimeError("boom")

            callbacks = [TrackerCallback(project="hf", store={store!r}), Boom()]
            args = _args(Path({str(tmp_path)!r}), eval_strategy="no", save_strategy="no")
            Trainer(model=_model(), args=args, train_dataset=Tokens(), callbacks=callbacks).train()
            """
        )
    )
    done = subprocess.run(
        [PYTHON, str(script)],
        env=python_env(HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "boom" in done.stderr
    [row] = tracker.list_runs(project="hf", store=store)
    assert row["status"] == "failed"
    r = tracker.read_run(row["id"], project="hf", store=store)
    assert list(r["train/loss"].fetch_values().step) == [1]
