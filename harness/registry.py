"""The registry: declarations (framework-neutral) and implementations (per framework).

Registration is data, as in timm: :func:`declare` stores a spec, :func:`implements` stores an
implementation and returns it unchanged. Both raise on a duplicate name, and an implementation
of an undeclared technique is refused, so a typo cannot register silently.

Plugins use three entry-point groups (see the README): ``output_limits.techniques`` names
framework-neutral modules that call :func:`declare`; ``output_limits.impl_torch`` and
``output_limits.impl_jax`` name modules that call :func:`implements` and are imported only when
that framework is first used, so declaring never imports torch or jax.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any, TypeVar

from harness import clamps, norms, simplex, squashes
from harness import spec as _spec_module
from harness import tolerances as _tolerances_module
from harness.spec import Family, Framework, TechniqueSpec

FRAMEWORKS: tuple[Framework, ...] = tuple(Framework)
# The built-in families, one module each, in Family's order: each holds its declarations in
# SPECS, and impl_torch and impl_jax have a module of the same name with their implementations.
_MODULES = {module.__name__.rsplit(".", 1)[1]: module for module in (clamps, squashes, simplex, norms)}
FAMILIES = tuple(_MODULES[family] for family in Family)  # KeyError here: a Family without its module
DECLARATION_GROUP = "output_limits.techniques"
IMPLEMENTATION_GROUP = {framework: f"output_limits.impl_{framework}" for framework in Framework}

T = TypeVar("T")

_specs: dict[str, TechniqueSpec] = {}
_origins: dict[str, str] = {}
_current_origin = "builtin"
_impls: dict[tuple[str, str], Any] = {}
_inverses: dict[tuple[str, str], Any] = {}
_declarations_loaded = False


class UnknownTechniqueError(LookupError):
    """Raised for a technique name that nothing declared; the message names the closest ones."""


def declare(spec: TechniqueSpec) -> TechniqueSpec:
    """Add a technique's declaration; raises ValueError if the name is taken."""
    if spec.name in _specs:
        raise ValueError(f"technique {spec.name!r} is already declared; pick another name")
    _specs[spec.name] = spec
    _origins[spec.name] = _current_origin
    return spec


def implements(name: str, framework: Framework | str) -> Callable[[T], T]:
    """Register the decorated function or module class as ``name``'s implementation in ``framework``.

    A stateless technique registers a pure function ``f(x, **params)``; a technique with learned
    parameters registers a module class constructed as ``cls(**params)``. Returns it unchanged.
    """
    framework = check_framework(framework)
    _load_declarations()
    if name not in _specs:
        raise UnknownTechniqueError(f"cannot implement {name!r}: it is not declared.{_suggest(name)}")

    return _registrar(_impls, name, framework, "implementation")


def _registrar(table: dict[tuple[str, str], Any], name: str, framework: Framework, what: str) -> Callable[[T], T]:
    def register(obj: T) -> T:
        if (name, framework) in table:
            raise ValueError(f"{name!r} already has a {framework} {what}: {table[name, framework]!r}")
        table[name, framework] = obj
        return obj

    return register


def implements_inverse(name: str, framework: Framework | str) -> Callable[[T], T]:
    """Register the decorated ``f(y, **params)`` as the inverse of ``name`` in ``framework``."""
    framework = check_framework(framework)
    spec = get(name)
    if not spec.invertible:
        raise ValueError(f"{name!r} is not declared invertible; set invertible=True and an inverse_reference")

    return _registrar(_inverses, name, framework, "inverse")


def inverse_implementation(name: str, framework: Framework | str) -> Any:
    """The registered inverse; imports the framework's package and its plugins first."""
    spec = get(name)
    if not spec.invertible:
        invertible = ", ".join(n for n in names() if get(n).invertible)
        raise ValueError(f"{name!r} is not invertible; invertible techniques: {invertible}")
    framework = check_framework(framework)
    load_framework(framework)
    try:
        return _inverses[name, framework]
    except KeyError:
        raise LookupError(
            f"{name!r} is declared invertible but has no {framework} inverse; "
            f"register one with @harness.implements_inverse({name!r}, '{framework}')"
        ) from None


