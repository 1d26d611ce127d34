"""JAX norms: the functions and their Flax NNX module classes (declared in ``harness/norms.py``;
mirrors ``impl_torch/norms.py``). PyTorch's parameter meaning throughout.

Groups are scaled by an exact power of two before their statistics (see ``_prescale``), so the
largest finite inputs do not overflow. Modules validate nothing themselves (the declaration
did); they check the input through the same harness function as the PyTorch side. Parameter
names follow PyTorch (``weight``, ``bias``, ``running_mean``, ``running_var``);
``.train()``/``.eval()`` toggle ``use_running_average`` as for ``nnx.BatchNorm``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

import harness
from harness.numerics import trusted_rstd_low, trusted_variance_floor
from impl_jax._common import clamp_straight_through, cpu_or_accelerator, everywhere, jitted, nan_factor, upcast
from impl_jax.adapter import FRAMEWORK_DTYPES, check_array, dtype_name


class _Prescaled(NamedTuple):
    """Groups brought to a safe range: ``values = x / scale`` per group (see _prescale)."""

    values: jax.Array
    scale: jax.Array  # a power of two per group
    minimum: jax.Array  # the group's smallest value, divided by scale (exact)
    constant: jax.Array  # the finite groups whose entries are all equal
    finite: jax.Array  # the groups without an infinity or NaN (the others' values are their limit)
    down: tuple[jax.Array, jax.Array]  # 1 / scale as two normal factors: values = x * down[0] * down[1]
    limit: jax.Array  # the groups holding an infinity and no NaN


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
    # XLA:CPU's max and min can drop a NaN, or give -inf for a long group holding one
    # (harness/divergences.py): a NaN group is told apart by a reduction of its own, so that it
    # stays NaN instead of taking an infinity's limit.
    nan = jnp.any(jnp.isnan(x), axis=dims, keepdims=True)
    amax = jnp.maximum(top, -bottom) * nan_factor(nan, top.dtype)
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
    minimum = bottom * down[0] * down[1]
    return _Prescaled(scaled, jnp.ldexp(one, power), minimum, constant, finite, down, jnp.isinf(amax))


def _prescaled_mean(x: jax.Array, dims: tuple[int, ...], prescaled: _Prescaled, square: bool = False) -> jax.Array:
    """The mean of ``prescaled.values`` over ``dims`` (of their squares with ``square``).

    On the CPU, of the values themselves: one reduction after _prescale's (XLA:CPU reads each
    reduction's input anew, siblings too). Elsewhere from sums over ``x`` itself, which reduce
    the input beside _prescale's maximum, minimum and NaN test, so that a GPU takes them in one
    pass (XLA fuses sibling reductions) instead of one more: see :func:`_sibling_mean`."""

    def of_values() -> jax.Array:
        values = prescaled.values
        return (values * values if square else values).mean(axis=dims, keepdims=True)

    return cpu_or_accelerator(of_values, lambda: _sibling_mean(x, dims, prescaled, square))


def _sibling_mean(x: jax.Array, dims: tuple[int, ...], prescaled: _Prescaled, square: bool) -> jax.Array:
    """_prescaled_mean from sums over ``x``. Each group's sum times its scaling factors is the
    values' sum (a power of two times each term and each partial sum: exact), but for entries
    that underflow in only one of the two scalings, far below the rounding of a sum they share
    with the group's largest entry. A group whose plain sum overflows takes a sum of x times a
    fixed power of two small enough that no group's can (1/count; for squares 1/sqrt(count *
    largest)); a group that held an infinity, the mean of its limit values (sign(x) at the
    infinities, 0 elsewhere); a NaN group, NaN."""
    count = math.prod(x.shape[d] for d in dims)
    down = prescaled.down
    fixed = _fixed_scale(count, x.dtype, square)
    if square:
        # Infinities squared as 0: their groups take the limits' sum, and the unused inf * inf
        # would turn the derivative's 0 * inf into NaN in second order.
        finite = jnp.where(jnp.isinf(x), 0.0, x)
        plain = (finite * finite).sum(axis=dims, keepdims=True)
        small = ((finite * fixed) * (finite * fixed)).sum(axis=dims, keepdims=True)
        limits = jnp.isinf(x).sum(axis=dims, keepdims=True).astype(x.dtype)
        # One factor at a time, a shrinking one first: down^2 underflows where the result does
        # not, and a small sum times down[0] / fixed overflows before it is times down[1].
        total = jnp.where(
            jnp.isfinite(plain),
            plain * down[0] * down[1] * down[0] * down[1],
            small * down[1] * (down[0] / fixed) * down[1] * (down[0] / fixed),
        )
    else:
        plain = x.sum(axis=dims, keepdims=True)
        small = (x * fixed).sum(axis=dims, keepdims=True)
        limits = jnp.where(jnp.isinf(x), jnp.sign(x), 0.0).sum(axis=dims, keepdims=True)
        total = jnp.where(jnp.isfinite(plain), plain * down[0] * down[1], small * down[1] * (down[0] / fixed))
    return jnp.where(prescaled.limit, limits, total) / count


def _fixed_scale(count: Any, dtype: Any, square: bool) -> float | jax.Array:
    """_sibling_mean's fixed power of two: 2^-ceil(log2(count)), for squares 2^-ceil((maxexp +
    log2(count)) / 2). For a symbolic count (jax.export with a symbolic batch) it is made in the
    program from ceil(log2(count)), the bit length of count - 1, rounded up before halving: at
    most as large, so as safe."""
    maxexp = jnp.finfo(dtype).maxexp
    if isinstance(count, int):
        return 2.0 ** -math.ceil((maxexp + math.log2(count)) / 2 if square else math.log2(count))
    bits = 32 - jax.lax.clz(jnp.asarray(count, jnp.int32) - 1)
    return jnp.ldexp(jnp.ones((), dtype), -((maxexp + bits + 1) // 2 if square else bits))


def _standardize(x: jax.Array, dims: tuple[int, ...], eps: float) -> tuple[Any, ...]:
    """(x - mean) / sqrt(var + eps) over ``dims``, with mean and biased variance (two-pass), on
    prescaled groups (see :func:`_prescale`); the eps term is scaled to match, which leaves the
    result unchanged. Also returns the prescaled groups' mean and variance, from which
    :func:`_statistics` makes the raw ones, and the _Prescaled record."""
    prescaled = _prescale(x, dims)
    scaled, scale, minimum, constant = prescaled[:4]
    # A constant group's mean is its value, exactly (see PyTorch's side for why).
    # Its value from the minimum, its gradient from the mean (as on PyTorch's side).
    mean = _prescaled_mean(x, dims, prescaled)
    mean = mean + jax.lax.stop_gradient(jnp.where(constant, minimum - mean, 0.0))
    centred = scaled - mean
    var = (centred * centred).mean(axis=dims, keepdims=True)
    xhat = centred / _root(var, scale, eps)
    return xhat, mean, var, prescaled


def _root(var: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """sqrt(var + eps / scale^2): the denominator of prescaled groups (see _standardize). eps /
    scale^2 underflows for huge groups; the smallest normal keeps 0 / 0 away."""
    return jnp.sqrt(var + jnp.maximum(eps / (scale * scale), jnp.finfo(var.dtype).tiny))


def _statistics(mean: jax.Array, var: jax.Array, scale: jax.Array, finite: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The groups' mean and biased variance from those of :func:`_standardize`, non-finite for a
    group that held an infinity (as PyTorch's batch norm gives), never the finite statistics of
    its limit: an infinite mean (NaN where the signs balance) and a NaN variance."""
    mean_scale = jnp.where(finite, scale, jnp.inf)
    var_scale = scale * nan_factor(~finite, scale.dtype)
    # Scaled back one factor at a time: scale * scale overflows where the variance does not.
    return mean * mean_scale, (var * var_scale) * var_scale


