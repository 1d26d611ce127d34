"""Flax NNX modules: thin wrappers that resolve everything at construction.

Parameters were validated by the declaration (``TechniqueSpec.resolve``); modules only check
the input (dtype, rank, axis, feature size) through the same harness function as the PyTorch
side, so both frameworks raise the same errors. Parameter names follow PyTorch (``weight``,
``bias``, ``running_mean``, ``running_var``); ``.train()``/``.eval()`` toggle
``use_running_average`` as for ``nnx.BatchNorm``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import harness
from harness.build import check_head_input
from impl_jax import extended as X
from impl_jax import functional as F
from impl_jax.adapter import JAX_DTYPES, dtype_name, from_numpy


class Limit(nnx.Module):
    """A stateless technique; its parameters are fixed when it is built."""

    def __init__(self, spec: harness.TechniqueSpec, fn: Callable[..., jax.Array], params: Mapping[str, Any]) -> None:
        self.technique = spec.name
        self.params = tuple(params.items())
        self._spec = spec
        # jit once here: an eager call then costs one dispatch, and inside a caller's jit it inlines.
        self._fn = jax.jit(functools.partial(fn, **params))
        # As on PyTorch's side: the shape check and the dtypes that cannot hold the parameters
        # are decided here, so the hot path of an elementwise technique checks nothing.
        self._check_shape = spec.min_rank > 0
        self._fast_dtypes = frozenset(t for name, t in JAX_DTYPES.items() if spec.dtype_problem(params, name) is None)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self._check_shape or x.dtype not in self._fast_dtypes:
            self._spec.check_input(dtype_name(x), tuple(x.shape), dict(self.params))
        return self._fn(x)


@harness.implements("layer_norm", "jax")
class LayerNorm(nnx.Module):
    """LayerNorm over the last axis with PyTorch's parameter meaning (eps 1e-5, weight 1, bias 0)."""

    def __init__(self, *, num_features: int, eps: float, elementwise_affine: bool, dtype: str, seed: int) -> None:
        self.params = (
            ("num_features", num_features),
            ("eps", eps),
            ("elementwise_affine", elementwise_affine),
            ("dtype", dtype),
        )
        self._spec = harness.get("layer_norm")
        self.eps = eps
        if elementwise_affine:
            self.weight = nnx.Param(jnp.ones(num_features, JAX_DTYPES[dtype]))
            self.bias = nnx.Param(jnp.zeros(num_features, JAX_DTYPES[dtype]))
        else:
            self.weight = self.bias = None

    def __call__(self, x: jax.Array) -> jax.Array:
        self._spec.check_input(dtype_name(x), tuple(x.shape), dict(self.params))
        weight = None if self.weight is None else self.weight[...]
        bias = None if self.bias is None else self.bias[...]
        return F.layer_norm(x, weight, bias, eps=self.eps)


@harness.implements("rms_norm", "jax")
class RMSNorm(nnx.Module):
    """RMSNorm over the last axis with PyTorch's meaning (eps None: the input dtype's epsilon;
    Flax's default is 1e-6)."""

    def __init__(
        self, *, num_features: int, eps: float | None, elementwise_affine: bool, dtype: str, seed: int
    ) -> None:
        self.params = (
            ("num_features", num_features),
            ("eps", eps),
            ("elementwise_affine", elementwise_affine),
            ("dtype", dtype),
        )
        self._spec = harness.get("rms_norm")
        self.eps = eps
        self.weight = nnx.Param(jnp.ones(num_features, JAX_DTYPES[dtype])) if elementwise_affine else None

    def __call__(self, x: jax.Array) -> jax.Array:
        self._spec.check_input(dtype_name(x), tuple(x.shape), dict(self.params))
        return X.rms_norm(x, None if self.weight is None else self.weight[...], eps=self.eps)


@harness.implements("batch_norm", "jax")
class BatchNorm(nnx.Module):
    """BatchNorm over axis 1 with PyTorch's meaning: momentum weights the new batch (Flax's
    ``momentum`` is the old value's weight: 0.1 here == 0.9 there), the running variance is
    unbiased (Flax stores the biased one)."""

    def __init__(self, *, num_features: int, eps: float, momentum: float, dtype: str, seed: int) -> None:
        self.params = (("num_features", num_features), ("eps", eps), ("momentum", momentum), ("dtype", dtype))
        self._spec = harness.get("batch_norm")
        self.eps, self.momentum = eps, momentum
        jax_dtype = JAX_DTYPES[dtype]
        self.weight = nnx.Param(jnp.ones(num_features, jax_dtype))
        self.bias = nnx.Param(jnp.zeros(num_features, jax_dtype))
        self.running_mean = nnx.BatchStat(jnp.zeros(num_features, jax_dtype))
        self.running_var = nnx.BatchStat(jnp.ones(num_features, jax_dtype))
        self.use_running_average = False

    def __call__(self, x: jax.Array) -> jax.Array:
        self._spec.check_input(dtype_name(x), tuple(x.shape), dict(self.params))
        training = not self.use_running_average
        if training and x.size <= x.shape[1]:
            raise ValueError(
                f"batch_norm needs more than one value per channel in training mode, got shape {tuple(x.shape)}; "
                "use a larger batch or call .eval()"
            )
        y, new_mean, new_var = F.batch_norm(
            x, self.weight[...], self.bias[...], self.running_mean[...], self.running_var[...],
            training=training, momentum=self.momentum, eps=self.eps,
        )  # fmt: skip
        if training:
            self.running_mean[...] = new_mean
            self.running_var[...] = new_var
        return y


class Head(nnx.Module):
    """Linear(in_features, out_features) then an output-limiting technique."""

    def __init__(self, linear: nnx.Linear, limit: nnx.Module, dtype: str) -> None:
        self.linear, self.limit, self.dtype_name = linear, limit, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        check_head_input(dtype_name(x), tuple(x.shape), self.linear.in_features, self.dtype_name)
        return self.limit(self.linear(x))


def make_module(spec: harness.TechniqueSpec, impl: Any, params: Mapping[str, Any]) -> nnx.Module:
    """A module class is constructed with the parameters; a function is wrapped in :class:`Limit`."""
    return impl(**params) if isinstance(impl, type) else Limit(spec, impl, params)


def make_head(weight: np.ndarray, bias: np.ndarray, limit: nnx.Module, dtype: str) -> Head:
    out_features, in_features = weight.shape
    jax_dtype = JAX_DTYPES[dtype]
    linear = nnx.Linear(
        in_features, out_features, dtype=jax_dtype, param_dtype=jax_dtype,
        # Full-precision matmul: XLA's default may use TF32 on GPUs, which torch does not.
        precision=jax.lax.Precision.HIGHEST, rngs=nnx.Rngs(0),
    )  # fmt: skip
    linear.kernel[...] = from_numpy(weight.T, dtype)
    linear.bias[...] = from_numpy(bias, dtype)
    return Head(linear, limit, dtype)
