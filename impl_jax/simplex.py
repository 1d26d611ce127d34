"""JAX simplex maps (declared in ``harness/simplex.py``; mirrors ``impl_torch/simplex.py``).

Rows holding an infinity take their limit instead of NaN; NaN rows stay NaN.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from harness import implements
from impl_jax._common import clamp_straight_through, upcast


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
    xc = upcast(x)
    # Rows holding an infinity take their limit instead of NaN: +inf entries share the mass,
    # an all -inf row is uniform. NaN rows stay NaN (max propagates NaN).
    z, _ = _limit_shift(xc, axis)
    e = jnp.exp(z)
    # e / sum(e) with sum(e) >= e (rounded sums of non-negatives only grow): never above 1.
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)


@implements("log_softmax", "jax")
def log_softmax(x: jax.Array, *, axis: int) -> jax.Array:
    if x.shape[axis] == 0:
        return jnp.array(x, copy=True)
    z, _ = _limit_shift(upcast(x), axis)
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
    xc = upcast(x)
    z, top = _limit_shift(xc, axis)
    y = _sparsemax(z, axis % x.ndim, jnp.isfinite(top))
    # The largest output is max(z) - tau <= 1 in exact arithmetic; this guards the rounding.
    y = clamp_straight_through(y, 0.0, 1.0)
    # NaN rows stay NaN: sorting and counting would otherwise hide the NaN.
    return jnp.where(jnp.isnan(top), top, y).astype(x.dtype)
