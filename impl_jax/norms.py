"""JAX norms: the functions and their Flax NNX module classes (declared in ``harness/norms.py``;
mirrors ``impl_torch/norms.py``). PyTorch's parameter meaning throughout.

Groups are scaled by an exact power of two before their statistics (see ``_prescale``), so the
largest finite inputs do not overflow. Modules validate nothing themselves (the declaration
did); they check the input through the same harness function as the PyTorch side. Parameter
names follow PyTorch (``weight``, ``bias``, ``running_mean``, ``running_var``);
``.train()``/``.eval()`` toggle ``use_running_average`` as for ``nnx.BatchNorm``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

import harness
from impl_jax._common import clamp_straight_through, jitted, upcast
from impl_jax.adapter import FRAMEWORK_DTYPES, dtype_name


class _Prescaled(NamedTuple):
    """Groups brought to a safe range: ``values = x / scale`` per group (see _prescale)."""

    values: jax.Array
    scale: jax.Array  # a power of two per group
    minimum: jax.Array  # the group's smallest value, divided by scale (exact)
    constant: jax.Array  # the finite groups whose entries are all equal
    finite: jax.Array  # the groups without an infinity or NaN (the others' values are their limit)


def _prescale(x: jax.Array, dims: tuple[int, ...]) -> _Prescaled:
    """``x`` divided by a power of two per group, and that power (the group's scale).

    Groups whose largest magnitude exceeds 1 are divided by a power of two (exact) that brings it
    below 4 (one binade below the estimate, since log2 of the largest float32 rounds up to 128),
    so squares cannot overflow at the largest finite inputs. A group holding an infinity takes
    its limit: its infinite entries become +-1, the rest 0. The largest magnitude comes from the
    group's maximum and minimum, as on PyTorch's side, which also tell which groups are constant.
    """
    top = jax.lax.stop_gradient(jnp.max(x, axis=dims, keepdims=True))
    bottom = jax.lax.stop_gradient(jnp.min(x, axis=dims, keepdims=True))
    amax = jnp.maximum(top, -bottom)
    finite = jnp.isfinite(amax)
    big = finite & (amax > 1.0)
    power = jnp.where(big, jnp.floor(jnp.log2(jnp.where(big, amax, 1.0))) - 1.0, 0.0).astype(jnp.int32)
    # Powers of two made by ldexp once per group, not exp2 (XLA:CPU's is inexact near 2^127), and
    # applied as two normal factors: XLA turns x / s into x * (1 / s) and flushes a subnormal
    # 1 / s to zero (a whole row of zeros out). ldexp on every element costs 3x the whole layer.
    one = jnp.ones_like(amax)
    half = power // 2
    down = jnp.ldexp(one, -half), jnp.ldexp(one, half - power)
    scaled = x * down[0] * down[1]
    scaled = jnp.where(jnp.isinf(amax), jnp.where(jnp.isinf(x), jnp.sign(x), 0.0), scaled)
    constant = (top == bottom) & finite
    return _Prescaled(scaled, jnp.ldexp(one, power), bottom * down[0] * down[1], constant, finite)


def _standardize(x: jax.Array, dims: tuple[int, ...], eps: float) -> tuple[jax.Array, ...]:
    """(x - mean) / sqrt(var + eps) over ``dims``, with mean and biased variance (two-pass), on
    prescaled groups (see :func:`_prescale`); the eps term is scaled to match, which leaves the
    result unchanged. Also returns the prescaled groups' mean and variance, and the groups'
    scale and finiteness, from which :func:`_statistics` makes the raw ones."""
    scaled, scale, minimum, constant, finite = _prescale(x, dims)
    # A constant group's mean is its value, exactly (see PyTorch's side for why).
    # Its value from the minimum, its gradient from the mean (as on PyTorch's side).
    mean = scaled.mean(axis=dims, keepdims=True)
    mean = mean + jax.lax.stop_gradient(jnp.where(constant, minimum - mean, 0.0))
    centred = scaled - mean
    var = (centred * centred).mean(axis=dims, keepdims=True)
    # eps / scale^2 underflows for huge groups; the smallest normal keeps 0 / 0 away.
    xhat = centred / jnp.sqrt(var + jnp.maximum(eps / (scale * scale), jnp.finfo(x.dtype).tiny))
    return xhat, mean, var, scale, finite


def _statistics(mean: jax.Array, var: jax.Array, scale: jax.Array, finite: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The groups' mean and biased variance from those of :func:`_standardize`, non-finite for a
    group that held an infinity (as PyTorch's batch norm gives), never the finite statistics of
    its limit: an infinite mean (NaN where the signs balance) and a NaN variance."""
    mean_scale = jnp.where(finite, scale, jnp.inf)
    var_scale = jnp.where(finite, scale, jnp.nan)
    # Scaled back one factor at a time: scale * scale overflows where the variance does not.
    return mean * mean_scale, (var * var_scale) * var_scale


def layer_norm(x: jax.Array, weight: jax.Array | None, bias: jax.Array | None, *, eps: float) -> jax.Array:
    xc = upcast(x)
    xhat, *_ = _standardize(xc, (-1,), eps)
    if weight is None:
        # Declared bound sqrt(n - 1); eps keeps the exact value inside, this guards rounding.
        bound = math.sqrt(x.shape[-1] - 1)
        y = clamp_straight_through(xhat, -bound, bound)
    else:
        y = xhat * upcast(weight) + upcast(bias)
    return y.astype(x.dtype)


def rms_norm(x: jax.Array, weight: jax.Array | None, *, eps: float | None) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) * weight, with the power-of-two prescaling of _standardize."""
    xc = upcast(x)
    if eps is None:
        # PyTorch's meaning: the machine epsilon of the dtype it computes in (float32 for float16
        # and bfloat16 inputs, as torch.nn.RMSNorm does), not of the input's.
        eps = float(jnp.finfo(xc.dtype).eps)
    scaled, scale, *_ = _prescale(xc, (-1,))
    ms = (scaled * scaled).mean(axis=-1, keepdims=True)
    y = scaled / jnp.sqrt(ms + jnp.maximum(eps / (scale * scale), jnp.finfo(xc.dtype).tiny))
    if weight is None:
        bound = math.sqrt(x.shape[-1])
        y = clamp_straight_through(y, -bound, bound)
    else:
        y = y * upcast(weight)
    return y.astype(x.dtype)


def batch_norm(
    x: jax.Array,
    weight: jax.Array,
    bias: jax.Array,
    running_mean: jax.Array,
    running_var: jax.Array,
    *,
    training: bool,
    momentum: float,
    eps: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (output, new running mean, new running variance); channels on axis 1."""
    xc = upcast(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        dims = (0, *range(2, x.ndim))
        count = x.size // x.shape[1]
        xhat, *statistics = _standardize(xc, dims, eps)
        mean, var = (jax.lax.stop_gradient(s).reshape(-1) for s in _statistics(*statistics))
        # PyTorch's meaning: momentum weights the new batch; the running variance is unbiased.
        new_mean = (1.0 - momentum) * upcast(running_mean) + momentum * mean
        new_var = (1.0 - momentum) * upcast(running_var) + momentum * (var * (count / (count - 1)))
        new_mean, new_var = new_mean.astype(running_mean.dtype), new_var.astype(running_var.dtype)
    else:
        xhat = (xc - upcast(running_mean).reshape(shape)) / jnp.sqrt(upcast(running_var).reshape(shape) + eps)
        new_mean, new_var = running_mean, running_var
    y = xhat * upcast(weight).reshape(shape) + upcast(bias).reshape(shape)
    return y.astype(x.dtype), new_mean, new_var


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
            self.weight = nnx.Param(jnp.ones(num_features, FRAMEWORK_DTYPES[dtype]))
            self.bias = nnx.Param(jnp.zeros(num_features, FRAMEWORK_DTYPES[dtype]))
        else:
            self.weight = self.bias = None

    def __call__(self, x: jax.Array) -> jax.Array:
        self._spec.check_input(dtype_name(x), tuple(x.shape), dict(self.params))
        weight = None if self.weight is None else self.weight[...]
        bias = None if self.bias is None else self.bias[...]
        return jitted(layer_norm, eps=self.eps)(x, weight, bias)


@harness.implements("rms_norm", "jax")
class RMSNorm(nnx.Module):
    """RMSNorm over the last axis with PyTorch's meaning (eps None: the compute dtype's epsilon;
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
        self.weight = nnx.Param(jnp.ones(num_features, FRAMEWORK_DTYPES[dtype])) if elementwise_affine else None

    def __call__(self, x: jax.Array) -> jax.Array:
        self._spec.check_input(dtype_name(x), tuple(x.shape), dict(self.params))
        return jitted(rms_norm, eps=self.eps)(x, None if self.weight is None else self.weight[...])


@harness.implements("batch_norm", "jax")
class BatchNorm(nnx.Module):
    """BatchNorm over axis 1 with PyTorch's meaning: momentum weights the new batch (Flax's
    ``momentum`` is the old value's weight: 0.1 here == 0.9 there), the running variance is
    unbiased (Flax stores the biased one)."""

    def __init__(self, *, num_features: int, eps: float, momentum: float, dtype: str, seed: int) -> None:
        self.params = (("num_features", num_features), ("eps", eps), ("momentum", momentum), ("dtype", dtype))
        self._spec = harness.get("batch_norm")
        self.eps, self.momentum = eps, momentum
        jax_dtype = FRAMEWORK_DTYPES[dtype]
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
        y, new_mean, new_var = jitted(batch_norm, training=training, momentum=self.momentum, eps=self.eps)(
            x, self.weight[...], self.bias[...], self.running_mean[...], self.running_var[...]
        )
        if training:
            self.running_mean[...] = new_mean
            self.running_var[...] = new_var
        return y
