"""Pure JAX functions, one per technique, registered with ``harness.implements``.

Every kink gradient is written here explicitly (see each declaration in harness/catalog.py):
``jnp.clip`` splits the gradient 0.5/0.5 at a tie and ``jax.nn.hard_tanh`` passes it, so
neither is trusted for the gradient; ``custom_jvp`` keeps the plain op on the forward path.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from harness import implements
from harness.numerics import needs_rounding_guard

_LOW = (jnp.dtype("float16"), jnp.dtype("bfloat16"))


def _upcast(x: jax.Array) -> jax.Array:
    # Composite formulas run in float32 for float16/bfloat16 and round once at the end, so
    # both frameworks round the same value (XLA and ATen round intermediates differently).
    return x.astype(jnp.float32) if x.dtype in _LOW else x


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _clamp_inside(x: jax.Array, lo: float, hi: float) -> jax.Array:
    """clamp with gradient 1 strictly inside (lo, hi) and 0 elsewhere, bounds included."""
    return jnp.clip(x, lo, hi)


@_clamp_inside.defjvp
def _clamp_inside_jvp(
    lo: float, hi: float, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    # Zero where x <= lo or x >= hi; passed on elsewhere (NaN included), exactly as PyTorch's side.
    # Compared in float32 for float16/bfloat16, as ATen does: a bound those cannot hold must not
    # be rounded onto the input first (x = bf16(0.1) is above lo = 0.1, so its gradient is 1).
    xc = _upcast(x)
    return jnp.clip(x, lo, hi), jnp.where((xc <= lo) | (xc >= hi), jnp.zeros_like(t), t)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _clamp_straight_through(x: jax.Array, lo: float, hi: float) -> jax.Array:
    """clamp whose gradient is 1 everywhere: only for rounding guards, never a modelled kink."""
    return jnp.clip(x, lo, hi)


@_clamp_straight_through.defjvp
def _clamp_straight_through_jvp(
    lo: float, hi: float, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    return jnp.clip(x, lo, hi), t


@implements("sigmoid", "jax")
def sigmoid(x: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(x)


@implements("tanh", "jax")
def tanh(x: jax.Array) -> jax.Array:
    return jnp.tanh(x)


@implements("clamp", "jax")
def clamp(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    return _clamp_inside(x, lo, hi)


@implements("bounded_relu", "jax")
def bounded_relu(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    # clamp(relu(x), lo, hi) == clamp(x, max(lo, 0), hi): one pass instead of two.
    return _clamp_inside(x, max(lo, 0.0), hi)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _smooth_clamp(x: jax.Array, lo: float, hi: float, r: float) -> jax.Array:
    """m + r tanh(e/r) with m = clip(x, lo + r, hi - r) and e = x - m.

    The same function as PyTorch's m + 2r (sigmoid(2e/r) - 1/2) (tanh(z) = 2 sigmoid(2z) - 1): XLA's
    tanh is cheap, ATen's is 6x slower than its sigmoid on CPU, so each side uses its fast form.
    Exactly x in the middle; inside [lo, hi] by monotone rounding (|r tanh| <= r), with a final
    clip only where rounding needs it.
    """
    xc = _upcast(x)
    middle = jnp.clip(xc, lo + r, hi - r)
    y = middle + r * jnp.tanh((xc - middle) / r)
    if needs_rounding_guard(lo, hi, r, xc.dtype.name):
        y = jnp.clip(y, lo, hi)
    return y.astype(x.dtype)


@_smooth_clamp.defjvp
def _smooth_clamp_jvp(
    lo: float, hi: float, r: float, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    # 4 s (1 - s) with s = sigmoid(-2|e|/r) on its small side: exactly 1 on the linear middle,
    # and > 0 far into the tails (autodiff of the forward would round it to 0 much sooner).
    (x,), (t,) = primals, tangents
    xc = _upcast(x)
    s = jax.nn.sigmoid(jnp.abs(xc - jnp.clip(xc, lo + r, hi - r)) * (-2.0 / r))
    return _smooth_clamp(x, lo, hi, r), (_upcast(t) * (4.0 * s * (1.0 - s))).astype(t.dtype)


@implements("smooth_clamp", "jax")
def smooth_clamp(x: jax.Array, *, lo: float, hi: float, linear_fraction: float) -> jax.Array:
    return _smooth_clamp(x, lo, hi, (1.0 - linear_fraction) * (hi - lo) / 2.0)


def _limit_shift(xc: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """x - max along axis, with rows holding an infinity replaced by their limit (the +inf
    entries at 0, the rest at -inf; an all -inf row at 0), and the row maxima."""
    top = jax.lax.stop_gradient(jnp.max(xc, axis=axis, keepdims=True))
    z = xc - jnp.where(jnp.isfinite(top), top, 0.0)
    z = jnp.where(top == math.inf, jnp.where(xc == math.inf, 0.0, -math.inf), z)
    return jnp.where(top == -math.inf, 0.0, z), top


@implements("softmax", "jax")
def softmax(x: jax.Array, *, axis: int) -> jax.Array:
    if x.shape[axis] == 0:
        return jnp.array(x, copy=True)
    xc = _upcast(x)
    # Rows holding an infinity take their limit instead of NaN: +inf entries share the mass,
    # an all -inf row is uniform. NaN rows stay NaN (max propagates NaN).
    z, _ = _limit_shift(xc, axis)
    e = jnp.exp(z)
    # e / sum(e) with sum(e) >= e (rounded sums of non-negatives only grow): never above 1.
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)


def _prescale(x: jax.Array, dims: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """``x`` divided by a power of two per group, and that power (the group's scale).

    Groups whose largest magnitude exceeds 1 are divided by a power of two (exact) that brings it
    below 4 (one binade below the estimate, since log2 of the largest float32 rounds up to 128),
    so squares cannot overflow at the largest finite inputs. A group holding an infinity takes
    its limit: its infinite entries become +-1, the rest 0.
    """
    amax = jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=dims, keepdims=True))
    big = jnp.isfinite(amax) & (amax > 1.0)
    power = jnp.where(big, jnp.floor(jnp.log2(jnp.where(big, amax, 1.0))) - 1.0, 0.0).astype(jnp.int32)
    # Powers of two made by ldexp once per group, not exp2 (XLA:CPU's is inexact near 2^127), and
    # applied as two normal factors: XLA turns x / s into x * (1 / s) and flushes a subnormal
    # 1 / s to zero (a whole row of zeros out). ldexp on every element costs 3x the whole layer.
    one = jnp.ones_like(amax)
    half = power // 2
    scaled = x * jnp.ldexp(one, -half) * jnp.ldexp(one, half - power)
    scale = jnp.ldexp(one, power)
    return jnp.where(jnp.isinf(amax), jnp.where(jnp.isinf(x), jnp.sign(x), 0.0), scaled), scale


def _standardize(x: jax.Array, dims: tuple[int, ...], eps: float) -> tuple[jax.Array, ...]:
    """(x - mean) / sqrt(var + eps) over ``dims``, with mean and biased variance (two-pass), on
    prescaled groups (see :func:`_prescale`); the eps term is scaled to match, which leaves the
    result unchanged."""
    scaled, scale = _prescale(x, dims)
    mean = scaled.mean(axis=dims, keepdims=True)
    centred = scaled - mean
    var = (centred * centred).mean(axis=dims, keepdims=True)
    # eps / scale^2 underflows for huge constant groups; the smallest normal keeps 0 / 0 away.
    xhat = centred / jnp.sqrt(var + jnp.maximum(eps / (scale * scale), jnp.finfo(x.dtype).tiny))
    return xhat, mean * scale, var * scale * scale


def layer_norm(x: jax.Array, weight: jax.Array | None, bias: jax.Array | None, *, eps: float) -> jax.Array:
    xc = _upcast(x)
    xhat, _, _ = _standardize(xc, (-1,), eps)
    if weight is None:
        # Declared bound sqrt(n - 1); eps keeps the exact value inside, this guards rounding.
        bound = math.sqrt(x.shape[-1] - 1)
        y = _clamp_straight_through(xhat, -bound, bound)
    else:
        y = xhat * _upcast(weight) + _upcast(bias)
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
    xc = _upcast(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        dims = (0, *range(2, x.ndim))
        count = x.size // x.shape[1]
        xhat, mean, var = _standardize(xc, dims, eps)
        mean = jax.lax.stop_gradient(mean).reshape(-1)
        var = jax.lax.stop_gradient(var).reshape(-1)
        # PyTorch's meaning: momentum weights the new batch; the running variance is unbiased.
        new_mean = (1.0 - momentum) * _upcast(running_mean) + momentum * mean
        new_var = (1.0 - momentum) * _upcast(running_var) + momentum * (var * (count / (count - 1)))
        new_mean, new_var = new_mean.astype(running_mean.dtype), new_var.astype(running_var.dtype)
    else:
        xhat = (xc - _upcast(running_mean).reshape(shape)) / jnp.sqrt(_upcast(running_var).reshape(shape) + eps)
        new_mean, new_var = running_mean, running_var
    y = xhat * _upcast(weight).reshape(shape) + _upcast(bias).reshape(shape)
    return y.astype(x.dtype), new_mean, new_var