class _Linear(NamedTuple):
    """Per group, what a derivative rebuilds the normalized input from, so that no copy of it
    is kept (see :func:`_rebuilt`): the prescaling factors (1 for a plain group), the mean and
    rstd of the prescaled values (d xhat / dx is rstd / scale); ``limit``, the groups that held
    an infinity (their value is a constant limit, their derivative zero); ``plain``, a scalar:
    whether every group took the plain formula (ones for the factors, no limit)."""

    down: tuple[jax.Array, jax.Array]
    mean: jax.Array  # rms_norm: 0
    rstd: jax.Array
    limit: jax.Array
    plain: jax.Array


def _plain_linear(mean: jax.Array, rstd: jax.Array) -> _Linear:
    # Made from rstd, not constants: under shard_map they vary over the same mesh axes as the
    # other branch's outputs, as a cond requires (and the cond's predicate, which replaces plain).
    # full_like marks its result varying only while jax_auto_pcast is on, JAX's default (0.10).
    one = jnp.ones_like(rstd)
    return _Linear((one, one), mean, rstd, jnp.zeros_like(rstd, bool), jax.lax.full_like(rstd, True, bool, ()))


def _prescaled_linear(mean: jax.Array, root: jax.Array, prescaled: _Prescaled) -> _Linear:
    # A NaN group is not a limit (prescaled.limit): its derivative is NaN, as its value.
    return _Linear(prescaled.down, mean, 1.0 / root, prescaled.limit, jax.lax.full_like(root, False, bool, ()))


