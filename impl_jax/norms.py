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
from collections.abc import Callable
from typing import Any, NamedTuple

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


# Groups are trusted where their variance stands clear of what rounding can fake (PyTorch's
# side states the same rule for ATen's statistics): a variance within _CANCELLATION_ULPS ulps of
# the mean may be the rounding spread of a constant group, and below _TINY_VARIANCE * eps the
# difference is rounding of eps.
_CANCELLATION_ULPS = 64.0
_TINY_VARIANCE = 2.0**-18


def _plain_statistics(xc: jax.Array, dims: tuple[int, ...], eps: float) -> tuple[jax.Array, ...]:
    """Mean and biased variance (two-pass) of each group, unscaled, as flax computes them, and
    whether every group is one the fast path gets right: finite statistics (no infinity, NaN or
    overflowed square) clear of cancellation."""
    mean = xc.mean(axis=dims, keepdims=True)
    centred = xc - mean
    var = (centred * centred).mean(axis=dims, keepdims=True)
    c = _CANCELLATION_ULPS * float(jnp.finfo(xc.dtype).eps)
    floor = jnp.maximum((c * c) * (mean * mean), _TINY_VARIANCE * eps)
    trusted = jnp.all(jnp.isfinite(var) & (jax.lax.stop_gradient(var) > floor))
    return centred, mean, var, trusted


def layer_norm(x: jax.Array, weight: jax.Array | None, bias: jax.Array | None, *, eps: float) -> jax.Array:
    """The declared layer norm: flax's plain two-pass formula where every row's statistics show
    it is the declared one (one fused check on row-sized values), the prescaled formula
    otherwise (``lax.cond``: only the rare call with a constant, infinite, NaN or overflowing row
    pays for it; under vmap both branches run). Differentiated, the prescaled formula runs (see
    _fast_unless_differentiated)."""
    return _layer_norm(x, weight, bias, eps)


def _fast_unless_differentiated(formula: Callable[..., Any], static: tuple[int, ...]) -> Callable[..., Any]:
    """A ``custom_jvp`` whose primal is the decorated guarded fast path and whose derivative (every
    mode: jvp, vjp by transposition, higher orders) is that of ``formula``, which takes the
    same arguments (those at positions ``static``, the last ones, not differentiable).

    Why not the fast path's own derivative: linearizing a ``lax.cond`` makes both branches hand
    their residuals out (the untaken one zero-filled), so a differentiated guarded call costs
    more than the formula alone (5.6x flax's layer norm forward+backward, measured, against 1.7).
    The two paths give the same values to rounding."""

    def decorate(fast: Callable[..., Any]) -> Callable[..., Any]:
        def total(*args: Any) -> Any:
            return fast(*args)

        wrapped = jax.custom_jvp(total, nondiff_argnums=static)

        @wrapped.defjvp
        def _jvp(*args: Any) -> Any:
            *fixed, primals, tangents = args
            return jax.jvp(lambda *p: formula(*p, *fixed), primals, tangents)

        return wrapped

    return decorate


def _layer_norm_formula(x: jax.Array, weight: jax.Array | None, bias: jax.Array | None, eps: float) -> jax.Array:
    return _layer_norm_tail(_standardize(upcast(x), (-1,), eps)[0], weight, bias).astype(x.dtype)


@_fast_unless_differentiated(_layer_norm_formula, static=(3,))
def _layer_norm(x: jax.Array, weight: jax.Array | None, bias: jax.Array | None, eps: float) -> jax.Array:
    xc = upcast(x)
    _, mean, var, trusted = _plain_statistics(xc, (-1,), eps)

    # The branches take the row statistics only: x - mean is recomputed inside, fused into the
    # output pass, where handing it across the cond would write it to memory first.
    def fast(operands: tuple[jax.Array, jax.Array]) -> jax.Array:
        mean, var = operands
        return _layer_norm_tail((xc - mean) * jax.lax.rsqrt(var + eps), weight, bias).astype(x.dtype)

    def formula(_: tuple[jax.Array, jax.Array]) -> jax.Array:
        return _layer_norm_formula(x, weight, bias, eps)

    return jax.lax.cond(trusted, fast, formula, (mean, var))


def _layer_norm_tail(xhat: jax.Array, weight: jax.Array | None, bias: jax.Array | None) -> jax.Array:
    if weight is None:
        # Declared bound sqrt(n - 1); eps keeps the exact value inside, this guards rounding.
        bound = math.sqrt(xhat.shape[-1] - 1)
        return clamp_straight_through(xhat, -bound, bound)
    return xhat * upcast(weight) + upcast(bias)


