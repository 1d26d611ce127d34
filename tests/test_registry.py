"""The registry: completeness, refusal of duplicates, plugins, no framework import, README table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cases import CASES, FRAMEWORKS

import harness
from harness import registry
from harness.table import BEGIN, END, markdown

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_declared_technique_is_implemented(framework: str) -> None:
    missing = [n for n in harness.names() if (n, framework) not in registry._impls and not _try(n, framework)]
    assert not missing, f"declared without a {framework} implementation: {missing}"


def _try(name: str, framework: str) -> bool:
    try:
        registry.implementation(name, framework)
    except LookupError:
        return False
    return True


def test_importing_harness_imports_no_framework() -> None:
    code = (
        "import sys, harness; harness.names(); harness.get('clamp').bounds(lo=0.0, hi=2.0);"
        "assert not {'torch', 'jax', 'flax'} & set(sys.modules), sorted({'torch', 'jax', 'flax'} & set(sys.modules))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_duplicates_and_undeclared_implementations_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_specs", dict(registry._specs))
    monkeypatch.setattr(registry, "_impls", dict(registry._impls))
    spec = harness.get("clamp")
    with pytest.raises(ValueError, match="already declared"):
        harness.declare(spec)
    with pytest.raises(ValueError, match="already has a torch implementation"):
        harness.implements("clamp", "torch")(lambda x: x)
    with pytest.raises(LookupError, match="not declared"):
        harness.implements("clampp", "jax")(lambda x: x)
    with pytest.raises(ValueError, match="unknown framework"):
        harness.implements("clamp", "mxnet")


def test_implements_returns_the_object_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_specs", dict(registry._specs))
    monkeypatch.setattr(registry, "_impls", dict(registry._impls))
    from dataclasses import replace

    harness.declare(replace(harness.get("tanh"), name="tanh_copy"))

    def fn(x):
        return x

    assert harness.implements("tanh_copy", "torch")(fn) is fn
    assert registry.implementation("tanh_copy", "torch") is fn


@pytest.mark.skipif(os.environ.get("OUTPUT_LIMITS_EXAMPLE_PLUGIN") != "1", reason="example plugin not installed")
def test_example_plugin_is_registered_and_covered() -> None:
    assert "erf_squash" in harness.names()
    assert registry.origin("erf_squash") == "plugin:erf_squash"
    assert "erf_squash" in {c.name for c in CASES}, "the generic tests do not see the plugin"
    # The example with parameters: its declared example runs too, and its tolerances are its own.
    assert registry.origin("interval_softsign") == "plugin:interval_softsign"
    assert {"interval_softsign-defaults", "interval_softsign-ex1"} <= {c.id for c in CASES}
    assert harness.get("interval_softsign").tolerances[("float32", "value")].floor == 1.0


def test_readme_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    assert readme[start:end].strip() == markdown(builtin_only=True).strip(), (
        "README's technique table is stale: replace it with the output of `python -m harness list --builtin`"
    )


def test_cli_lists_every_technique() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "harness", "list"], check=True, capture_output=True, text=True, cwd=ROOT
    )
    for name in harness.names():
        assert f"`{name}`" in out.stdout
