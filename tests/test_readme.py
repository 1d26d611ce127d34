"""The README's Use snippet runs as written, from an empty folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_use_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Use\n", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md (Use)", "exec"), {})
    assert (tmp_path / "head.pt").is_file()


def test_the_reference_run_tables_are_generated_from_the_committed_run() -> None:
    from bench.readme_headline import rewrite, tables

    readme = (ROOT / "README.md").read_text()
    assert rewrite(readme, tables()) == readme, "run python -m bench.readme_headline after replacing the run"
