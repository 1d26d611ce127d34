"""The git state recorded with every benchmark run identifies the code that ran."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.environment import git_state


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def test_tree_matches_the_commit_with_the_same_files_even_where_head_lags(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("ignored.txt\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "one")
    clean = git_state(tmp_path)
    assert clean["dirty"] is False
    assert clean["tree"] == _git(tmp_path, "rev-parse", "HEAD^{tree}")

    # The files of a later commit, run where HEAD still names the first (a copied tree).
    (tmp_path / "code.py").write_text("x = 2\n")
    (tmp_path / "new.py").write_text("y = 3\n")
    (tmp_path / "ignored.txt").write_text("not code\n")
    copied = git_state(tmp_path)
    assert copied["dirty"] is True and copied["commit"] == clean["commit"]
    staged_before = _git(tmp_path, "diff", "--cached", "--name-only")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "two")
    assert copied["tree"] == _git(tmp_path, "rev-parse", "HEAD^{tree}") != clean["tree"]
    assert staged_before == "", "git_state staged files in the real index"
