"""output-limits: one declaration per output-limiting technique, two implementations.

Public API: :func:`names`, :func:`get`, :func:`build`, :func:`head`, and for new techniques
:func:`declare` and :func:`implements`. Importing this package imports neither torch nor jax.
"""

from harness.build import backend, build, head, linear_init
from harness.registry import FRAMEWORKS, UnknownTechniqueError, declare, get, implements, names
from harness.spec import DTYPES, REQUIRED, Kink, Param, TechniqueSpec

__all__ = [
    "DTYPES",
    "FRAMEWORKS",
    "REQUIRED",
    "Kink",
    "Param",
    "TechniqueSpec",
    "UnknownTechniqueError",
    "backend",
    "build",
    "declare",
    "get",
    "head",
    "implements",
    "linear_init",
    "names",
]
