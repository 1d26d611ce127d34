"""The house: one family, one module name in three packages; mirrored public names; no import
circle; a wheel of exactly harness, impl_torch and impl_jax."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import harness
from harness import registry
from harness.spec import Family

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "impl_torch", "impl_jax", "bench")
IMPLEMENTATIONS = ("impl_torch", "impl_jax")


def _public_names(module_name: str) -> set[str]:
    """What a module defines itself under a public name: functions, classes and other callables
    (a custom_jvp, say) whose module is this one, and constants (UPPER_CASE names)."""
    module = importlib.import_module(module_name)
    return {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(obj)
        and (name.isupper() or (callable(obj) and getattr(obj, "__module__", None) == module_name))
    }


def _mirrored_modules() -> list[str]:
    """Every public module of impl_torch (a file without a leading underscore)."""
    return sorted(p.stem for p in (ROOT / "impl_torch").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("module", _mirrored_modules())
def test_both_implementations_expose_the_same_public_names(module: str) -> None:
    assert (ROOT / "impl_jax" / f"{module}.py").exists(), f"impl_jax has no {module}.py to mirror impl_torch's"
    torch_names, jax_names = (_public_names(f"{package}.{module}") for package in IMPLEMENTATIONS)
    assert torch_names, f"impl_torch.{module} defines no public function or class"
    only_torch, only_jax = sorted(torch_names - jax_names), sorted(jax_names - torch_names)
    assert not only_torch and not only_jax, f"{module}: only in impl_torch {only_torch}, only in impl_jax {only_jax}"


def test_the_packages_export_the_same_names() -> None:
    exported = [set(importlib.import_module(package).__all__) for package in IMPLEMENTATIONS]
    assert exported[0] == exported[1], f"only in one package's __all__: {sorted(exported[0] ^ exported[1])}"


def test_the_packages_mirror_file_for_file() -> None:
    files = [sorted(p.name for p in (ROOT / package).glob("*.py")) for package in IMPLEMENTATIONS]
    torch_only = sorted(set(files[0]) - set(files[1]) - {"_decisions.py"})  # PyTorch's environment decisions
    assert torch_only == [] and set(files[1]) <= set(files[0]), files


@pytest.mark.parametrize("name", harness.names())
def test_each_builtin_technique_lives_in_files_of_its_family_name(name: str) -> None:
    if registry.origin(name) != "builtin":
        pytest.skip("a plugin's files are its own")
    spec = harness.get(name)
    family = Family(spec.family)
    declared_in = {s.name for s in importlib.import_module(f"harness.{family}").SPECS}
    assert name in declared_in, f"{name} says family {family!r} but harness/{family}.py does not declare it"
    for framework in harness.FRAMEWORKS:
        impl = registry.implementation(name, framework)
        assert impl.__module__ == f"impl_{framework}.{family}", (
            f"{name}'s {framework} implementation is in {impl.__module__}"
        )
        if spec.invertible:
            inverse = registry.inverse_implementation(name, framework)
            assert inverse.__module__ == f"impl_{framework}.{family}"


def test_every_family_has_its_three_files_and_each_is_loaded() -> None:
    """A new Family member needs its three files and their imports (harness/registry.py and each
    implementation package's __init__.py); without an import its techniques would never register."""
    for family in Family:
        for package in ("harness", *IMPLEMENTATIONS):
            assert (ROOT / package / f"{family}.py").exists(), f"{package}/{family}.py is missing"
    assert [m.__name__ for m in registry.FAMILIES] == [f"harness.{family}" for family in Family]
    for package in IMPLEMENTATIONS:
        loaded = importlib.import_module(package)
        missing = [str(f) for f in Family if not inspect.ismodule(getattr(loaded, str(f), None))]
        assert not missing, f"{package}/__init__.py does not import {missing}"


def _nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, functions' bodies included (a deferred import is still a circle), except the
    bodies of ``if TYPE_CHECKING:`` blocks, which import nothing at run time."""
    out = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        out.append(node)
        out.extend(_nodes(node))
    return out


def _imports(path: Path, package_of: str, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in it, ``importlib.import_module("name")``
    included. ``from p import m`` counts as importing ``p.m`` where that is a module. Names built
    at run time (``load_framework``'s ``import_module(f"impl_{framework}")``, plugins' entry
    points) are not followed: that one switch is how harness reaches a framework without
    importing it."""
    found: set[str] = set()
    for node in _nodes(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(node.args[0].value)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module if node.level == 0 else ".".join(p for p in (package_of, node.module) if p)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found & modules


def _module_graph() -> dict[str, set[str]]:
    paths: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = _imports(path, package, set(paths)) - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_among_the_projects_modules() -> None:
    graph = _module_graph()
    assert {"harness.registry", "harness.build", "harness.convert", "impl_torch.squashes"} <= set(graph)
    assert "harness.squashes" in graph["harness.registry"]  # the detector sees imports at all
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_detector_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"p": {"p.x"}, "p.x": set()}) is None
    # Through a package's own __init__, as `import harness` inside a harness module would make.
    assert _cycle({"p": {"p.x"}, "p.x": {"p.y"}, "p.y": {"p"}}) == ["p", "p.x", "p.y", "p"]


def test_the_wheel_holds_exactly_the_three_packages(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("output_limits-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"harness", "impl_torch", "impl_jax"}, sorted(top)
    assert "impl_torch/_native/squashes.c" in names  # the kernels' source travels with their only user