def _rebuilt(x: jax.Array, linear: _Linear, limits: bool = False) -> jax.Array:
    """The normalized input from x and the groups' _Linear, recomputed beside the derivative's
    own arithmetic, where XLA fuses it (a copy handed out of the cond is written to memory and
    read back: 1.6-1.7x flax's layer norm forward+backward, measured).

    In a group that held an infinity the clip keeps the values finite: transposed, the
    derivative's select zeroes that group's cotangent first, and an infinite xhat times that
    zero would still be NaN. With ``limits``, that group's limit values instead (sign(x) at the
    infinities, 0 elsewhere, normalized: what the output is made of, which the weight's
    derivative needs). NaN stays NaN."""
    # The clip's bound per group (+inf: none), an array made from the cond's output, not a
    # constant: XLA would make a min/max pair with constant bounds a clamp, which its fused
    # reductions do not take (the clipped copy was written to memory first: 1.36 of flax's
    # layer norm forward+backward against 1.28, measured).
    bound = jnp.where(linear.limit, 1.0, jnp.inf).astype(x.dtype)
    # The factors' derivative is 0 (powers of two from a stop_gradient'ed maximum), but handed
    # through a cond they arrive with zero tangents, not none, and x * 0 is NaN at an infinity.
    down = jax.lax.stop_gradient(linear.down)
    v = jnp.minimum(jnp.maximum(x * down[0] * down[1], -bound), bound)
    if limits:
        v = jnp.where(linear.limit, jnp.where(jnp.isinf(x), jnp.sign(x), 0.0), v)
    return (v - linear.mean) * linear.rstd


def _plain_statistics(xc: jax.Array, dims: tuple[int, ...], eps: float) -> tuple[jax.Array, ...]:
    """Mean and biased variance (two-pass) of each group, unscaled, as flax computes them, and
    whether every group is one the fast path gets right: finite statistics (no infinity, NaN or
    overflowed square) clear of cancellation (harness.numerics.trusted_variance_floor, the rule
    PyTorch's side applies to ATen's statistics), with rstd above trusted_rstd_low (see
    _variance_high)."""
    mean, var = _mean_and_variance(xc, dims)
    k, floor = trusted_variance_floor(jnp.dtype(xc.dtype).name, eps)
    v = jax.lax.stop_gradient(var)
    trusted = jnp.all((v < _variance_high(xc.dtype)) & (v > jnp.maximum(k * (mean * mean), floor)))
    return mean, var, trusted


