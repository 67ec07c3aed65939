#!/usr/bin/env python3
"""Set-up and checks for tracker, each in one command that bootstraps its own venv.

    python3 dev.py demo     # venv + install, run examples/quickstart.py, show the run
    python3 dev.py test     # venv + every test dependency: ruff, mypy, the whole test suite
    python3 dev.py bench    # the benchmark suite (benchmarks/README.md)

Everything lives in ./.venv (and ./.tox/<env> for the tox envs of oldest releases). Installs
are skipped when pyproject.toml and this file have not changed since the last one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
# A plain "torch" requirement can pull a multi-GB CUDA build; this CPU build is pinned.
TORCH = "torch==2.13.0"
DEMO_EXTRAS = "test"
TEST_EXTRAS = "test,all"
TEST_EXTRA_PACKAGES = [TORCH, "tensorflow-cpu", "tox>=4"]
# tox envs run after the main suite: the oldest supported framework releases.
OLDEST_ENVS = "py311-frameworks-oldest"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _run(*cmd: object, env: dict[str, str] | None = None, check: bool = True) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, check=check).returncode


def _stamp(extras: str, packages: list[str]) -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "dev.py", "setup.py"):
        path = ROOT / name
        if path.exists():
            h.update(path.read_bytes())
    h.update(f"{extras}|{packages}|{sys.version}".encode())
    return h.hexdigest()


def ensure_venv(extras: str, packages: list[str]) -> Path:
    """Create ./.venv if needed and install tracker with ``extras`` plus ``packages``."""
    if sys.version_info < (3, 10):  # noqa: UP036 - dev.py may run on an older python3
        sys.exit(f"tracker needs Python >= 3.10; this is {sys.version.split()[0]}")
    python = _python(VENV)
    if not python.exists():
        _run(sys.executable, "-m", "venv", VENV)
    stamp_file = VENV / ".tracker-installed"
    stamp = _stamp(extras, packages)
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return python
    _run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip", "setuptools", "wheel")
    # torch first, pinned, so that nothing later resolves "torch" to a CUDA build.
    _run(python, "-m", "pip", "install", "--quiet", TORCH)
    # editable_mode=compat: a plain path entry, where the default editable finder costs
    # every interpreter start tens of milliseconds.
    _run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--config-settings",
        "editable_mode=compat",
        "-e",
        f".[{extras}]",
        *packages,
        TORCH,
    )
    stamp_file.write_text(stamp)
    return python


def demo() -> int:
    python = ensure_venv(DEMO_EXTRAS, [TORCH])
    store = ROOT / ".tracker"
    env = dict(os.environ, TRACKER_STORE=str(store))
    _run(python, ROOT / "examples" / "quickstart.py", "--steps", "300", env=env)
    tracker_cli = VENV / "bin" / "tracker"
    _run(tracker_cli, "ls", env=env)
    _run(tracker_cli, "show", "latest", env=env)
    print(
        f"\nThe run is in the embedded store {store}.\n"
        f"Look again with:  .venv/bin/tracker ls   and   .venv/bin/tracker show latest\n"
        f"(from {ROOT}), or read it in Python with tracker.read_run(...)."
    )
    return 0


def test(extra_args: list[str]) -> int:
    python = ensure_venv(TEST_EXTRAS, TEST_EXTRA_PACKAGES)
    horovod = ROOT / "scripts" / "build_horovod.sh"
    if horovod.exists():
        _run("bash", horovod, python)
    linted = [
        d for d in ("tracker", "tests", "benchmarks", "examples", "dev.py") if (ROOT / d).exists()
    ]
    code = _run(python, "-m", "ruff", "check", *linted, check=False)
    if code:
        print("ruff found problems (above)", file=sys.stderr)
        return code
    # The type checker, configured in pyproject.toml ([tool.mypy]: the tracker package).
    code = _run(python, "-m", "mypy", check=False)
    if code:
        print("mypy found problems (above)", file=sys.stderr)
        return code
    env = dict(os.environ)
    env.setdefault("PYTHONFAULTHANDLER", "1")
    code = _run(python, "-m", "pytest", "-ra", *extra_args, env=env, check=False)
    if code:
        return code  # pytest's 5 ("no tests ran") fails the run too
    # Then the oldest supported releases, in tox envs of their own (tox.ini).
    names = os.environ.get("TRACKER_OLDEST_ENVS", OLDEST_ENVS)
    oldest = [e.strip() for e in names.split(",") if e.strip()]
    if oldest:
        tox = VENV / "bin" / "tox"
        if not shutil.which(str(tox)):
            print("tox is missing from .venv; cannot run the oldest-release envs", file=sys.stderr)
            return 1
        return _run(tox, "-e", ",".join(oldest), check=False)
    return 0


def bench(extra_args: list[str]) -> int:
    python = ensure_venv(TEST_EXTRAS, TEST_EXTRA_PACKAGES)
    return _run(python, ROOT / "benchmarks" / "run.py", *extra_args, check=False)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "bench"):
        print(__doc__)
        return 2
    if argv[0] == "demo":
        return demo()
    if argv[0] == "test":
        return test(argv[1:])
    return bench(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
