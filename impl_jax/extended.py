"""JAX implementations of the extended catalogue (harness/catalog_extended.py); mirrors
``impl_torch/extended.py``. Kink gradients are explicit, as in ``functional.py``."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from harness import implements
from harness.numerics import affine_needs_guard, soft_clip_shrink
from impl_jax.functional import _clamp_inside, _clamp_straight_through, _limit_shift, _prescale, _upcast


@implements("hardtanh", "jax")
def hardtanh(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    return _clamp_inside(x, lo, hi)


@implements("relu6", "jax")
def relu6(x: jax.Array) -> jax.Array:
    return _clamp_inside(x, 0.0, 6.0)


@jax.custom_jvp
def _hardsigmoid(x: jax.Array) -> jax.Array:
    """relu6(x + 3) / 6 with gradient 1/6 strictly inside (-3, 3), 0 elsewhere (bounds included)."""
    return (jnp.clip(_upcast(x) + 3.0, 0.0, 6.0) / 6.0).astype(x.dtype)


@_hardsigmoid.defjvp
def _hardsigmoid_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    return _hardsigmoid(x), jnp.where((x <= -3.0) | (x >= 3.0), jnp.zeros_like(t), t / 6.0)


@implements("hardsigmoid", "jax")
def hardsigmoid(x: jax.Array) -> jax.Array:
    return _hardsigmoid(x)


@jax.custom_jvp
def _softsign(x: jax.Array) -> jax.Array:
    xc = _upcast(x)
    # +-inf -> +-largest finite, whose softsign rounds to +-1 (the limit) instead of inf / inf.
    big = float(jnp.finfo(xc.dtype).max)
    xf = jnp.clip(xc, -big, big)
    return (xf / (1.0 + jnp.abs(xf))).astype(x.dtype)


@_softsign.defjvp
def _softsign_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    # The declared derivative 1 / (1 + |x|)^2, divided twice as on PyTorch's side. Autodiff of
    # the quotient instead subtracts two nearly equal terms: 29% off at 1e7, wrong-signed at 1e9.
    (x,), (t,) = primals, tangents
    u = 1.0 + jnp.abs(_upcast(x))
    return _softsign(x), (_upcast(t) / u / u).astype(t.dtype)


@implements("softsign", "jax")
def softsign(x: jax.Array) -> jax.Array:
    return _softsign(x)


def _scaled_sigmoid(x: jax.Array, lo: float, hi: float, slope: float) -> jax.Array:
    xc = _upcast(x)
    y = jax.nn.sigmoid(xc * slope if slope != 1.0 else xc) * (hi - lo) + lo
    # lo + (hi - lo) * s stays <= hi by monotone rounding whenever lo + (hi - lo) rounds to <= hi.
    if affine_needs_guard(lo, hi, xc.dtype.name):
        y = _clamp_straight_through(y, lo, hi)
    return y.astype(x.dtype)


@implements("scaled_sigmoid", "jax")
def scaled_sigmoid(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    return _scaled_sigmoid(x, lo, hi, 1.0)


@implements("scaled_tanh", "jax")
def scaled_tanh(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    # (tanh(x) + 1) / 2 == sigmoid(2x): the same operations as PyTorch's side.
    return _scaled_sigmoid(x, lo, hi, 2.0)


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
    xc = _upcast(x)
    y = hi - _softplus_c(w - _softplus_c(xc - lo, c), c) * shrink
    # hi - positive <= hi; the shrink factor can round the lower end an ulp below lo.
    return _clamp_straight_through(y, lo, hi).astype(x.dtype)


@implements("ste_clamp", "jax")
def ste_clamp(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    return _clamp_straight_through(x, lo, hi)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _leaky_clamp(x: jax.Array, lo: float, hi: float, slope: float) -> jax.Array:
    """m + slope (x - m), m = clip(x, lo, hi); gradient 1 strictly inside, slope elsewhere."""
    # In float32 for float16/bfloat16: x - m can overflow those although the output cannot.
    xc = _upcast(x)
    m = jnp.clip(xc, lo, hi)
    return ((xc - m) * slope + m).astype(x.dtype)


@_leaky_clamp.defjvp
def _leaky_clamp_jvp(
    lo: float, hi: float, slope: float, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    # As PyTorch's side: t inside (NaN included), slope * t where x <= lo or x >= hi.
    xc = _upcast(x)  # compared in float32 for low precision, as in _clamp_inside
    inside = jnp.where((xc <= lo) | (xc >= hi), jnp.zeros_like(t), t)
    return _leaky_clamp(x, lo, hi, slope), inside * (1.0 - slope) + t * slope


@implements("leaky_clamp", "jax")
def leaky_clamp(x: jax.Array, *, lo: float, hi: float, slope: float) -> jax.Array:
    return _leaky_clamp(x, lo, hi, slope)


@implements("log_softmax", "jax")
def log_softmax(x: jax.Array, *, axis: int) -> jax.Array:
    if x.shape[axis] == 0:
        return jnp.array(x, copy=True)
    z, _ = _limit_shift(_upcast(x), axis)
    # z <= 0 and log(sum(exp(z))) >= 0 (the row's maximum contributes exp(0) = 1): never above 0.
    return (z - jnp.log(jnp.exp(z).sum(axis=axis, keepdims=True))).astype(x.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _sparsemax(z: jax.Array, axis: int, finite_rows: jax.Array) -> jax.Array:
    """Projection onto the simplex; derivative t - mean_S(t) on the support S, zero on rows that
    held an infinity."""
    zs = -jnp.sort(-z, axis=axis)
    cs = jnp.cumsum(zs, axis=axis)
    shape = [1] * z.ndim
    shape[axis] = -1
    k = jnp.arange(1, z.shape[axis] + 1, dtype=z.dtype).reshape(shape)
    # At least 1: a NaN row counts no support (its output is set to NaN afterwards).
    support = jnp.maximum((1.0 + k * zs > cs).sum(axis=axis, keepdims=True), 1)
    tau = (jnp.take_along_axis(cs, support - 1, axis=axis) - 1.0) / support.astype(z.dtype)
    return jnp.maximum(z - tau, 0.0)


@_sparsemax.defjvp
def _sparsemax_jvp(axis: int, primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, jax.Array]) -> tuple:
    (z, finite_rows), (t, _) = primals, tangents
    y = _sparsemax(z, axis, finite_rows)
    on = (y > 0).astype(t.dtype) * finite_rows.astype(t.dtype)
    mean = (t * on).sum(axis=axis, keepdims=True) / jnp.maximum(on.sum(axis=axis, keepdims=True), 1.0)
    return y, (t - mean) * on


@implements("sparsemax", "jax")
def sparsemax(x: jax.Array, *, axis: int) -> jax.Array:
    if x.shape[axis] == 0:
        return jnp.array(x, copy=True)
    xc = _upcast(x)
    z, top = _limit_shift(xc, axis)
    y = _sparsemax(z, axis % x.ndim, jnp.isfinite(top))
    # The largest output is max(z) - tau <= 1 in exact arithmetic; this guards the rounding.
    y = _clamp_straight_through(y, 0.0, 1.0)
    # NaN rows stay NaN: sorting and counting would otherwise hide the NaN.
    return jnp.where(jnp.isnan(top), top, y).astype(x.dtype)


def rms_norm(x: jax.Array, weight: jax.Array | None, *, eps: float | None) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) * weight, with the power-of-two prescaling of _standardize."""
    xc = _upcast(x)
    if eps is None:
        # PyTorch's meaning: the machine epsilon of the dtype it computes in (float32 for float16
        # and bfloat16 inputs, as torch.nn.RMSNorm does), not of the input's.
        eps = float(jnp.finfo(xc.dtype).eps)
    scaled, scale = _prescale(xc, (-1,))
    ms = (scaled * scaled).mean(axis=-1, keepdims=True)
    y = scaled / jnp.sqrt(ms + jnp.maximum(eps / (scale * scale), jnp.finfo(xc.dtype).tiny))
    if weight is None:
        bound = math.sqrt(x.shape[-1])
        y = _clamp_straight_through(y, -bound, bound)
    else:
        y = y * _upcast(weight)
    return y.astype(x.dtype)
