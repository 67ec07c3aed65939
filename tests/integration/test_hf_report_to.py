"""``report_to=["tracker"]`` (and ``report_to="all"``) in a script that never imports
tracker, in a fresh interpreter, and what the ``tracker_hf_hook.pth`` line costs an interpreter that never uses transformers.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import sysconfig
import textwrap
import timeit
from pathlib import Path

import pytest

import tracker
from tests.conftest import PYTHON, python_env
from tracker.integrations._hf_hook import PTH_NAME, PTH_TEXT

# The user's script: no tracker import anywhere.
SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            ids = torch.randint(1, 100, (8,), generator=torch.Generator().manual_seed(i))
            return {"input_ids": ids, "labels": int(ids[0] % 2)}

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=16)
    report_to = json.loads(sys.argv[2]) if len(sys.argv) > 2 else ["tracker"]
    args = TrainingArguments(sys.argv[1], max_steps=3, per_device_train_batch_size=4,
                             logging_steps=1, save_strategy="no", report_to=report_to,
                             use_cpu=True, disable_tqdm=True)
    assert "tracker.integrations.transformers" not in sys.modules
    trainer = Trainer(model=BertForSequenceClassification(config), args=args,
                      train_dataset=Tokens())
    trainer.train()
    print("callbacks:", [type(cb).__name__ for cb in trainer.callback_handler.callbacks])
    """
)


def _installed_pth() -> Path | None:
    for key in ("purelib", "platlib"):
        candidate = Path(sysconfig.get_paths()[key]) / PTH_NAME
        if candidate.exists():
            return candidate
    return None


def _only_run(store: str, project: str) -> tracker.core.reader.RunReader:  # type: ignore[name-defined]
    runs = tracker.list_runs(project=project, store=store)
    assert len(runs) == 1, runs
    return tracker.read_run(runs[0]["id"], project=project, store=store)


def _run_script(tmp_path: Path, store: str, prefix: list[str], *extra: str) -> str:
    pytest.importorskip(
        "transformers", reason="needs transformers (pip install 'tracker-dl[transformers]')"
    )
    pytest.importorskip(
        "accelerate", reason="needs accelerate (pip install 'tracker-dl[transformers]')"
    )
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = python_env(TRACKER_STORE=store, TRACKER_PROJECT="report-to", HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [PYTHON, *prefix, str(script), str(tmp_path / "out"), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_report_to_tracker_with_the_installed_pth(tmp_path: Path, store: str) -> None:
    if _installed_pth() is None:
        pytest.skip(
            f"{PTH_NAME} is not in site-packages: install tracker with pip (setup.py ships it)"
        )
    out = _run_script(tmp_path, store, [])
    assert "TrackerCallback" in out
    assert _installed_pth().read_text() == PTH_TEXT  # the installed hook is this version's
    r = _only_run(store, "report-to")
    assert r.status == "finished"
    assert list(r["train/loss"].fetch_values().step) == [1, 2, 3]
    assert r["config/training_args/report_to"].fetch() == ["tracker"]


def test_report_to_tracker_with_the_checkout_pth(tmp_path: Path, store: str) -> None:
    """The same through this checkout's hook text, read by site as it reads site-packages."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / PTH_NAME).write_text(PTH_TEXT)
    boot = (
        "import site, sys, runpy; site.addsitedir(sys.argv.pop(1)); "
        "sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    out = _run_script(tmp_path, store, ["-c", boot, str(site_dir)])
    assert "TrackerCallback" in out
    r = _only_run(store, "report-to")
    assert r.status == "finished"
    assert len(r["train/loss"].fetch_values()) == 3


def test_report_to_all_includes_tracker_with_the_checkout_pth(tmp_path: Path, store: str) -> None:
    """``report_to="all"``: every integration transformers finds installed, tracker too."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / PTH_NAME).write_text(PTH_TEXT)
    boot = (
        "import site, sys, runpy; site.addsitedir(sys.argv.pop(1)); "
        "sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    out = _run_script(tmp_path, store, ["-c", boot, str(site_dir)], '"all"')
    assert "TrackerCallback" in out
    r = _only_run(store, "report-to")
    assert r.status == "finished"
    assert list(r["train/loss"].fetch_values().step) == [1, 2, 3]
    assert "tracker" in r["config/training_args/report_to"].fetch()


def test_interpreter_start_imports_nothing_for_the_hook() -> None:
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, timeout=60
    )
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
    ours = [m for m in imported if m.split(".")[0] in ("tracker", "transformers")]
    assert ours == [], ours


def test_pth_line_costs_a_fraction_of_a_millisecond(tmp_path: Path) -> None:
    line = next(x for x in PTH_TEXT.splitlines() if x.startswith("import "))
    original = list(sys.meta_path)
    # This interpreter may already hold the finder (an installed .pth): start without it.
    before = [f for f in original if not getattr(f, "tracker_hook", False)]
    sys.meta_path[:] = before

    def once() -> None:
        exec(compile(line, PTH_NAME, "exec"), {})  # what site does with the line
        sys.meta_path[:] = before

    try:
        cost = min(timeit.repeat(once, number=20, repeat=5)) / 20
    finally:
        sys.meta_path[:] = original
    assert cost < 0.002, f"the .pth line took {cost * 1e3:.2f} ms"
    sys.meta_path[:] = before

    exec(line, {})
    try:
        finder = sys.meta_path[0]
        assert getattr(finder, "tracker_hook", False)
        exec(line, {})  # site may read one directory twice (lib64 -> lib): one finder
        assert sum(bool(getattr(f, "tracker_hook", False)) for f in sys.meta_path) == 1
        per_import = min(
            timeit.repeat(lambda: finder.find_spec("json.decoder"), number=10_000, repeat=3)
        )
        assert per_import / 10_000 < 5e-6
    finally:
        sys.meta_path[:] = original

    # End to end, in fresh interpreters: site reading a directory with the .pth vs without.
    with_pth, without = tmp_path / "with", tmp_path / "without"
    with_pth.mkdir()
    without.mkdir()
    (with_pth / PTH_NAME).write_text(PTH_TEXT)
    code = (
        "import time; t = time.perf_counter(); import site; "
        "site.addsitedir({d!r}); print(time.perf_counter() - t)"
    )

    def start(directory: Path) -> float:
        done = subprocess.run(
            [PYTHON, "-S", "-c", code.format(d=str(directory))],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return float(done.stdout)

    timings: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(10):  # interleaved, so machine load hits both alike
        timings["with"].append(start(with_pth))
        timings["without"].append(start(without))
    extra = min(timings["with"]) - min(timings["without"])
    assert extra < 0.002, (
        f"start-up with the .pth: +{extra * 1e3:.2f} ms "
        f"(medians {statistics.median(timings['with']) * 1e3:.2f} vs "
        f"{statistics.median(timings['without']) * 1e3:.2f} ms)"
    )
