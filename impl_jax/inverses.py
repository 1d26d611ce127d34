"""JAX inverses of the invertible techniques (mirrors ``impl_torch/inverses.py``): the open
range (lo, hi) maps onto the reals, lo and hi to -inf and inf, values outside to NaN."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from harness import implements_inverse
from harness.numerics import soft_clip_shrink


def _logit(u: jax.Array) -> jax.Array:
    # log(u) - log1p(-u): -inf at 0, inf at 1, NaN outside [0, 1].
    return jnp.log(u) - jnp.log1p(-u)


@implements_inverse("sigmoid", "jax")
def sigmoid(y: jax.Array) -> jax.Array:
    return _logit(y)


@implements_inverse("tanh", "jax")
def tanh(y: jax.Array) -> jax.Array:
    return jnp.arctanh(y)


@implements_inverse("softsign", "jax")
def softsign(y: jax.Array) -> jax.Array:
    return jnp.where(jnp.abs(y) > 1.0, jnp.nan, y / (1.0 - jnp.abs(y)))


@implements_inverse("scaled_sigmoid", "jax")
def scaled_sigmoid(y: jax.Array, *, lo: float, hi: float) -> jax.Array:
    return _logit((y - lo) / (hi - lo))


@implements_inverse("scaled_tanh", "jax")
def scaled_tanh(y: jax.Array, *, lo: float, hi: float) -> jax.Array:
    return _logit((y - lo) / (hi - lo)) / 2.0


@implements_inverse("smooth_clamp", "jax")
def smooth_clamp(y: jax.Array, *, lo: float, hi: float, linear_fraction: float) -> jax.Array:
    r = (1.0 - linear_fraction) * (hi - lo) / 2.0
    upper = (hi - r) - (r / 2.0) * _logit((hi - y) / (2.0 * r))
    lower = (lo + r) + (r / 2.0) * _logit((y - lo) / (2.0 * r))
    return jnp.where(y > hi - r, upper, jnp.where(y < lo + r, lower, y))


def _softplus_inverse(u: jax.Array, c: float) -> jax.Array:
    # c log(exp(u / c) - 1) written as u + c log(-expm1(-u / c)): -inf at 0, NaN below 0.
    return u + c * jnp.log(-jnp.expm1(-u / c))


@implements_inverse("soft_clip", "jax")
def soft_clip(y: jax.Array, *, lo: float, hi: float, hinge_softness: float) -> jax.Array:
    c, w = hinge_softness, hi - lo
    shrink = soft_clip_shrink(lo, hi, c)
    x = lo + _softplus_inverse(w - _softplus_inverse((hi - y) / shrink, c), c)
    # The bounds exactly, whatever the rounding of the shrink factor does near lo.
    return jnp.where(y == lo, -jnp.inf, jnp.where(y == hi, jnp.inf, x))
