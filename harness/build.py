"""``build`` and ``head``: the framework-neutral entry points that return framework modules.

The framework switch lives in :func:`harness.registry.load_framework` alone; both
``impl_torch`` and ``impl_jax`` expose the same functions (``make_module``, ``make_head`` and
the adapter functions), so nothing here branches on the framework. Every module made here
carries a :class:`BuildRecord`, which :mod:`harness.convert` reads to rebuild it elsewhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from harness.registry import get, implementation, inverse_implementation, load_framework
from harness.spec import DTYPES, Framework

if TYPE_CHECKING:  # for annotations only: importing harness imports no framework
    import torch
    from flax import nnx

TorchName = Literal["torch", Framework.TORCH]
JaxName = Literal["jax", Framework.JAX]

RECORD_ATTRIBUTE = "output_limits_record"


@dataclass(frozen=True)
class BuildRecord:
    """How a module was built: ``harness.build(name, ...)`` or ``harness.head(name, ...)``."""

    kind: str  # "build" or "head"
    name: str
    params: tuple[tuple[str, Any], ...]
    in_features: int | None = None
    out_features: int | None = None
    seed: int = 0
    dtype: str = "float32"


def retyped(record: BuildRecord, dtype: str) -> BuildRecord:
    """``record`` for its module moved to ``dtype`` (PyTorch's ``.to(dtype)``, ``.double()``, ...):
    what it now is, so that conversion and pickling rebuild the module as moved."""
    params = tuple((k, dtype if k == "dtype" else v) for k, v in record.params)
    return replace(record, params=params, dtype=dtype if record.kind == "head" else record.dtype)


def record_of(module: Any) -> BuildRecord:
    """The record ``build`` or ``head`` attached to ``module``; TypeError for any other module."""
    record = getattr(module, RECORD_ATTRIBUTE, None)
    if not isinstance(record, BuildRecord):
        raise TypeError(
            f"{type(module).__name__} was not made by harness.build or harness.head, so it cannot be "
            "converted; build it with harness.build(...) or harness.head(...)"
        )
    return record


def backend(framework: Framework | str) -> ModuleType:
    """The implementation package of ``framework`` (``impl_torch`` or ``impl_jax``)."""
    return load_framework(framework)


@overload
def build(name: str, framework: TorchName, **params: Any) -> torch.nn.Module: ...
@overload
def build(name: str, framework: JaxName, **params: Any) -> nnx.Module: ...
@overload
def build(name: str, framework: Framework | str, **params: Any) -> torch.nn.Module | nnx.Module: ...
def build(name: str, framework: Framework | str, **params: Any) -> torch.nn.Module | nnx.Module:
    """A ``torch.nn.Module`` or ``flax.nnx.Module`` computing technique ``name``.

    Parameters are validated by the declaration before the framework is touched, so both
    frameworks reject bad parameters with the same error.
    """
    spec = get(name)
    resolved = spec.resolve(params)
    impl = implementation(name, framework)
    module = backend(framework).make_module(spec, impl, resolved)
    record = BuildRecord("build", name, tuple(resolved.items()))
    # Object attribute set directly: an nn.Module would otherwise try to register it.
    object.__setattr__(module, RECORD_ATTRIBUTE, record)
    return module


def inverse(name: str, framework: Framework | str, **params: Any) -> Callable[[Any], Any]:
    """The inverse of an invertible technique as a function of the framework's arrays, e.g. to set
    a head's bias so that its initial output is a chosen value. (lo, hi) maps onto the reals, the
    bounds to -inf and inf, values outside to NaN."""
    spec = get(name)
    resolved = spec.resolve(params)
    implementation = functools.partial(inverse_implementation(name, framework), **resolved)
    return functools.partial(_checked, backend(framework).check_floats, f"{name}'s inverse", implementation)


def _checked(check: Callable[[Any, str], None], label: str, implementation: Callable[[Any], Any], y: Any) -> Any:
    """``implementation(y)`` for a floating array of the framework at hand; one line otherwise,
    as a module's input check gives (a Python float failed inside torch.log, and JAX took a
    float64 array with x64 off as float32)."""
    check(y, label)
    return implementation(y)


def linear_init(in_features: int, out_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Weight ``(out, in)`` and bias ``(out,)`` drawn once in numpy, as PyTorch's default
    ``U(-1/sqrt(in), 1/sqrt(in))``, so one seed gives identical layers in both frameworks."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(in_features)
    weight = rng.uniform(-bound, bound, size=(out_features, in_features))
    bias = rng.uniform(-bound, bound, size=(out_features,))
    return weight, bias


@overload
def head(
    name: str,
    framework: TorchName,
    in_features: int,
    out_features: int,
    *,
    seed: int = ...,
    dtype: str = ...,
    **params: Any,
) -> torch.nn.Module: ...
@overload
def head(
    name: str,
    framework: JaxName,
    in_features: int,
    out_features: int,
    *,
    seed: int = ...,
    dtype: str = ...,
    **params: Any,
) -> nnx.Module: ...
@overload
def head(
    name: str,
    framework: Framework | str,
    in_features: int,
    out_features: int,
    *,
    seed: int = ...,
    dtype: str = ...,
    **params: Any,
) -> torch.nn.Module | nnx.Module: ...
def head(
    name: str,
    framework: Framework | str,
    in_features: int,
    out_features: int,
    *,
    seed: int = 0,
    dtype: str = "float32",
    **params: Any,
) -> torch.nn.Module | nnx.Module:
    """A Linear(in_features, out_features) layer followed by technique ``name``.

    The Linear weights come from :func:`linear_init` (identical in both frameworks for one
    seed); a technique that takes ``num_features`` gets ``out_features``, ``dtype`` and ``seed``.
    """
    # As build's parameters: TypeError for the wrong type (numpy integers are ints), ValueError
    # for a value outside what is allowed.
    for label, value in (("in_features", in_features), ("out_features", out_features), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"head: {label} must be an int, got {value!r} ({type(value).__name__})")
        if label != "seed" and value <= 0:
            raise ValueError(f"head: {label} must be a positive int, got {value!r}")
    in_features, out_features, seed = int(in_features), int(out_features), int(seed)
    if dtype not in DTYPES:
        raise ValueError(f"head: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    spec = get(name)
    if spec.takes_num_features:
        if "num_features" in params:
            raise TypeError("head sets num_features to out_features; do not pass it")
        params = {"num_features": out_features, "dtype": dtype, "seed": seed, **params}
    limit = build(name, framework, **params)
    weight, bias = linear_init(in_features, out_features, seed)
    module = backend(framework).make_head(weight, bias, limit, dtype)
    given = tuple((k, v) for k, v in params.items() if k not in ("num_features", "dtype", "seed"))
    record = BuildRecord("head", name, given, in_features, out_features, seed, dtype)
    object.__setattr__(module, RECORD_ATTRIBUTE, record)
    return module


def check_head_input(dtype: str, shape: tuple[int, ...], in_features: int, head_dtype: str) -> None:
    """Raise the error both frameworks give for an input a head cannot take."""
    if dtype != head_dtype:
        raise TypeError(
            f"head was built with dtype={head_dtype!r} but got a {dtype} input; "
            f"build it with dtype={dtype!r} or cast the input"
        )
    if len(shape) < 1 or shape[-1] != in_features:
        raise ValueError(f"head expects inputs of shape (..., {in_features}), got {shape}")
