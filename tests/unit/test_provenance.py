from __future__ import annotations

import importlib.metadata
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tracker.core.provenance import capture_environment
from tracker.core.secrets import MASK

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

PRIMITIVES = (str, int, float, bool)


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "trunk")
    (repo / "train.py").write_text("print('hi')\n")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "first")
    _git(repo, "remote", "add", "origin", "https://alice:hunter2@git.example.com/team/repo.git")
    return repo


def test_values_are_flat_primitives() -> None:
    env = capture_environment()
    assert env, "nothing captured"
    for key, value in env.items():
        assert isinstance(key, str) and key
        assert isinstance(value, PRIMITIVES), (key, value)
    assert env["python/version"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert env["python/executable"] == sys.executable
    assert env["process/pid"] == os.getpid()
    assert env["host/cpu_count"] == os.cpu_count()
    assert env["host/name"]
    assert env["host/platform"]


def test_argv_is_one_shell_quoted_string_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", "--name", "a b", "--hf-token", "sekrit"])
    argv = capture_environment()["argv"]
    assert isinstance(argv, str)
    assert shlex.split(argv) == ["train.py", "--name", "a b", "--hf-token", MASK]


@needs_git
def test_git_clean_repo(repo: Path) -> None:
    env = capture_environment(cwd=repo)
    assert env["git/commit"] == _git(repo, "rev-parse", "HEAD")
    assert env["git/branch"] == "trunk"
    assert env["git/dirty"] is False
    assert env["git/remote"] == "https://git.example.com/team/repo.git"
    assert not any("hunter2" in str(v) for v in env.values())


@needs_git
def test_git_dirty_after_modifying_a_tracked_file(repo: Path) -> None:
    (repo / "train.py").write_text("print('changed')\n")
    assert capture_environment(cwd=repo)["git/dirty"] is True
    _git(repo, "commit", "-q", "-am", "second")
    env = capture_environment(cwd=repo)
    assert env["git/dirty"] is False
    assert env["git/commit"] == _git(repo, "rev-parse", "HEAD")


@needs_git
def test_git_uses_the_working_directory_by_default(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    assert capture_environment()["git/commit"] == _git(repo, "rev-parse", "HEAD")


@needs_git
def test_untracked_files_do_not_make_the_tree_dirty(repo: Path) -> None:
    # Training writes checkpoints and logs next to the code; only tracked changes count.
    (repo / "checkpoint.pt").write_bytes(b"\0")
    assert capture_environment(cwd=repo)["git/dirty"] is False


@needs_git
def test_detached_head_has_no_branch(repo: Path) -> None:
    _git(repo, "checkout", "-q", "--detach")
    env = capture_environment(cwd=repo)
    assert "git/branch" not in env
    assert env["git/commit"] == _git(repo, "rev-parse", "HEAD")


def test_no_git_keys_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stop git from finding a repository in a parent of tmp_path.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    env = capture_environment(cwd=tmp_path)
    assert not [k for k in env if k.startswith("git/")]
    assert "python/version" in env


@needs_git  # for the fixture; the test itself hides git
def test_no_git_keys_when_git_is_missing(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo / "no-such-bin"))
    env = capture_environment(cwd=repo)
    assert not [k for k in env if k.startswith("git/")]
    assert "python/version" in env


def test_curated_env_vars_with_secrets_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("TRACKER_API_TOKEN", "sekrit-token-value")
    monkeypatch.setenv("TRACKER_DB_PASSWORD", "sekrit-password-value")
    monkeypatch.setenv("TRACKER_STORE", "https://bob:sekrit-url-value@tracker.example.com")
    monkeypatch.setenv("MY_PASSWORD", "sekrit-unrelated-value")
    monkeypatch.setenv("HOME_OF_SOMETHING_ELSE", "not-curated")
    env = capture_environment()
    assert env["env/CUDA_VISIBLE_DEVICES"] == "2,3"
    assert env["env/SLURM_JOB_ID"] == "4242"
    assert env["env/WORLD_SIZE"] == "16"
    assert env["env/TRACKER_API_TOKEN"] == MASK
    assert env["env/TRACKER_DB_PASSWORD"] == MASK
    assert env["env/TRACKER_STORE"] == "https://tracker.example.com"
    assert "env/HOME_OF_SOMETHING_ELSE" not in env
    for key, value in env.items():
        assert "sekrit" not in key and "sekrit" not in str(value), key


def test_environ_argument_replaces_os_environ() -> None:
    env = capture_environment(environ={"RANK": "3", "HF_TOKEN": "x", "PATH": "/bin"})
    assert {k: v for k, v in env.items() if k.startswith("env/")} == {"env/RANK": "3"}


def test_packages_from_metadata() -> None:
    env = capture_environment(extra_packages=["pytest", "no-such-package-xyz"])
    assert env["packages/pytest"] == importlib.metadata.version("pytest")
    assert "packages/no-such-package-xyz" not in env
    for key in [k for k in env if k.startswith("packages/")]:
        assert isinstance(env[key], str) and env[key]


def test_package_versions_agree_with_importlib_metadata() -> None:
    names = sorted({d.metadata["Name"] for d in importlib.metadata.distributions()} - {None})
    assert names, "no distributions installed?"
    env = capture_environment(extra_packages=names)
    for name in names:
        assert env.get(f"packages/{name}") == importlib.metadata.version(name), name


def test_packages_are_not_imported() -> None:
    # Look for one of the key packages that is installed but not imported yet.
    candidates = ["torch", "tensorflow", "transformers", "xgboost", "optuna", "sklearn"]
    dists = {"sklearn": "scikit-learn"}
    installed = []
    for module in candidates:
        try:
            importlib.metadata.version(dists.get(module, module))
            installed.append(module)
        except importlib.metadata.PackageNotFoundError:
            pass
    if not installed:
        pytest.skip(f"none of {', '.join(candidates)} is installed")
    code = textwrap.dedent(
        f"""
        import sys
        from tracker.core.provenance import capture_environment
        env = capture_environment()
        imported = [m for m in {installed!r} if m in sys.modules]
        assert not imported, imported
        assert any(k.startswith("packages/") for k in env), env
        """
    )
    root = Path(__file__).resolve().parents[2]
    pythonpath = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": pythonpath}
    )


def test_capture_is_fast() -> None:
    capture_environment()  # warm the metadata and git caches
    start = time.perf_counter()
    capture_environment()
    # About 10 ms on a loaded 2-core machine; the bound only catches a pathological slowdown.
    assert time.perf_counter() - start < 1.0


def test_never_raises_when_a_step_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr("platform.platform", broken)
    env = capture_environment()
    assert "host/platform" not in env
    assert env["python/version"]