def rms_norm(x: jax.Array, weight: jax.Array | None, *, eps: float | None) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) * weight: the plain formula where every row's mean square is
    finite (no infinity, NaN or overflowed square), the prescaled one of _standardize otherwise
    (``lax.cond``; differentiated, the prescaled one, as layer_norm)."""
    if eps is None:
        # PyTorch's meaning: the machine epsilon of the dtype it computes in (float32 for float16
        # and bfloat16 inputs, as torch.nn.RMSNorm does), not of the input's.
        eps = float(jnp.finfo(upcast(x).dtype).eps)
    return _rms_norm(x, weight, eps)


def _rms_norm_tail(y: jax.Array, weight: jax.Array | None, dtype: Any) -> jax.Array:
    if weight is None:
        bound = math.sqrt(y.shape[-1])
        return clamp_straight_through(y, -bound, bound).astype(dtype)
    return (y * upcast(weight)).astype(dtype)


def _rms_norm_formula(x: jax.Array, weight: jax.Array | None, eps: float) -> jax.Array:
    scaled, scale, *_ = _prescale(upcast(x), (-1,))
    ms = (scaled * scaled).mean(axis=-1, keepdims=True)
    y = scaled / jnp.sqrt(ms + jnp.maximum(eps / (scale * scale), jnp.finfo(scaled.dtype).tiny))
    return _rms_norm_tail(y, weight, x.dtype)


@_fast_unless_differentiated(_rms_norm_formula, static=(2,))
def _rms_norm(x: jax.Array, weight: jax.Array | None, eps: float) -> jax.Array:
    xc = upcast(x)
    ms = (xc * xc).mean(axis=-1, keepdims=True)

    def fast(ms: jax.Array) -> jax.Array:
        return _rms_norm_tail(xc * jax.lax.rsqrt(ms + eps), weight, x.dtype)

    def formula(_: jax.Array) -> jax.Array:
        return _rms_norm_formula(x, weight, eps)

    return jax.lax.cond(jnp.all(jnp.isfinite(ms)), fast, formula, ms)


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
    """Returns (output, new running mean, new running variance); channels on axis 1. In training
    mode the plain two-pass statistics where every channel is trusted (see layer_norm), the
    prescaled ones otherwise; differentiated, the prescaled ones."""
    if training:
        return _batch_norm_training(x, weight, bias, running_mean, running_var, momentum, eps)
    xc = upcast(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (xc - upcast(running_mean).reshape(shape)) / jnp.sqrt(upcast(running_var).reshape(shape) + eps)
    return _batch_norm_tail(x, xhat, weight, bias), running_mean, running_var


def _batch_norm_tail(x: jax.Array, xhat: jax.Array, weight: jax.Array, bias: jax.Array) -> jax.Array:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (xhat * upcast(weight).reshape(shape) + upcast(bias).reshape(shape)).astype(x.dtype)


def _running(
    x: jax.Array, mean: jax.Array, var: jax.Array, running_mean: jax.Array, running_var: jax.Array, momentum: float
) -> tuple[jax.Array, jax.Array]:
    # PyTorch's meaning: momentum weights the new batch; the running variance is unbiased.
    count = x.size // x.shape[1]
    mean, var = (jax.lax.stop_gradient(s).reshape(-1) for s in (mean, var))
    new_mean = (1.0 - momentum) * upcast(running_mean) + momentum * mean
    new_var = (1.0 - momentum) * upcast(running_var) + momentum * (var * (count / (count - 1)))
    return new_mean.astype(running_mean.dtype), new_var.astype(running_var.dtype)


def _batch_norm_formula(
    x: jax.Array, weight: jax.Array, bias: jax.Array, running_mean: jax.Array, running_var: jax.Array,
    momentum: float, eps: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    xhat, *statistics = _standardize(upcast(x), (0, *range(2, x.ndim)), eps)
    mean, var = _statistics(*statistics)  # non-finite for a channel holding an infinity
    return (_batch_norm_tail(x, xhat, weight, bias), *_running(x, mean, var, running_mean, running_var, momentum))


@_fast_unless_differentiated(_batch_norm_formula, static=(5, 6))
def _batch_norm_training(
    x: jax.Array, weight: jax.Array, bias: jax.Array, running_mean: jax.Array, running_var: jax.Array,
    momentum: float, eps: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    xc = upcast(x)
    _, mean, var, trusted = _plain_statistics(xc, (0, *range(2, x.ndim)), eps)

    def fast(operands: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        mean, var = operands  # x - mean recomputed in the output pass, as in layer_norm
        y = _batch_norm_tail(x, (xc - mean) * jax.lax.rsqrt(var + eps), weight, bias)
        return (y, *_running(x, mean, var, running_mean, running_var, momentum))

    def formula(_: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        return _batch_norm_formula(x, weight, bias, running_mean, running_var, momentum, eps)

    return jax.lax.cond(trusted, fast, formula, (mean, var))


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
