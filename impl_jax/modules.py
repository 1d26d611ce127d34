"""Flax NNX modules of every family: the wrapper of a stateless technique, and a head.

Module classes with learned parameters live in their family's file (``norms.py``). Parameters
were validated by the declaration (``TechniqueSpec.resolve``); modules only check the input
(dtype, rank, axis, feature size) through the same harness function as the PyTorch side, so
both frameworks raise the same errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

import harness
from harness.build import check_head_input
from impl_jax._common import jitted, require_x64
from impl_jax.adapter import FRAMEWORK_DTYPES, check_array, dtype_name, from_numpy


class _Jitted:
    """``jax.jit`` of ``fn`` with ``params`` that pickles: a jitted function does not, so it is
    looked up again where it is unpickled (or deep-copied) from ``fn``, a registered
    module-level function, and the parameters."""

    def __init__(self, fn: Callable[..., jax.Array], params: tuple[tuple[str, Any], ...]) -> None:
        self.fn, self.params = fn, params
        self._jitted = jitted(fn, **dict(params))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._jitted(x)

    def __reduce__(self) -> tuple[type[_Jitted], tuple[Any, ...]]:
        return _Jitted, (self.fn, self.params)

    # Equal when they jit the same function with the same parameters: a module's graph (nnx's
    # GraphDef, a static key of jitted transforms) is then equal across modules built alike.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Jitted) and (self.fn, self.params) == (other.fn, other.params)

    def __hash__(self) -> int:
        return hash((self.fn, self.params))


class Limit(nnx.Module):
    """A stateless technique; its parameters are fixed when it is built."""

    def __init__(self, spec: harness.TechniqueSpec, fn: Callable[..., jax.Array], params: Mapping[str, Any]) -> None:
        self.technique = spec.name
        self.params = tuple(params.items())
        self._spec = spec
        # jit once here: an eager call then costs one dispatch, and inside a caller's jit it inlines.
        self._fn = _Jitted(fn, self.params)
        # As on PyTorch's side: the shape check and the dtypes that cannot hold the parameters
        # are decided here, so the hot path of an elementwise technique checks nothing.
        self._check_shape = spec.min_rank > 0
        # float64 only with x64 on: without it, the slow path refuses it (require_x64).
        self._fast_dtypes = frozenset(
            t
            for name, t in FRAMEWORK_DTYPES.items()
            if spec.dtype_problem(params, name) is None and (name != "float64" or jax.config.jax_enable_x64)
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        if self._check_shape or getattr(x, "dtype", None) not in self._fast_dtypes:
            check_array(x, self.technique)
            if dtype_name(x) == "float64":
                require_x64(f"{self.technique} on a float64 input", "pass float32 (x.astype(np.float32))")
            self._spec.check_input(dtype_name(x), tuple(x.shape), dict(self.params), framework="jax")
        return self._fn(x)


class Head(nnx.Module):
    """Linear(in_features, out_features) then an output-limiting technique."""

    def __init__(self, linear: nnx.Linear, limit: nnx.Module, dtype: str) -> None:
        self.linear, self.limit, self.dtype_name = linear, limit, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        check_array(x, "a head")
        check_head_input(dtype_name(x), tuple(x.shape), self.linear.in_features, self.dtype_name)
        return self.limit(self.linear(x))


def make_module(spec: harness.TechniqueSpec, impl: Any, params: Mapping[str, Any]) -> nnx.Module:
    """A module class is constructed with the parameters; a function is wrapped in :class:`Limit`."""
    if params.get("dtype") == "float64":
        require_x64(f"{spec.name} with dtype='float64'")
    return impl(**params) if isinstance(impl, type) else Limit(spec, impl, params)


def make_head(weight: np.ndarray, bias: np.ndarray, limit: nnx.Module, dtype: str) -> Head:
    out_features, in_features = weight.shape
    jax_dtype = FRAMEWORK_DTYPES[dtype]
    linear = nnx.Linear(
        in_features, out_features, dtype=jax_dtype, param_dtype=jax_dtype,
        # Full-precision matmul: XLA's default may use TF32 on GPUs, which torch does not.
        precision=jax.lax.Precision.HIGHEST, rngs=nnx.Rngs(0),
    )  # fmt: skip
    linear.kernel[...] = from_numpy(weight.T, dtype)
    linear.bias[...] = from_numpy(bias, dtype)
    return Head(linear, limit, dtype)
