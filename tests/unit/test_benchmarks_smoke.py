"""The benchmark suite still runs (tiny sizes): a broken benchmark is found here, not on
the day someone needs the figures. Speed is not asserted; benchmarks/results.md has it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..conftest import ROOT, python_env


def test_benchmark_quick_log_cost(tmp_path: Path) -> None:
    out = tmp_path / "raw.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--only",
            "log_cost",
            "--libs",
            "tracker,list",
            "-q",
            "--json",
            str(out),
        ],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["lib"]: r for r in json.loads(out.read_text())["results"]["log_cost"]["rows"]}
    assert rows["tracker"]["median_ns"] > 0 and rows["tracker"]["points_per_s"] > 0
    assert rows["list"]["median_ns"] > 0
