"""The git state recorded with every benchmark run identifies the code that ran."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.environment import git_state

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

# The user's own git configuration (signing, hooks, templates) stays out of these repositories.
_ISOLATED = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    env = {**os.environ, **_ISOLATED}
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, check=True, env=env).stdout.strip()


def _objects(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / ".git" / "objects").rglob("*") if p.is_file())


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in _ISOLATED.items():
        monkeypatch.setenv(name, value)
    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("*.log\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "kept.log").write_text("tracked although ignored\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "add", "-f", "kept.log")
    _git(tmp_path, "commit", "-qm", "one")
    return tmp_path


def test_a_clean_tree_is_its_commits_tree(repo: Path) -> None:
    head, tree = _git(repo, "rev-parse", "HEAD"), _git(repo, "rev-parse", "HEAD^{tree}")
    assert git_state(repo) == {"commit": head, "dirty": False, "tree": tree}


def test_a_copied_tree_matches_the_commit_of_its_files_without_touching_the_repository(repo: Path) -> None:
    first = git_state(repo)
    # The files of a later commit, where HEAD still names the first (a copied working tree).
    (repo / "code.py").write_text("x = 2\n")
    (repo / "new.py").write_text("y = 3\n")
    (repo / "run.log").write_text("ignored and untracked\n")
    objects_before = _objects(repo)
    copied = git_state(repo)
    assert copied["dirty"] is True and copied["commit"] == first["commit"]
    assert _objects(repo) == objects_before, "git_state wrote objects into the repository"
    assert _git(repo, "diff", "--cached", "--name-only") == "", "git_state staged files in the real index"
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "two")
    assert copied["tree"] == _git(repo, "rev-parse", "HEAD^{tree}") != first["tree"]


def test_outside_a_repository_nothing_is_claimed(tmp_path: Path) -> None:
    assert git_state(tmp_path) == {"commit": None, "dirty": None, "tree": None}


@pytest.mark.skipif(os.environ.get("OUTPUT_LIMITS_EXAMPLE_PLUGIN") != "1", reason="example plugin not installed")
def test_installed_plugins_are_recorded_with_their_package_and_version() -> None:
    from bench.environment import plugins

    found = plugins()
    for group in ("output_limits.techniques", "output_limits.impl_torch", "output_limits.impl_jax"):
        entry = found[f"{group}:erf_squash"]
        assert entry["package"] == "output-limits-erf-example" and entry["version"] == "0.1.0", entry
