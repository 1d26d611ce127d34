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
from impl_jax._common import clamp_straight_through, cpu_or_accelerator, everywhere, nan_factor, upcast


def _limit_shift(xc: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """x - max along axis, with rows holding an infinity replaced by their limit (the +inf
    entries at 0, the rest at -inf; an all -inf row at 0), and the row maxima (NaN for a row
    holding a NaN)."""
    top = jax.lax.stop_gradient(jnp.max(xc, axis=axis, keepdims=True))
    # XLA:CPU's max can drop a NaN, or give -inf for a long row holding one, which would pass
    # for an all -inf row (harness/divergences.py): NaN rows are told by a reduction of their own.
    top = top * nan_factor(jnp.any(jnp.isnan(xc), axis=axis, keepdims=True), top.dtype)
    z = xc - jnp.where(jnp.isfinite(top), top, 0.0)
    z = jnp.where(top == math.inf, jnp.where(xc == math.inf, 0.0, -math.inf), z)
    return jnp.where(top == -math.inf, 0.0, z), top


def _softmax_plain(z: jax.Array, axis: int) -> jax.Array:
    e = jnp.exp(z)
    # e / sum(e) with sum(e) >= e (rounded sums of non-negatives only grow): never above 1.
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax_plain(z: jax.Array, axis: int) -> jax.Array:
    # z <= 0 and log(sum(exp(z))) >= 0 (the row's maximum contributes exp(0) = 1): never above 0.
    return z - jnp.log(jnp.exp(z).sum(axis=axis, keepdims=True))


def _softmax_tangent(z: jax.Array, t: jax.Array, axis: int) -> jax.Array:
    y = _softmax_plain(z, axis)
    return y * (t - (y * t).sum(axis=axis, keepdims=True))


def _log_softmax_tangent(z: jax.Array, t: jax.Array, axis: int) -> jax.Array:
    # sum(e t) / sum(e), not sum(softmax t): transposed, the cotangent's sum then meets the
    # exponentials through one row-level factor (one product per entry, as jax.nn's).
    e = jnp.exp(z)
    return t - (e * t).sum(axis=axis, keepdims=True) / e.sum(axis=axis, keepdims=True)


def _guarded_map(
    plain: Callable[[jax.Array, int], jax.Array], tangent: Callable[[jax.Array, jax.Array, int], jax.Array]
) -> Callable[[jax.Array, int], jax.Array]:
    """``plain`` (softmax's or log_softmax's formula on rows shifted by their maximum) with the
    declared limits: a row holding +inf shares its mass among the +inf entries, an all -inf row is
    uniform, a NaN row stays NaN; the derivative ``tangent`` on the same shifted rows, zero on
    rows that held an infinity (their limit is constant).

    Written so that XLA fuses each side into one pass, as it does jax.nn's own op; a select on
    full-size values splits that pass in several (the branch-free limits form cost 1.3 of
    jax.nn.softmax forward and 1.5-1.6 forward+backward at 2^22, measured):
    - value: the plain formula, then its first entry per row. A row whose maximum is not finite
      (+inf, an all -inf row, NaN) is NaN throughout (inf - inf in the shift) and a finite row
      never is, so one entry per row tells; ``lax.cond`` recomputes on the limits only then.
    - derivative: a ``lax.cond`` of its own on whether every row's maximum is finite, between
      two linear branches of x's tangent (transposed, a cond of their transposes;
      ``jax.checkpoint`` keeps their exponentials out of the residuals): jax.nn's arithmetic on
      the shifted rows, which XLA fuses with the cotangent's reductions into one pass, and
      otherwise ``tangent`` on the rows' limits (_limit_shift) with a select that zeroes the rows
      that held an infinity, exact for an infinite or NaN cotangent too (PyTorch's is). The
      maximum is a pass of its own before the cond; the branch-free form it replaced (row-level
      min, max and a product by the rows' finiteness, fused into one pass) cost more:
      log_softmax forward+backward 1.29-1.40 of jax.nn's at 2^22 against 1.19-1.31, and
      1.39-1.43 at 2^16 against 1.12-1.17 (measured in alternating processes). The predicate is
      kept unbatched under vmap (:func:`impl_jax._common.everywhere`).

    Off the CPU both sides take their second form alone, on the rows' limits, branch-free (see
    :func:`impl_jax._common.cpu_or_accelerator`: a GPU reads a cond's predicate on the host).
    """

    def value(xc: jax.Array, axis: int) -> jax.Array:
        def limits() -> jax.Array:
            return plain(_limit_shift(xc, axis)[0], axis)

        def branching() -> jax.Array:
            y = plain(xc - jax.lax.stop_gradient(jnp.max(xc, axis=axis, keepdims=True)), axis)
            unfinished = jnp.any(jnp.isnan(jax.lax.index_in_dim(y, 0, axis)))
            return jax.lax.cond(unfinished, lambda y: limits(), lambda y: y, y)

        return cpu_or_accelerator(branching, limits)

    guarded = jax.custom_jvp(value, nondiff_argnums=(1,))

    @guarded.defjvp
    def _(axis: int, primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
        (xc,), (t,) = primals, tangents

        def finite_rows(operands: tuple[jax.Array, ...]) -> jax.Array:
            xc, top, t = operands
            return tangent(xc - top, t, axis)

        def any_rows(operands: tuple[jax.Array, ...]) -> jax.Array:
            # _limit_shift tells NaN rows by a reduction of their own (XLA:CPU's max can give
            # -inf for one): they stay NaN, where a row that held an infinity passes zero.
            z, top = _limit_shift(operands[0], axis)  # its own maxima, NaN for a NaN row
            return jnp.where(jnp.isinf(top), 0.0, tangent(z, operands[-1], axis))

        # The tangent goes into each form as an operand, as it went into the cond.
        def branching(xc: jax.Array, t: jax.Array) -> jax.Array:
            top = jax.lax.stop_gradient(jnp.max(xc, axis=axis, keepdims=True))
            finite = everywhere(jnp.all(jnp.isfinite(top)))
            return jax.lax.cond(finite, jax.checkpoint(finite_rows), jax.checkpoint(any_rows), (xc, top, t))

        def branch_free(xc: jax.Array, t: jax.Array) -> jax.Array:
            return jax.checkpoint(any_rows)((xc, t))

        dy = cpu_or_accelerator(branching, branch_free, xc, t)
        return value(xc, axis), dy

    return guarded


_softmax = _guarded_map(_softmax_plain, _softmax_tangent)
_log_softmax = _guarded_map(_log_softmax_plain, _log_softmax_tangent)


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


# Rows per block of the threshold's iteration: 2^18 values, 1 MiB in float32, so that its steps
# run over a block in the cache instead of the whole batch in memory (at 2^22 values in rows of
# 1024: 11 ms against 41 for the whole batch at once, measured; jax.nn.softmax took 3).
_BLOCK_VALUES = 2**18


# Michelot steps taken before an accelerator's loop asks whether any row still moves: rows of
# 1024 spread as N(0, s^2) stop after 2 (s = 100) to 8 (s = 0.1) steps from the lower bound (as
# PyTorch's compiled threshold, impl_torch/simplex.py).
_UNROLLED_STEPS = 8


def _threshold(z: jax.Array, axis: int) -> jax.Array:
    """tau per row along ``axis`` (see _row_threshold). On the CPU block by block of rows
    (``lax.map`` with a batch size: each block iterates in the cache until its own rows stop).
    Elsewhere every row at once, the first _UNROLLED_STEPS steps unrolled: a loop's predicate is
    read on the host at every step of every block, which cost 130 to 150 softmaxes on an H200
    (bench/results/cuda-h200-2026-12-04); now the loop usually asks once. Chosen when the
    program is lowered for its platform (``lax.platform_dependent``), not by a Python branch."""
    n = z.shape[axis]
    rows = jnp.moveaxis(z, axis, -1)
    shape = rows.shape[:-1]
    rows = rows.reshape(-1, n)
    tau = cpu_or_accelerator(_blocked_threshold, _whole_threshold, rows)
    return jnp.moveaxis(tau.reshape(*shape, 1), -1, axis)


def _blocked_threshold(rows: jax.Array) -> jax.Array:
    count, n = rows.shape
    if not (isinstance(count, int) and isinstance(n, int)):
        # A symbolic shape (jax.export): lax.map's blocks need a known count of rows, so every
        # row at once, as off the CPU (the same iteration; slower on a batch larger than the cache).
        return jax.vmap(_row_threshold)(rows)
    return jax.lax.map(_row_threshold, rows, batch_size=max(1, min(count, _BLOCK_VALUES // n)))


def _whole_threshold(rows: jax.Array) -> jax.Array:
    return jax.vmap(functools.partial(_row_threshold, unrolled=_UNROLLED_STEPS))(rows)


def _row_threshold(z: jax.Array, unrolled: int = 0) -> jax.Array:
    """tau with sum(max(z - tau, 0)) = 1 for a row (shifted: maximum 0, or NaN), in linear
    time: Michelot's iteration, Newton's method on that convex, decreasing, piecewise-linear
    sum, t' = (sum of the z > t, less 1) / their count, from the lower bound max(-1, (sum z - 1)
    / n). Below tau each step rises and stays at or below tau; at tau the set {z > t} is the
    support and t' the sort-based rule's (sum of the support - 1) / its size. Each step leaves out
    at least one value, so it ends; rows spread over more than about 0.1 take a few steps, and
    ``lax.while_loop`` runs until the row stops (vmapped over a block of rows by _threshold,
    until none of the block moves), after ``unrolled`` steps taken unasked (a stopped row keeps
    its state, so extra steps change nothing). The same iteration as PyTorch's C kernel
    (sparsemax.c). A NaN row stays NaN."""
    n = z.shape[-1]
    start = jnp.maximum((z.sum(keepdims=True) - 1.0) / n, -1.0)

    def step(t: jax.Array) -> jax.Array:
        above = z > t
        count = jnp.maximum(above.sum(keepdims=True), 1).astype(z.dtype)
        return (jnp.where(above, z, 0.0).sum(keepdims=True) - 1.0) / count

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
    state = (start, step(start), jnp.int32(0))
    for _ in range(unrolled):  # the same steps, without asking whether to take them
        state = advance(state)
    tau = jax.lax.while_loop(moving, advance, state)[1]
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
    # NaN rows stay NaN, and so do their derivatives (a select would pass zero): the threshold's
    # counting would otherwise hide the NaN.
    return (y * nan_factor(jnp.isnan(top), y.dtype)).astype(x.dtype)
