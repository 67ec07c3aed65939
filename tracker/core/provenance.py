"""Capture where and how a run was started, as a flat dict of primitive values.

It is cheap (about 10 ms on an idle machine): two ``git`` processes run while the rest
is read, package versions come from installed metadata files without importing the
packages, and secrets are masked before they leave this module: environment variables
and command-line options whose names look secret, and credentials inside any variable's
value or any argument (``user:pass@`` in a URL, ``Password=`` in a connection string).

Example::

    >>> env = capture_environment()
    >>> env["python/version"]  # doctest: +SKIP
    '3.11.7'
    >>> sorted(k for k in env if k.startswith("git/"))  # doctest: +SKIP
    ['git/branch', 'git/commit', 'git/dirty', 'git/remote']
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, TypeVar, cast

if TYPE_CHECKING:
    import subprocess

from .secrets import mask_argv, mask_secrets, mask_text, strip_url_credentials

__all__ = ["DEFAULT_PACKAGES", "capture_environment"]

logger = logging.getLogger(__name__)

Primitive = str | int | float | bool
T = TypeVar("T")

# Key under "packages/" -> distribution names to try, first installed one wins. The
# TensorFlow wheels are published under several distribution names.
DEFAULT_PACKAGES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "torch": ("torch",),
    "lightning": ("lightning",),
    "pytorch_lightning": ("pytorch-lightning",),
    "transformers": ("transformers",),
    "accelerate": ("accelerate",),
    "deepspeed": ("deepspeed",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
    "keras": ("keras",),
    "xgboost": ("xgboost",),
    "optuna": ("optuna",),
    "scikit-learn": ("scikit-learn",),
    "horovod": ("horovod",),
    # Published as tracker-dl ("tracker" on the index is another project); older
    # installs of this one were named tracker.
    "tracker": ("tracker-dl", "tracker"),
}

# Variables that explain how a distributed job was laid out and why it behaved as it did.
_ENV_NAMES = frozenset(
    {
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "ROLE_RANK",
        "ROLE_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "NODE_RANK",
        "TF_CONFIG",
        "MPI_LOCALRANKID",
        "MPI_LOCALNRANKS",
        "NVIDIA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "PYTORCH_CUDA_ALLOC_CONF",
        "TORCH_DISTRIBUTED_DEBUG",
        "PBS_JOBID",
        "LSB_JOBID",
    }
)
_ENV_PREFIXES = (
    "CUDA_",
    "NCCL_",
    "TORCH_NCCL_",
    "TORCHELASTIC_",
    "SLURM_",
    "OMPI_COMM_WORLD_",
    "PMI_",
    "HOROVOD_",
    "TRACKER_",
)

_GIT_TIMEOUT_S = 2.0


def capture_environment(
    extra_packages: Iterable[str] = (),
    *,
    cwd: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Primitive]:
    """Return a flat ``{"path": primitive}`` description of this process.

    Keys: ``git/commit``, ``git/branch``, ``git/dirty``, ``git/remote`` (only inside a
    git work tree), ``argv``, ``python/*``, ``host/*``, ``process/*``,
    ``packages/<name>`` (installed ones only) and ``env/<NAME>`` for a curated set of
    launcher and GPU variables, secret-looking ones masked. Never raises.

    ``cwd`` is where git is asked (default: the working directory); ``environ``
    defaults to ``os.environ``.

    >>> "python/version" in capture_environment()
    True
    """
    out: dict[str, Primitive] = {}
    # The git processes run while the rest is read, which hides most of their cost.
    git = _guarded(lambda: _start_git(cwd))
    process = _guarded(_process_info)
    packages = _guarded(lambda: _package_versions(extra_packages))
    env = _guarded(lambda: _env_vars(os.environ if environ is None else environ))
    out.update(_guarded(lambda: _finish_git(git)))
    out.update(process)
    out.update(packages)
    out.update(env)
    return out


def _guarded(step: Callable[[], dict[str, T]]) -> dict[str, T]:
    """Return what ``step`` returns, or an empty dict when it raises."""
    try:
        return step()
    except Exception:
        # The environment is context for a run, never a reason to fail starting one.
        logger.debug("environment capture step failed", exc_info=True)
        return {}


# The standard-library modules used below are imported where they are used: together
# they cost tens of milliseconds, and `import tracker` has a budget of 100 ms.


def _process_info() -> dict[str, Primitive]:
    import platform
    import shlex
    import socket

    readers: dict[str, Callable[[], Primitive]] = {
        # By option name (--api-key X) and by value (--db-url postgres://u:pw@h/db).
        "argv": lambda: shlex.join(mask_argv(getattr(sys, "argv", None) or [])),
        "python/version": platform.python_version,
        "python/implementation": platform.python_implementation,
        "python/executable": lambda: sys.executable or "",
        "host/name": socket.gethostname,
        "host/platform": platform.platform,
        "host/cpu_count": lambda: os.cpu_count() or 0,
        "process/pid": os.getpid,
        "process/cwd": os.getcwd,
    }
    info: dict[str, Primitive] = {}
    for key, read in readers.items():
        try:
            info[key] = read()
        except Exception:
            # e.g. the working directory was deleted under us
            logger.debug("could not read %s", key, exc_info=True)
    return info


def _package_versions(extra: Iterable[str]) -> dict[str, Primitive]:
    wanted = dict(DEFAULT_PACKAGES)
    for name in extra:
        wanted.setdefault(name, (name,))
    installed = _installed_versions({_normalize(d) for dists in wanted.values() for d in dists})
    versions: dict[str, Primitive] = {}
    for key, distributions in wanted.items():
        for dist in distributions:
            version = installed.get(_normalize(dist))
            if version:
                versions[f"packages/{key}"] = version
                break
    return versions


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_versions(names: set[str]) -> dict[str, str]:
    """Versions of the distributions ``names`` (normalized) installed on ``sys.path``.

    This finds distributions the way importlib.metadata does (the first ``*.dist-info``
    or ``*.egg-info`` on sys.path whose name matches), without importing it: that import
    alone costs 20-30 ms, and metadata.version() parses whole METADATA files, long
    descriptions included.
    """
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as children:
                candidates = [
                    (child.name, child.path)
                    for child in children
                    if child.name.lower().endswith((".dist-info", ".egg-info"))
                ]
        except OSError:
            continue  # a zip file, or a directory that does not exist
        for filename, path in candidates:
            name = _normalize(filename.rpartition(".")[0].partition("-")[0])
            if name in names and name not in found:
                try:
                    version = _read_version(path)
                except (OSError, UnicodeDecodeError):
                    logger.debug("unreadable package metadata in %s", path, exc_info=True)
                    continue
                if version:
                    found[name] = version
    return found


def _read_version(path: str) -> str | None:
    if os.path.isdir(path):
        files = [os.path.join(path, "METADATA"), os.path.join(path, "PKG-INFO")]
    else:
        files = [path]  # an old-style egg-info file is PKG-INFO itself
    for file in files:
        if not os.path.isfile(file):
            continue
        with open(file, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the headers end at the first blank line
                if line.startswith("Version:"):
                    return line[len("Version:") :].strip()
    return None


def _env_vars(environ: Mapping[str, str]) -> dict[str, Primitive]:
    # A URL at the start of a value loses its credentials altogether (a store or proxy
    # address reads best without them); credentials anywhere else in a value, such as a
    # URL inside TF_CONFIG's JSON or a connection string, are masked by value pattern.
    picked = {
        f"env/{name}": mask_text(strip_url_credentials(value))
        for name, value in environ.items()
        if name in _ENV_NAMES or name.startswith(_ENV_PREFIXES)
    }
    # mask_secrets is typed for any values; given only str values it returns only str
    # values (MASK or mask_text's result), which is what makes them Primitive here.
    masked = cast(dict[str, str], mask_secrets(picked))
    return dict(sorted(masked.items()))


def _start_git(cwd: str | os.PathLike[str] | None) -> dict[str, subprocess.Popen[str]]:
    import subprocess

    env = dict(os.environ)
    # Never block on a credential prompt, and never take index.lock: the user may be
    # running git in the same repository at this moment.
    env.update(GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    commands = {
        "status": ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
        "remote": ["git", "config", "--get", "remote.origin.url"],
    }
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for name, argv in commands.items():
            procs[name] = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
    except OSError:
        logger.debug("git is not available", exc_info=True)
        _finish_git(procs)
        return {}
    return procs


def _finish_git(procs: dict[str, subprocess.Popen[str]]) -> dict[str, Primitive]:
    import subprocess

    deadline = time.monotonic() + _GIT_TIMEOUT_S
    outputs: dict[str, str | None] = {}
    for name, proc in procs.items():
        try:
            stdout, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 0.01))
            outputs[name] = stdout if proc.returncode == 0 else None
        except subprocess.TimeoutExpired:
            logger.debug("git %s took longer than %.0f s", name, _GIT_TIMEOUT_S)
            proc.kill()
            proc.communicate()
            outputs[name] = None
    status = outputs.get("status")
    if status is None:
        return {}  # not a work tree, git refused (e.g. an unsafe directory), or no git
    info = _parse_status(status)
    remote = (outputs.get("remote") or "").strip()
    if remote:
        info["git/remote"] = strip_url_credentials(remote)
    return info


def _parse_status(status: str) -> dict[str, Primitive]:
    info: dict[str, Primitive] = {}
    dirty = False
    for line in status.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split(" ", 2)[2]
            if oid != "(initial)":
                info["git/commit"] = oid
        elif line.startswith("# branch.head "):
            head = line.split(" ", 2)[2]
            if head != "(detached)":
                info["git/branch"] = head
        elif line and not line.startswith("#"):
            dirty = True
    info["git/dirty"] = dirty
    return info
