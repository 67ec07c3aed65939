"""A store made by init_run is said to be new: a mistyped store= shows at once."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from ..conftest import PYTHON, python_env

_SCRIPT = textwrap.dedent(
    """
    import sys, tracker
    run = tracker.init_run(project="p", store=sys.argv[1], system_metrics=False)
    run.close()
    """
)


def _line(store: Path) -> str:
    proc = subprocess.run(
        [PYTHON, "-c", _SCRIPT, str(store)],
        env=python_env(TRACKER_QUIET=""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tracker: run ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_new_store_and_the_directories_made_for_it_are_named(tmp_path: Path) -> None:
    store = tmp_path / "experimnets" / "mnist" / ".tracker"  # the typo a user would make
    first = _line(store)
    assert f"a new store {store.resolve()} (created now" in first
    assert str(tmp_path / "experimnets") in first and str(tmp_path / "experimnets/mnist") in first
    again = _line(store)
    assert "new store" not in again and str(store.resolve()) in again


def test_a_new_store_in_an_existing_directory_names_no_other_directory(tmp_path: Path) -> None:
    line = _line(tmp_path / ".tracker")
    assert f"a new store {(tmp_path / '.tracker').resolve()} (created now)" in line
