"""output-limits: one declaration per output-limiting technique, two implementations.

Public API: :func:`names`, :func:`get`, :func:`build`, :func:`head`, and for new techniques
:func:`declare` and :func:`implements`. Importing this package imports neither torch nor jax.
"""

from harness.build import BuildRecord, backend, build, head, inverse, linear_init
from harness.convert import load_torch_checkpoint, save_torch_checkpoint, to_jax, to_torch
from harness.registry import FRAMEWORKS, UnknownTechniqueError, declare, get, implements, implements_inverse, names
from harness.spec import DTYPES, REQUIRED, Family, Framework, FrameworkName, Kink, Param, TechniqueSpec

__all__ = [
    "DTYPES",
    "FRAMEWORKS",
    "REQUIRED",
    "BuildRecord",
    "Family",
    "Framework",
    "FrameworkName",
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
    "implements_inverse",
    "inverse",
    "linear_init",
    "load_torch_checkpoint",
    "names",
    "save_torch_checkpoint",
    "to_jax",
    "to_torch",
]
