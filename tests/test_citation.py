"""CITATION.cff states what a citation needs, and its version and license are the package's."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fields(text: str) -> dict[str, str]:
    # The top-level "key: value" lines (the file is flat apart from lists and a folded abstract).
    fields = {}
    for line in text.splitlines():
        if line and not line.startswith((" ", "#", "-")) and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip().strip('"')
    return fields


def test_citation_matches_the_package() -> None:
    fields = _fields((ROOT / "CITATION.cff").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert fields["cff-version"] == "1.2.0"
    assert fields["title"].startswith("output-limits")
    assert fields["version"] == project["version"]
    assert fields["license"] == project["license"]["text"]
    assert "CITATION.cff" in (ROOT / "README.md").read_text()