# The fast path's statistics are differentiated from second order on only (the first-order
# tangent is written out), and there only matter where every group took the fast path. Where a
# group held an infinity or a NaN, the fallback's statistics made the output; these then get zero
# cotangents, which autodiff would still multiply by x - mean (not finite anywhere in that group:
# inf - inf, finite - inf), a NaN in every entry of the group. So their derivatives read x - mean
# (x for the mean square) as 0 where it is not finite; where every entry is finite they equal
# autodiff's to rounding (the last bits of some second-order entries move).


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _mean_and_variance(xc: jax.Array, dims: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance (two-pass) over ``dims``."""
    mean = xc.mean(axis=dims, keepdims=True)
    centred = xc - mean
    return mean, (centred * centred).mean(axis=dims, keepdims=True)


@_mean_and_variance.defjvp
def _mean_and_variance_jvp(
    dims: tuple[int, ...], primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    (xc,), (dx,) = primals, tangents
    mean, var = _mean_and_variance(xc, dims)
    centred = xc - mean
    dmean = dx.mean(axis=dims, keepdims=True)
    # 2 c (dx - dmean), as autodiff of c * c with c = x - mean gives it.
    dvar = (2.0 * jnp.where(jnp.isfinite(centred), centred, 0.0) * (dx - dmean)).mean(axis=dims, keepdims=True)
    return (mean, var), (dmean, dvar)


@jax.custom_jvp
def _mean_square(xc: jax.Array) -> jax.Array:
    """mean(x^2) over the last axis (rms_norm's fast path)."""
    return (xc * xc).mean(axis=-1, keepdims=True)


@_mean_square.defjvp
def _mean_square_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    (xc,), (dx,) = primals, tangents
    return _mean_square(xc), (2.0 * jnp.where(jnp.isfinite(xc), xc, 0.0) * dx).mean(axis=-1, keepdims=True)


def _variance_high(dtype: Any) -> float:
    """The variance below which rstd stays above harness.numerics.trusted_rstd_low, as
    PyTorch's side requires of ATen's rstd: 1 / low^2 (2^62 in float32). Above it the fast
    formula's second order underflows."""
    return trusted_rstd_low(jnp.dtype(dtype).name) ** -2.0


def _rms_plain_range(dtype: Any) -> tuple[float, float]:
    """The range [low, 1 / low) of mean(x^2) + eps in which rms_norm's rows take the plain
    formula, low = harness.numerics.trusted_rstd_low (2^-31 in float32, 2^-255 in float64): rstd
    within 2^+-15.5 in float32. Narrower than the other norms' rule (rstd above low), for the
    plain derivative's row factor rstd^3 (see _normalized_tangent): within it, that derivative's
    intermediates stay below max(n, 2^15.5) 2^15.5 rms(dx) (the form before's: n 2^15.5 rms(dx)).
    The rows outside (mean(x^2) + eps from 2^31 on, or below 2^-31, which takes an eps that
    small) take the prescaled formula."""
    low = trusted_rstd_low(jnp.dtype(dtype).name)
    return low, 1.0 / low


def _normalized(
    xc: jax.Array, dims: tuple[int, ...], eps: float, finish: Callable[[jax.Array], jax.Array] = lambda v: v
) -> tuple[Any, ...]:
    """(x - mean) / sqrt(var + eps) over ``dims``, the groups' _Linear (for the derivative), and
    their mean and biased variance (non-finite for a group that held an infinity).

    On the CPU, flax's plain two-pass formula where every group's statistics show it is the
    declared one (one fused check on group-sized values); the prescaled formula of _standardize
    otherwise (``lax.cond``: only the rare call with a constant, infinite, NaN, overflowing or huge
    group pays for it; under vmap both branches run). Elsewhere the prescaled formula alone (see
    :func:`impl_jax._common.cpu_or_accelerator`: a GPU reads a cond's predicate on the host).
    ``finish`` (the affine step, the cast) is applied to the first result inside each branch,
    where XLA fuses it into the output pass."""

    # The branches take the group statistics only: x - mean is recomputed inside, fused into the
    # output pass, where handing it across the cond would write it to memory first.
    def fast(operands: tuple[jax.Array, jax.Array]) -> tuple[Any, ...]:
        mean, var = operands
        rstd = jax.lax.rsqrt(var + eps)
        return finish((xc - mean) * rstd), _plain_linear(mean, rstd), mean, var

    def formula(_: Any) -> tuple[Any, ...]:
        xhat, mean, var, prescaled = _standardize(xc, dims, eps)
        linear = _prescaled_linear(mean, _root(var, prescaled.scale, eps), prescaled)
        return finish(xhat), linear, *_statistics(mean, var, prescaled.scale, prescaled.finite)

    def branching() -> tuple[Any, ...]:
        mean, var, trusted = _plain_statistics(xc, dims, eps)
        return jax.lax.cond(trusted, fast, formula, (mean, var))

    return cpu_or_accelerator(branching, lambda: formula(None))


def _normalized_tangent(
    xc: jax.Array,
    linear: _Linear,
    dx: jax.Array,
    dims: tuple[int, ...],
    centred: bool = True,
    weight: jax.Array | None = None,
    recompute: tuple[Callable[[jax.Array], _Linear], Callable[[jax.Array], _Linear]] | None = None,
) -> jax.Array:
    """The tangent of (x - mean) rstd, times ``weight`` if given: rstd (dx' - mean(dx') - xhat
    mean(xhat dx')) with dx' = dx / scale (rms_norm, not ``centred``: no mean(dx') term), zero
    in a group that held an infinity. Written out, not derived from the branch of _normalized
    that ran: linearizing that ``lax.cond`` makes both branches hand out their residuals (the
    untaken one zero-filled), which cost 5.6x flax's layer norm forward+backward (measured).

    A ``lax.cond`` of its own instead, on whether every group took the plain formula, over two
    linear branches that take only x and group-level values (transposed, a cond of their
    transposes):
    - plain: flax's arithmetic, which XLA fuses with the cotangent's reductions into one pass
      (rms_norm's with its row factors outside the reduction: see there).
    - otherwise: xhat rebuilt (see _rebuilt) and the zero of limit groups made by a select, exact
      whatever the cotangent (an infinite or NaN one too, as PyTorch's): a zero factor alone would
      make 0 * inf = NaN. Transposed, the select meets the cotangent before the fused reductions
      and costs a pass of its own, so only this branch has it.
    ``weight`` is applied inside, where its product fuses too (outside, the cotangent times the
    weight was written to memory before the cond). ``jax.checkpoint`` keeps xhat out of the
    residuals: without it, each branch's xhat was a residual written to memory (rms_norm 4.7x
    flax's). Inside the cond without its CSE barrier (``prevent_cse=False``: nothing outside a
    branch can be merged with what it recomputes; the accelerator form, which has no cond, keeps
    it), the plain branch's transpose is one fused kernel where the barrier kept the cotangent
    times the weight in memory between two (0.93-0.99 of the time, rms_norm; 0.99-1.0,
    layer_norm; at 2^22 in one process). Forward+backward at 2^22 against
    flax's, in alternating processes against the select on every call: layer_norm 1.23-1.24
    against 1.65-1.76, rms_norm 1.21 against 1.57-1.73 (in an earlier, quieter hour 1.02-1.09
    against 1.54-1.87; rms_norm's before its plain branch took the row factors out of its
    reduction). What remains is the statistics pass before the cond, which flax's VJP does not
    have: XLA:CPU makes flax's (and this arithmetic without a guard) one fused kernel, statistics,
    reduction and output, reading x once. A guard splits it wherever it sits: a per-row select on
    the statistics (no cond) took 1.07-1.15 of flax's, the row-level cond 1.14-1.24, at 2^22.

    ``recompute`` (rms_norm's): the plain and the prescaled groups' _Linear as functions of x,
    each called inside its own branch, which then takes none of ``linear``'s arrays (only its
    ``plain``, the predicate). The plain branch's transpose then computes mean(x^2) inside the
    kernel that reduces x * dy, as flax's VJP does (XLA:CPU fused it; rstd handed in from the
    forward's cond was one more input), and a VJP of the input alone uses nothing of the
    forward's cond, which XLA then drops with the output. Against the form before, in one
    process, one thread, at 2^22 (three processes): 0.95-0.98 of its time; at 2^16 1.02 (the
    mean square computed again, in cache). The speed check against flax's moved less than its
    spread between processes: speed_ratios' medians after it 1.08, 1.16, 1.18 and 1.19 (1.18
    before); what remains is the statistics pass for the predicate. The same for layer_norm
    (its mean and variance in the plain branch): 0.97-1.06 of before, noise, so not done;
    batch_norm's: 1.13-1.18 (its statistics reduce across rows).

    The predicate goes through :func:`impl_jax._common.everywhere`, so that under vmap it stays
    unbatched: a cond whose predicate is batched becomes selects that stop_gradient their
    operands, the tangent among them, and reverse mode of the vmapped function fails. Off the CPU
    the second branch alone (:func:`impl_jax._common.cpu_or_accelerator`)."""

    def branch(plain: bool, in_cond: bool = True) -> Callable[[tuple[Any, ...]], jax.Array]:
        def run(operands: tuple[Any, ...]) -> jax.Array:
            xc, linear, dx, weight = operands
            if in_cond and recompute is not None:
                # Not in the accelerator's form: there the forward's statistics are the same
                # computation, and its CSE barrier would keep XLA from merging the two.
                linear = recompute[0 if plain else 1](xc)
            if not plain:
                # dx / scale first, in prescaled units: the factor rstd / scale of huge groups
                # (2^-600 at 2^600) times a derivative of its own underflowed in second order.
                dx = dx * linear.down[0] * linear.down[1]
            if plain and not centred:
                # rms_norm: rstd dx - x rstd^3 mean(x dx), the row factors outside the reduction,
                # so that transposed it reduces x * dy alone (as flax's VJP). Reducing xhat * dy,
                # XLA:CPU wrote xhat and dy * rstd to memory first (its reduction fusions took no
                # row broadcast; the compiled HLO shows it): in one process, one thread, the form
                # before's VJP took 1.03-1.06 times this one's at 2^22 and 1.12-1.13 at 2^16 on
                # standard-normal rows, 1.06-1.07 at 2^22 on the benchmark's. The rows here
                # have rstd within 2^+-15.5 (_rms_plain_range, float32), and the factors apply in
                # an order whose intermediates, forward and transposed, are bounded by
                # max(n, 2^15.5) 2^15.5 rms(dx), the form before's by n 2^15.5 rms(dx) (the same
                # bound for rows of 2^15.5 entries or more).
                rstd, count = linear.rstd, math.prod(xc.shape[d] for d in dims)
                coefficient = rstd * (rstd * ((rstd * (xc * dx).sum(axis=dims, keepdims=True)) / count))
                out = rstd * dx - xc * coefficient
                return out if weight is None else out * weight
            xhat = (xc - linear.mean) * linear.rstd if plain else _rebuilt(xc, linear)
            inner = dx - xhat * (xhat * dx).mean(axis=dims, keepdims=True)
            if centred:
                inner = inner - dx.mean(axis=dims, keepdims=True)
            out = linear.rstd * inner if plain else jnp.where(linear.limit, 0.0, linear.rstd * inner)
            return out if weight is None else out * weight

        return jax.checkpoint(run, prevent_cse=not in_cond)

    # The tangent goes into each form as an operand, as it went into the cond.
    def branching(xc: jax.Array, linear: _Linear, dx: jax.Array, weight: jax.Array | None) -> jax.Array:
        # Arrays a branch does not read still tie the cond to what made them.
        operands = (xc, None if recompute else linear, dx, weight)
        return jax.lax.cond(everywhere(linear.plain), branch(True), branch(False), operands)

    return cpu_or_accelerator(
        branching, lambda *operands: branch(False, in_cond=False)(operands), xc, linear, dx, weight
    )


def layer_norm(x: jax.Array, weight: jax.Array | None, bias: jax.Array | None, *, eps: float) -> jax.Array:
    """The declared layer norm, fast where the rows' statistics allow (see _normalized), with
    its derivative written out in every mode (see _normalized_tangent)."""
    return _layer_norm(x, _of_rank(weight, x), _of_rank(bias, x), eps)


def _of_rank(a: jax.Array | None, x: jax.Array) -> jax.Array | None:
    """A per-feature parameter with x's rank (leading axes of 1): every product with it then
    broadcasts by shape alone, which ``jax_numpy_rank_promotion="raise"`` requires (flax's
    norms reshape theirs too)."""
    return None if a is None else jax.lax.broadcast_to_rank(a, x.ndim)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _layer_norm(x: jax.Array, weight: jax.Array | None, bias: jax.Array | None, eps: float) -> jax.Array:
    return _normalized(upcast(x), (-1,), eps, lambda v: _layer_norm_tail(v, weight, bias).astype(x.dtype))[0]


@_layer_norm.defjvp
def _layer_norm_jvp(eps: float, primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[jax.Array, jax.Array]:
    (x, weight, bias), (dx, dweight, dbias) = primals, tangents
    xc = upcast(x)
    y, linear, *_ = _normalized(xc, (-1,), eps, lambda v: _layer_norm_tail(v, weight, bias).astype(x.dtype))
    dxhat = _normalized_tangent(xc, linear, upcast(dx), (-1,), weight=None if weight is None else upcast(weight))
    # Without weights, the bound's clamp passes the gradient straight through.
    if weight is None:
        return y, dxhat.astype(x.dtype)
    dy = dxhat + _rebuilt(xc, linear, limits=True) * upcast(dweight) + upcast(dbias)
    return y, dy.astype(x.dtype)


def _layer_norm_tail(xhat: jax.Array, weight: jax.Array | None, bias: jax.Array | None) -> jax.Array:
    if weight is None:
        # Declared bound sqrt(n - 1); eps keeps the exact value inside, this guards rounding.
        bound = math.sqrt(xhat.shape[-1] - 1)
        return clamp_straight_through(xhat, -bound, bound)
    return xhat * upcast(weight) + upcast(bias)


def rms_norm(x: jax.Array, weight: jax.Array | None, *, eps: float | None) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) * weight, fast where the rows allow (see _rms_normalized), with
    its derivative written out in every mode."""
    if eps is None:
        # PyTorch's meaning: the machine epsilon of the dtype it computes in (float32 for float16
        # and bfloat16 inputs, as torch.nn.RMSNorm does), not of the input's.
        eps = float(jnp.finfo(upcast(x).dtype).eps)
    return _rms_norm(x, _of_rank(weight, x), eps)


def _rms_norm_tail(y: jax.Array, weight: jax.Array | None, dtype: Any) -> jax.Array:
    if weight is None:
        bound = math.sqrt(y.shape[-1])
        return clamp_straight_through(y, -bound, bound).astype(dtype)
    return (y * upcast(weight)).astype(dtype)


def _rms_normalized(
    x: jax.Array, eps: float, finish: Callable[[jax.Array], jax.Array] = lambda v: v
) -> tuple[jax.Array, ...]:
    """x / sqrt(mean(x^2) + eps) and the rows' _Linear: the plain formula where every row's mean
    square is finite (no infinity, NaN or overflowed square) and in _rms_plain_range, the
    prescaled one of _standardize otherwise (``lax.cond`` on the CPU, the prescaled one alone
    elsewhere, as in _normalized; ``finish`` too). The _Linear's ``plain`` is the cond's
    predicate itself, not one of its outputs (see ``recompute`` in _normalized_tangent)."""
    xc = upcast(x)

    def fast(ms: jax.Array) -> tuple[Any, ...]:
        linear = _rms_plain_linear(ms, eps)
        return finish(xc * linear.rstd), linear

    def formula(_: Any) -> tuple[Any, ...]:
        values, linear = _rms_prescaled(xc, eps)
        return finish(values), linear

    def branching() -> tuple[jax.Array, ...]:
        ms = _mean_square(xc)
        low, high = _rms_plain_range(xc.dtype)
        v = jax.lax.stop_gradient(ms) + eps
        # NaN and inf fail the comparison too.
        plain = jnp.all((v >= low) & (v < high))
        y, linear = jax.lax.cond(plain, fast, formula, ms)
        return y, linear._replace(plain=plain)

    return cpu_or_accelerator(branching, lambda: formula(None))


def _rms_plain_linear(ms: jax.Array, eps: float) -> _Linear:
    """The _Linear of rows that take the plain formula, from their mean square."""
    return _plain_linear(jnp.zeros_like(ms), jax.lax.rsqrt(ms + eps))


def _rms_prescaled(xc: jax.Array, eps: float) -> tuple[jax.Array, _Linear]:
    """x / sqrt(mean(x^2) + eps) from prescaled rows (see _prescale), and their _Linear."""
    prescaled = _prescale(xc, (-1,))
    root = _root(_prescaled_mean(xc, (-1,), prescaled, square=True), prescaled.scale, eps)
    return prescaled.values / root, _prescaled_linear(jnp.zeros_like(root), root, prescaled)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _rms_norm(x: jax.Array, weight: jax.Array | None, eps: float) -> jax.Array:
    return _rms_normalized(x, eps, lambda v: _rms_norm_tail(v, weight, x.dtype))[0]


@_rms_norm.defjvp
def _rms_norm_jvp(eps: float, primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[jax.Array, jax.Array]:
    (x, weight), (dx, dweight) = primals, tangents
    y, linear = _rms_normalized(x, eps, lambda v: _rms_norm_tail(v, weight, x.dtype))
    xc = upcast(x)
    # The tangent of x rstd, written out (see _normalized_tangent): rstd (dx' - yhat mean(yhat dx')).
    dyhat = _normalized_tangent(
        xc,
        linear,
        upcast(dx),
        (-1,),
        centred=False,
        weight=None if weight is None else upcast(weight),
        recompute=(lambda v: _rms_plain_linear(_mean_square(v), eps), lambda v: _rms_prescaled(v, eps)[1]),
    )
    dy = dyhat if weight is None else dyhat + _rebuilt(xc, linear, limits=True) * upcast(dweight)
    return y, dy.astype(x.dtype)


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
    mode the plain two-pass statistics where every channel is trusted, the prescaled ones
    otherwise (see _normalized), with the derivative written out (see _normalized_tangent)."""
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


@functools.partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def _batch_norm_training(
    x: jax.Array, weight: jax.Array, bias: jax.Array, running_mean: jax.Array, running_var: jax.Array,
    momentum: float, eps: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    y, _, mean, var = _normalized(
        upcast(x), (0, *range(2, x.ndim)), eps, lambda v: _batch_norm_tail(x, v, weight, bias)
    )
    return (y, *_running(x, mean, var, running_mean, running_var, momentum))


@_batch_norm_training.defjvp
def _batch_norm_training_jvp(
    momentum: float, eps: float, primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
    (x, weight, bias, running_mean, running_var), (dx, dweight, dbias, _, _) = primals, tangents
    dims = (0, *range(2, x.ndim))
    xc = upcast(x)
    y, linear, mean, var = _normalized(xc, dims, eps, lambda v: _batch_norm_tail(x, v, weight, bias))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    dxhat = _normalized_tangent(xc, linear, upcast(dx), dims, weight=upcast(weight).reshape(shape))
    xhat = _rebuilt(xc, linear, limits=True)
    dy = dxhat + xhat * upcast(dweight).reshape(shape) + upcast(dbias).reshape(shape)
    new_mean, new_var = _running(x, mean, var, running_mean, running_var, momentum)
    # The running statistics are not differentiated (stop_gradient, as PyTorch's buffers).
    outputs = (y, new_mean, new_var)
    return outputs, (dy.astype(x.dtype), jnp.zeros_like(new_mean), jnp.zeros_like(new_var))


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
        check_array(x, self._spec.name)
        self._spec.check_input(dtype_name(x), tuple(x.shape), dict(self.params), framework="jax")
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
        check_array(x, self._spec.name)
        self._spec.check_input(dtype_name(x), tuple(x.shape), dict(self.params), framework="jax")
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
        check_array(x, self._spec.name)
        self._spec.check_input(dtype_name(x), tuple(x.shape), dict(self.params), framework="jax")
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
