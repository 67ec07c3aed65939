#!/usr/bin/env python3
"""Set-up and checks for tracker, each in one command that bootstraps its own venv.

    python3 dev.py demo     # venv + install, run examples/quickstart.py, show the run
    python3 dev.py test     # venv + every test dependency: ruff, mypy, the whole test suite
    python3 dev.py bench    # the benchmark suite next to its peers (benchmarks/README.md)

Everything lives in ./.venv (./.venv-bench for the benchmarks, whose peers -- MLflow, wandb,
tensorboardX -- stay out of the test environment; ./.tox/<env> for the tox envs of oldest
releases). Installs are skipped when pyproject.toml and this file have not changed since
the last one.

torch is pinned to 2.13.0 and installed as its CPU build: from a wheel pip already finds
(a --find-links directory, a mirror), else from PyTorch's CPU index when it answers. PyPI's
Linux torch is the CUDA build (several GB of nvidia-* wheels); when nothing better is
reachable that is what pip takes, and this script says so before it starts.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BENCH_VENV = ROOT / ".venv-bench"
# A plain "torch" requirement can pull a multi-GB CUDA build; this CPU build is pinned.
TORCH = "torch==2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
DEMO_EXTRAS = "test"
TEST_EXTRAS = "test,all"
TEST_EXTRA_PACKAGES = [TORCH, "tensorflow-cpu", "tox>=4"]
BENCH_EXTRAS = "bench,server"
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


def _local_cpu_torch(python: Path) -> bool:
    """Whether pip, as configured here, already finds the CPU build of the pinned torch."""
    out = subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
         "--quiet", "--only-binary", ":all:", f"{TORCH}+cpu"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.returncode == 0


def _cpu_index_answers() -> bool:
    try:
        with urllib.request.urlopen(f"{TORCH_CPU_INDEX}/torch/", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def torch_install_args(python: Path) -> list[str]:
    """pip arguments that make the pinned torch the CPU build wherever one is reachable."""
    if platform.system() != "Linux":
        return []  # PyPI's torch for macOS and Windows is the CPU build already
    if _local_cpu_torch(python):
        return []
    if _cpu_index_answers():
        # The CPU build's version is 2.13.0+cpu, which pip ranks above PyPI's 2.13.0.
        return ["--extra-index-url", TORCH_CPU_INDEX]
    print(
        f"dev.py: neither a local wheel nor {TORCH_CPU_INDEX} offers the CPU build of "
        f"{TORCH}; pip will take PyPI's, which on Linux is the CUDA build (several GB)",
        file=sys.stderr,
    )
    return []


def ensure_venv(extras: str, packages: list[str], venv: Path = VENV) -> Path:
    """Create ``venv`` if needed and install tracker with ``extras`` plus ``packages``."""
    if sys.version_info < (3, 10):  # noqa: UP036 - dev.py may run on an older python3
        sys.exit(f"tracker needs Python >= 3.10; this is {sys.version.split()[0]}")
    python = _python(venv)
    if not python.exists():
        _run(sys.executable, "-m", "venv", venv)
    stamp_file = venv / ".tracker-installed"
    stamp = _stamp(extras, packages)
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return python
    _run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip", "setuptools", "wheel")
    torch_args = torch_install_args(python)
    # torch first, pinned, so that nothing later resolves "torch" to a CUDA build.
    _run(python, "-m", "pip", "install", "--quiet", *torch_args, TORCH)
    # The default editable mode: setuptools removes "compat"; its finder costs about 8 ms
    # per interpreter start in this venv only (a wheel install pays nothing).
    _run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        *torch_args,
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
    ensure_postgres()
    ensure_chromium()
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
        tox_env = dict(env)
        torch_args = torch_install_args(python)
        if torch_args:  # tox's pip installs its own pinned torch: the CPU build there too
            extra = [os.environ.get("PIP_EXTRA_INDEX_URL", ""), *torch_args[1::2]]
            tox_env["PIP_EXTRA_INDEX_URL"] = " ".join(u for u in extra if u)
        return _run(tox, "-e", ",".join(oldest), env=tox_env, check=False)
    return 0


def postgres_bin() -> Path | None:
    """Where PostgreSQL's server binaries (initdb, pg_ctl) are: Debian's, or on PATH."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def ensure_postgres() -> None:
    """The server tests start a throwaway PostgreSQL cluster: install Debian's server
    where it is missing and this is a Debian-like machine run as root; elsewhere those
    tests skip, naming what they need."""
    if postgres_bin() is not None:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(
            "dev.py: no PostgreSQL server binaries (initdb, pg_ctl) and no root apt-get to "
            "install them: the PostgreSQL tests will skip (apt-get install postgresql)",
            file=sys.stderr,
        )
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if _run("apt-get", "install", "-y", "-q", "postgresql", env=env, check=False):
        _run("apt-get", "update", "-q", env=env, check=False)
        _run("apt-get", "install", "-y", "-q", "postgresql", env=env, check=False)


CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> None:
    """The web UI's browser tests drive Debian's Chromium (Playwright cannot download its
    own browsers here): install it where missing on a Debian-like machine run as root;
    elsewhere those tests skip, naming it."""
    if CHROMIUM.exists():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(
            f"dev.py: no {CHROMIUM} and no root apt-get to install it: the browser tests "
            "will skip (apt-get install chromium)",
            file=sys.stderr,
        )
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if _run("apt-get", "install", "-y", "-q", "chromium", env=env, check=False):
        _run("apt-get", "update", "-q", env=env, check=False)
        _run("apt-get", "install", "-y", "-q", "chromium", env=env, check=False)


def bench(extra_args: list[str]) -> int:
    # A venv of its own: the peers (MLflow, wandb, tensorboardX) pin and pull packages the
    # test environment should not have to share.
    python = ensure_venv(BENCH_EXTRAS, [TORCH], venv=BENCH_VENV)
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
