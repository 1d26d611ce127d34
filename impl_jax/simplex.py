"""JAX simplex maps (declared in ``harness/simplex.py``; mirrors ``impl_torch/simplex.py``).

Rows holding an infinity take their limit instead of NaN; NaN rows stay NaN.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

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


def _guarded(xc: jax.Array, axis: int, plain: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """``plain(x - max)``, the fused formula, where every row's maximum is finite; where one is
    not (a row holding an infinity or a NaN), the same on the rows' limits (``lax.cond``: only
    that rare call pays for the three selects; under vmap both branches run). The row maxima
    serve both the guard and the shift."""
    top = jax.lax.stop_gradient(jnp.max(xc, axis=axis, keepdims=True))

    def fast(_: None) -> jax.Array:
        return plain(xc - top)

    def limits(_: None) -> jax.Array:
        return plain(_limit_shift(xc, axis)[0])

    return jax.lax.cond(jnp.all(jnp.isfinite(top)), fast, limits, None)


def _softmax_plain(z: jax.Array, axis: int) -> jax.Array:
    e = jnp.exp(z)
    # e / sum(e) with sum(e) >= e (rounded sums of non-negatives only grow): never above 1.
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax_plain(z: jax.Array, axis: int) -> jax.Array:
    # z <= 0 and log(sum(exp(z))) >= 0 (the row's maximum contributes exp(0) = 1): never above 0.
    return z - jnp.log(jnp.exp(z).sum(axis=axis, keepdims=True))


def _limits_formula(xc: jax.Array, axis: int, plain: Callable[..., jax.Array]) -> jax.Array:
    return plain(_limit_shift(xc, axis)[0], axis)


# Outside derivatives, the guarded form (a forward at about jax.nn.softmax's cost); for every
# derivative, JAX's own derivative of the branch-free form (the selects pass zero on rows that
# held an infinity, as declared). Deriving the guarded form instead keeps the cond's output
# apart from the passes of the derivative, and a written-out rule whose softmax is recomputed
# must select its NaN away on both sides of the map: each cost more forward+backward than this
# (measured at 2^22: 1.3-1.6x jax.nn.softmax, against about 1.45).
def _guarded_map(plain: Callable[..., jax.Array]) -> Callable[[jax.Array, int], jax.Array]:
    """``plain`` (softmax's or log_softmax's formula on shifted rows) guarded as above, with the
    derivative of its branch-free limits form."""

    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def guarded(xc: jax.Array, axis: int) -> jax.Array:
        return _guarded(xc, axis, functools.partial(plain, axis=axis))

    @guarded.defjvp
    def _(axis: int, primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
        return jax.jvp(functools.partial(_limits_formula, axis=axis, plain=plain), primals, tangents)

    return guarded


_softmax = _guarded_map(_softmax_plain)
_log_softmax = _guarded_map(_log_softmax_plain)


@implements("softmax", "jax")
def softmax(x: jax.Array, *, axis: int) -> jax.Array:
    if x.shape[axis] == 0:
        return jnp.array(x, copy=True)
    # Rows holding an infinity take their limit instead of NaN: +inf entries share the mass,
    # an all -inf row is uniform. NaN rows stay NaN (max propagates NaN).
    return _softmax(upcast(x), axis % x.ndim).astype(x.dtype)


@implements("log_softmax", "jax")
def log_softmax(x: jax.Array, *, axis: int) -> jax.Array:
    if x.shape[axis] == 0:
        return jnp.array(x, copy=True)
    return _log_softmax(upcast(x), axis % x.ndim).astype(x.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _sparsemax(z: jax.Array, axis: int, finite_rows: jax.Array) -> jax.Array:
    """Projection onto the simplex; derivative t - mean_S(t) on the support S, zero on rows that
    held an infinity."""
    return jnp.maximum(z - _threshold(z, axis), 0.0)


def _threshold(z: jax.Array, axis: int) -> jax.Array:
    """tau with sum(max(z - tau, 0)) = 1 per row (rows shifted: maximum 0, or NaN), in linear
    time: Michelot's iteration, Newton's method on that convex, decreasing, piecewise-linear
    sum, t' = (sum of the z > t, less 1) / their count, from the lower bound max(-1, (sum z - 1)
    / n). Below tau each step rises and stays at or below tau; at tau the set {z > t} is the
    support and t' the sort-based rule's (sum of the support - 1) / its size. Each step leaves out
    at least one value, so it ends; rows spread over more than about 0.1 take a few steps, and
    ``lax.while_loop`` runs until no row moves (under vmap, until none of the batch does). The
    same iteration as PyTorch's C kernel (sparsemax.c). A NaN row stays NaN."""
    n = z.shape[axis]
    start = jnp.maximum((z.sum(axis=axis, keepdims=True) - 1.0) / n, -1.0)

    def step(t: jax.Array) -> jax.Array:
        above = z > t
        count = jnp.maximum(above.sum(axis=axis, keepdims=True), 1).astype(z.dtype)
        return (jnp.where(above, z, 0.0).sum(axis=axis, keepdims=True) - 1.0) / count

    def moving(state: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        t, following, steps = state
        return jnp.any(following > t) & (steps <= n)

    def advance(state: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, ...]:
        t, following, steps = state
        # A row that stopped rising keeps its state: rounded sums could otherwise let it step
        # back and forth over a value at tau, and two such rows out of phase would never stop.
        rising = following > t
        return jnp.where(rising, following, t), jnp.where(rising, step(following), following), steps + 1

    # The state holds the last t and the step from it; the answer is that step once it stops
    # rising (at tau it equals t to rounding, computed from the exact support). At most n + 1
    # steps, as the C kernel.
    tau = jax.lax.while_loop(moving, advance, (start, step(start), jnp.int32(0)))[1]
    # A NaN row's sum is NaN, and so its tau: XLA's CPU max, vectorized, can drop a NaN (rows of
    # 1024 here), so the caller's NaN-row mask from the row maximum may miss it.
    return jnp.where(jnp.isnan(start), start, tau)


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
