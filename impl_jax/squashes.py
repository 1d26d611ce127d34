"""JAX squashes and their inverses (declared in ``harness/squashes.py``; mirrors
``impl_torch/squashes.py``). Inverses map the open range (lo, hi) onto the reals, lo and hi to
-inf and inf, values outside to NaN."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from harness import implements, implements_inverse
from harness.numerics import affine_needs_guard
from harness.squashes import SmoothClampParts, smooth_clamp_needs_guard, smooth_clamp_parts, soft_clip_shrink
from impl_jax._common import clamp_straight_through, exp_scaled, nan_factor, upcast


@implements("sigmoid", "jax")
def sigmoid(x: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(x)


@implements("tanh", "jax")
def tanh(x: jax.Array) -> jax.Array:
    return jnp.tanh(x)


def _scaled_sigmoid(x: jax.Array, lo: float, hi: float, slope: float) -> jax.Array:
    xc = upcast(x)
    y = jax.nn.sigmoid(xc * slope if slope != 1.0 else xc) * (hi - lo) + lo
    # lo + (hi - lo) * s stays <= hi by monotone rounding whenever lo + (hi - lo) rounds to <= hi.
    if affine_needs_guard(lo, hi, xc.dtype.name):
        y = clamp_straight_through(y, lo, hi)
    return y.astype(x.dtype)


@implements("scaled_sigmoid", "jax")
def scaled_sigmoid(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    return _scaled_sigmoid(x, lo, hi, 1.0)


@implements("scaled_tanh", "jax")
def scaled_tanh(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    # (tanh(x) + 1) / 2 == sigmoid(2x): the same operations as PyTorch's side.
    return _scaled_sigmoid(x, lo, hi, 2.0)


@jax.custom_jvp
def _softsign(x: jax.Array) -> jax.Array:
    xc = upcast(x)
    # +-inf -> +-largest finite, whose softsign rounds to +-1 (the limit) instead of inf / inf.
    big = float(jnp.finfo(xc.dtype).max)
    xf = jnp.clip(xc, -big, big)
    return (xf / (1.0 + jnp.abs(xf))).astype(x.dtype)


@_softsign.defjvp
def _softsign_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    # The declared derivative 1 / (1 + |x|)^2, divided twice as on PyTorch's side. Autodiff of
    # the quotient instead subtracts two nearly equal terms: 29% off at 1e7, wrong-signed at 1e9.
    (x,), (t,) = primals, tangents
    u = 1.0 + jnp.abs(upcast(x))
    return _softsign(x), (upcast(t) / u / u).astype(t.dtype)


@implements("softsign", "jax")
def softsign(x: jax.Array) -> jax.Array:
    return _softsign(x)


@jax.custom_jvp
def _softplus(v: jax.Array) -> jax.Array:
    """max(v, 0) + log1p(exp(-|v|)) with derivative sigmoid(v) by declaration (also at v == 0)."""
    return jnp.maximum(v, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(v)))


@_softplus.defjvp
def _softplus_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    (v,), (t,) = primals, tangents
    return _softplus(v), t * jax.nn.sigmoid(v)


def _softplus_c(v: jax.Array, c: float) -> jax.Array:
    return _softplus(v / c) * c


@implements("soft_clip", "jax")
def soft_clip(x: jax.Array, *, lo: float, hi: float, hinge_softness: float) -> jax.Array:
    c, w = hinge_softness, hi - lo
    shrink = soft_clip_shrink(lo, hi, c)
    xc = upcast(x)
    y = hi - _softplus_c(w - _softplus_c(xc - lo, c), c) * shrink
    # hi - positive <= hi; the shrink factor can round the lower end an ulp below lo.
    return clamp_straight_through(y, lo, hi).astype(x.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _smooth_clamp(x: jax.Array, lo: float, hi: float, parts: SmoothClampParts) -> jax.Array:
    """m + (2r / (1 + E) - r) with m = clip(x, lo + r, hi - r), E = exp(-2e / r), e = x - m:
    m + 2r (sigmoid(2e/r) - 1/2), the declaration's two tails in one form.

    Not m + r tanh(e/r), the same function: XLA's tanh on CPU is not monotone at ulp level (a
    dense float32 sweep found it decreasing 27238 times in [-8, 8], and the tails built on it 8132
    times). Here each step is monotone: E in e (``exp2_clipped`` is, over every float32 argument
    it takes: tests/test_jax_exp.py), then 1 + E, the division and the two sums. Exactly x in the
    middle (E is 1 there, so the term is r - r; -0.0 comes out +0.0, as before and in the C
    kernel); inside [lo, hi] by monotone rounding (the term lies in [-r, r]: 1 + E >= 1), with a
    final clip only where rounding needs it. E = inf (float64, far below) gives the term -r, not
    NaN.
    """
    r, b_lo, b_hi = parts
    xc = upcast(x)
    middle = jnp.clip(xc, b_lo, b_hi)
    # float32 takes this project's exp: with XLA's exp or logistic this forward cost 1.33 of one
    # jax.nn.sigmoid at 2^22, with it 0.99 (Zen 3, one process).
    y = middle + ((2.0 * r) / (1.0 + exp_scaled(xc - middle, -parts.steepness)) - r)
    if smooth_clamp_needs_guard(lo, hi, parts, xc.dtype.name):
        y = jnp.clip(y, lo, hi)
    return y.astype(x.dtype)


@_smooth_clamp.defjvp
def _smooth_clamp_jvp(
    lo: float, hi: float, parts: SmoothClampParts, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    # 4 s (1 - s) with s = sigmoid(-2|e|/r) on its small side: exactly 1 on the linear middle,
    # and > 0 far into the tails (autodiff of the forward would round it to 0 much sooner).
    (x,), (t,) = primals, tangents
    _, b_lo, b_hi = parts
    xc = upcast(x)
    s = jax.nn.sigmoid(jnp.abs(xc - jnp.clip(xc, b_lo, b_hi)) * -parts.steepness)
    return _smooth_clamp(x, lo, hi, parts), (upcast(t) * (4.0 * s * (1.0 - s))).astype(t.dtype)


@implements("smooth_clamp", "jax")
def smooth_clamp(x: jax.Array, *, lo: float, hi: float, linear_fraction: float) -> jax.Array:
    return _smooth_clamp(x, lo, hi, smooth_clamp_parts(lo, hi, linear_fraction))


# --- inverses ------------------------------------------------------------------------------


def _logit(u: jax.Array) -> jax.Array:
    # log(u) - log1p(-u): -inf at 0, inf at 1, NaN outside [0, 1].
    return jnp.log(u) - jnp.log1p(-u)


@implements_inverse("sigmoid", "jax")
def sigmoid_inverse(y: jax.Array) -> jax.Array:
    return _logit(y)


@implements_inverse("tanh", "jax")
def tanh_inverse(y: jax.Array) -> jax.Array:
    return jnp.arctanh(y)


@implements_inverse("softsign", "jax")
def softsign_inverse(y: jax.Array) -> jax.Array:
    return y / (1.0 - jnp.abs(y)) * nan_factor(jnp.abs(y) > 1.0, y.dtype)


@implements_inverse("scaled_sigmoid", "jax")
def scaled_sigmoid_inverse(y: jax.Array, *, lo: float, hi: float) -> jax.Array:
    return _logit((y - lo) / (hi - lo))


@implements_inverse("scaled_tanh", "jax")
def scaled_tanh_inverse(y: jax.Array, *, lo: float, hi: float) -> jax.Array:
    return _logit((y - lo) / (hi - lo)) / 2.0


@implements_inverse("smooth_clamp", "jax")
def smooth_clamp_inverse(y: jax.Array, *, lo: float, hi: float, linear_fraction: float) -> jax.Array:
    r, b_lo, b_hi = smooth_clamp_parts(lo, hi, linear_fraction)
    upper = b_hi - (r / 2.0) * _logit((hi - y) / (2.0 * r))
    lower = b_lo + (r / 2.0) * _logit((y - lo) / (2.0 * r))
    return jnp.where(y > b_hi, upper, jnp.where(y < b_lo, lower, y))


def _softplus_inverse(u: jax.Array, c: float) -> jax.Array:
    # c log(exp(u / c) - 1) written as u + c log(-expm1(-u / c)): -inf at 0, NaN below 0.
    return u + c * jnp.log(-jnp.expm1(-u / c))


@implements_inverse("soft_clip", "jax")
def soft_clip_inverse(y: jax.Array, *, lo: float, hi: float, hinge_softness: float) -> jax.Array:
    c, w = hinge_softness, hi - lo
    shrink = soft_clip_shrink(lo, hi, c)
    x = lo + _softplus_inverse(w - _softplus_inverse((hi - y) / shrink, c), c)
    # The bounds exactly, whatever the rounding of the shrink factor does near lo.
    return jnp.where(y == lo, -jnp.inf, jnp.where(y == hi, jnp.inf, x))