def check_framework(framework: Framework | str) -> Framework:
    """``framework`` as a :class:`Framework`; raises ValueError naming the allowed ones."""
    try:
        return Framework(framework)
    except ValueError:
        allowed = ", ".join(repr(str(f)) for f in Framework)
        raise ValueError(f"unknown framework {framework!r}; allowed: {allowed}") from None


def names() -> list[str]:
    """Sorted names of every declared technique, plugins included."""
    _load_declarations()
    return sorted(_specs)


def origin(name: str) -> str:
    """``"builtin"`` for this repository's techniques, else ``"plugin:<entry point>"``."""
    get(name)
    return _origins[name]


def plugin_names() -> list[str]:
    """Sorted names of the techniques that installed plugins declare."""
    return [name for name in names() if _origins[name] != "builtin"]


def select(requested: Sequence[str]) -> list[str]:
    """The techniques a command line asks for: every registered one for ``["all"]``, every
    plugin's for none, else the names given, each checked (an unknown one raises
    :class:`UnknownTechniqueError` naming close matches)."""
    if list(requested) == ["all"]:
        return names()
    if not requested:
        return plugin_names()
    for name in requested:
        get(name)
    return list(requested)


def get(name: str) -> TechniqueSpec:
    """The declaration of ``name``; raises :class:`UnknownTechniqueError` naming close matches."""
    _load_declarations()
    try:
        return _specs[name]
    except KeyError:
        raise UnknownTechniqueError(f"unknown technique {name!r}.{_suggest(name)}") from None


def implementation(name: str, framework: Framework | str) -> Any:
    """The registered implementation; imports the framework's package and its plugins first."""
    get(name)
    framework = check_framework(framework)
    load_framework(framework)
    try:
        return _impls[name, framework]
    except KeyError:
        raise LookupError(
            f"{name!r} is declared but has no {framework} implementation; "
            f"register one with @harness.implements({name!r}, '{framework}')"
        ) from None


def load_framework(framework: Framework | str) -> Any:
    """Import ``impl_<framework>`` (which registers the built-ins) and the framework's plugins.

    The one place a framework is chosen: everything else calls the package this returns."""
    framework = check_framework(framework)
    _load_declarations()
    try:
        package = importlib.import_module(f"impl_{framework}")
    except ModuleNotFoundError as error:
        if error.name not in (framework, "flax", "jaxlib"):
            raise
        raise ImportError(
            f"{framework} is not installed; install it with: pip install 'output-limits[{framework}]'"
        ) from error
    _load_group(IMPLEMENTATION_GROUP[framework])
    return package


def _load_declarations() -> None:
    global _declarations_loaded
    if _declarations_loaded:
        return
    _declarations_loaded = True
    for family in FAMILIES:
        for spec in family.SPECS:
            declare(spec)
    _load_group(DECLARATION_GROUP)


_loaded_entry_points: set[tuple[str, str]] = set()
_scanned_groups: set[str] = set()


def _load_group(group: str) -> None:
    global _current_origin
    # Read once per process, as pytest reads its plugins: scanning every installed distribution's
    # metadata costs ~10 ms, and every build and adapter call comes through here.
    if group in _scanned_groups:
        return
    _scanned_groups.add(group)
    for ep in entry_points(group=group):
        if (group, ep.value) in _loaded_entry_points:
            continue
        _loaded_entry_points.add((group, ep.value))
        _current_origin = f"plugin:{ep.name}"
        try:
            ep.load()
        except Exception as error:
            # A broken plugin must be loud: silently missing techniques would skew comparisons.
            raise ImportError(
                f"plugin entry point {ep.name!r} ({ep.value}) in group {group!r} failed to load"
            ) from error
        finally:
            _current_origin = "builtin"


_spec_module._lookup = get  # what unpickled declarations resolve by name (see TechniqueSpec.__reduce__)


def _declared_tolerances(name: str) -> Any:
    try:
        return get(name).tolerances
    except LookupError:
        return {}


_tolerances_module._declared = _declared_tolerances  # what harness.tolerances.tolerance() reads


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, list(_specs), n=3, cutoff=0.5)
    if close:
        return " Did you mean " + " or ".join(map(repr, close)) + "?"
    return " Registered: " + ", ".join(sorted(_specs)) + "."
