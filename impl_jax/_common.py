"""What the JAX families share: precision handling and the two clamps with explicit gradients.

Every kink gradient is written explicitly: ``jnp.clip`` splits the gradient 0.5/0.5 at a tie
and ``jax.nn.hard_tanh`` passes it, so neither is trusted for the gradient; ``custom_jvp``
keeps the plain op on the forward path. Mirrors ``impl_torch/_common.py``.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from jax import lax

LOW = (jnp.dtype("float16"), jnp.dtype("bfloat16"))
T = TypeVar("T")


def _cpu_forms() -> tuple[str, ...]:
    chosen = os.environ.get("OUTPUT_LIMITS_JAX_FORMS", "by-platform")
    if chosen not in ("by-platform", "accelerator"):
        raise ValueError(
            f"OUTPUT_LIMITS_JAX_FORMS must be 'by-platform' (the default) or 'accelerator', got {chosen!r}"
        )
    return ("cpu",) if chosen == "by-platform" else ()


# The platforms whose programs take the CPU's forms of cpu_or_accelerator: branching on data
# (``lax.cond``, a loop asked at every step) to skip a fallback's work where a guard says it is
# not needed, and reductions one after another where siblings would each read the input anew.
# XLA:CPU reads a predicate in the thread that runs the program. XLA:GPU copies it to the host
# and waits for the stream before it runs the branch (ConditionalThunk, and WhileThunk at every
# step): a synchronization per call, which every launch queued after it waits for too.
# OUTPUT_LIMITS_JAX_FORMS=accelerator empties it, so that tests run the other forms on the CPU
# (the Triton pass of ``nox -s tests``).
CPU_FORMS: tuple[str, ...] = _cpu_forms()


def cpu_or_accelerator(cpu: Callable[..., T], accelerator: Callable[..., T], *operands: Any) -> T:
    """``cpu(*operands)`` in a program lowered for a platform of CPU_FORMS (the CPU),
    ``accelerator(*operands)`` in one lowered for any other. Both give the declared result for
    every input; the accelerator's form never branches on data (for a guarded technique, its
    fallback run for every group, with the fewest dependent passes). Chosen when the program is
    lowered (``lax.platform_dependent``), not by a Python branch, so a jitted function moved to a
    GPU takes the GPU's form."""
    if not CPU_FORMS:
        return accelerator(*operands)
    return jax.lax.platform_dependent(*operands, default=accelerator, **dict.fromkeys(CPU_FORMS, cpu))


def jitted(fn: Callable[..., Any], **params: Any) -> Callable[..., Any]:
    """``jax.jit`` of ``fn`` with the keyword ``params`` fixed: one per function and parameters,
    shared by every module built with them. XLA's compiled programs are cached per jitted
    function, so a second module (or one unpickled, deep-copied or rebuilt by conversion) does
    not compile again, and a module's eager call is one dispatch, not one per primitive."""
    return _jit(fn, tuple(sorted(params.items())))


@functools.lru_cache(maxsize=1024)
def _jit(fn: Callable[..., Any], params: tuple[tuple[str, Any], ...]) -> Callable[..., Any]:
    return jax.jit(functools.partial(fn, **dict(params)))


def upcast(x: jax.Array) -> jax.Array:
    # Composite formulas run in float32 for float16/bfloat16 and round once at the end, so
    # both frameworks round the same value (XLA and ATen round intermediates differently).
    return x.astype(jnp.float32) if x.dtype in LOW else x


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def clamp_inside(x: jax.Array, lo: float, hi: float) -> jax.Array:
    """clamp with gradient 1 strictly inside (lo, hi), 0 at and beyond the bounds."""
    return jnp.clip(x, lo, hi)


@clamp_inside.defjvp
def _clamp_inside_jvp(
    lo: float, hi: float, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    # Zero where x <= lo or x >= hi, passed on strictly inside, NaN at a NaN x, exactly as
    # PyTorch's side. Compared in float32 for float16/bfloat16, as ATen does: a bound those cannot
    # hold must not be rounded onto the input first (x = bf16(0.1) is above lo = 0.1, so its
    # gradient is 1).
    xc = upcast(x)
    return jnp.clip(x, lo, hi), at_nan(x, jnp.where((xc <= lo) | (xc >= hi), jnp.zeros_like(t), t))


def at_nan(x: jax.Array, tangent: jax.Array) -> jax.Array:
    """``tangent`` with NaN where ``x`` is NaN: the declared derivative at a NaN input
    (harness.TechniqueSpec, reduction_axes), which the piecewise rules' comparisons would not
    give. A product with a factor, not a select of a NaN constant, so that the tangent stays
    linear and reverse mode can transpose it. The factor is x's own NaN there, 1 elsewhere (no
    graph: second order stays 0), so that no NaN is made where x holds none: with
    ``jax_debug_nans`` op by op (``jax.disable_jit``) a NaN constant stopped a finite input's
    gradient. PyTorch's at_nan takes the mask, which its rule also uses."""
    return tangent * jax.lax.stop_gradient(jnp.where(jnp.isnan(x), x, 1.0)).astype(tangent.dtype)


def nan_factor(mask: jax.Array, dtype: Any) -> jax.Array:
    """NaN where ``mask`` is set, 1 elsewhere: a factor that makes a value NaN. Made by
    arithmetic (the square root of -1) where the mask is set only, never as a NaN constant:
    ``jax_debug_nans`` checks every operation's output op by op (``jax.disable_jit``), and a NaN
    constant stopped finite inputs there. The callers' masks hold where the input is NaN or
    infinite, or (an inverse) outside the domain."""
    return jnp.sqrt(jnp.where(mask, -1.0, 1.0).astype(dtype))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def clamp_straight_through(x: jax.Array, lo: float, hi: float) -> jax.Array:
    """clamp with gradient 1 everywhere (rounding guards, ste_clamp)."""
    return jnp.clip(x, lo, hi)


@clamp_straight_through.defjvp
def _clamp_straight_through_jvp(
    lo: float, hi: float, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    return jnp.clip(x, lo, hi), t


@jax.custom_batching.custom_vmap
def everywhere(flag: jax.Array) -> jax.Array:
    """``flag`` (a scalar), unbatched under vmap: true where it holds for every element of the
    batch. For a cond predicate where both branches give the same result and one is faster."""
    return flag


@everywhere.def_vmap
def _everywhere_vmap(axis_size: int, in_batched: list[bool], flag: jax.Array) -> tuple[jax.Array, bool]:
    # Called again on the reduced flag: under nested vmaps it is still batched along the outer
    # axes, whose rules then reduce those in turn.
    return (everywhere(jnp.all(flag)) if in_batched[0] else flag), False


def require_x64(what: str, instead: str = "use dtype='float32'") -> None:
    """Refuse float64 while JAX's x64 mode is off, where JAX would silently make float32 arrays
    of it (with a warning at most): for an input, a module's parameters, an array."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            f"{what}: float64 in JAX needs jax.config.update('jax_enable_x64', True) before any array is made "
            f"(without it JAX computes in float32); enable it, or {instead}"
        )


# --- exp in float32, written out --------------------------------------------------------------
# Where XLA's own exp costs a technique its speed target; the C kernels' counterpart is
# impl_torch/_native/vmath.h. On the CPU, XLA expands jnp.exp into about 20 vector instructions
# (a clamp of the argument, a clamp of the exponent, a two-step Cody-Waite reduction, the
# polynomial, the scaling), and a loop of this project's tails issues its instructions at a
# steady rate, so each one counts.

_LN2 = math.log(2.0)
_LOG2E = 1.0 / _LN2

# e^g - 1 - g = g^2 P(g) on [-ln2 / 2, ln2 / 2], P of degree 4: a relative-error fit (iteratively
# reweighted least squares on Chebyshev nodes, in float64) whose float32 coefficients hold e^g to
# 3.7e-9 and 2^f = e^(f ln2) to 4.4e-9 with ln2 rounded, a fourteenth of an ulp before the float32
# steps round; Cephes' expf (the C kernels', vmath.h) carries one term more.
_EXP_POLY = (
    1.3814724516123533e-3,
    8.368716575205326e-3,
    4.166838526725769e-2,
    1.666652113199234e-1,
    4.999999403953552e-1,
)
EXP2_LIMIT = 30.0
EXP2_ULPS = 2

# n + 1.5 * 2^23 is exact for an integer |n| < 2^22, and its bit pattern is 0x4B400000 + n: shifted
# left by 23, the constant's bits leave the word and n << 23 stays, the exponent field's step.
# Not n.astype(int32): XLA's conversion saturates and maps NaN to 0, five more vector
# instructions per 8 elements on the CPU. (Nor v + c - c for the rounding itself: XLA's simplifier
# folds the constants, leaving v.)
_SHIFTER = 12582912.0


def exp2_clipped(v: jax.Array) -> jax.Array:
    """2 ** clip(v, -30, 30) for float32 ``v``. A NaN argument gives an unspecified value (its
    callers' NaN comes through their other terms). Not differentiable (the bitcasts): call it
    inside a ``custom_jvp`` that states the derivative, as smooth_clamp does.

    n = round(v), f = v - n (exact), and 2^f = e^g, g = f ln2 rounded (monotone in f), as
    1 + g + g^2 P(g): P's rounding noise rides on the small g^2 term and stays below a step of g.
    So the polynomial must be a function of g alone where g stays put while f steps; P is taken
    in g^2 (even and odd halves) because XLA's simplifier folds a constant times g into f times
    one constant, which made the Horner form's first term a function of f and turned the result
    back at 3 arguments in [-0.50, -0.41]. A polynomial in f straight away, 1 + f (ln2 + ...), turned
    back at one near -0.0018: its first coefficient's rounding, times f, outweighed f's step.
    Where n changes (at the half-integers), p(1/2) 2^k meets p(-1/2) 2^(k+1): there it is the
    accuracy that keeps the order. Rounding depends on the compiled form (XLA fuses multiplies
    and adds into FMAs, and reassociates constants), so tests/test_jax_exp.py checks every
    argument both jitted and run op by op.

    2^n is added to the exponent field as an integer: the result is a normal number for every n
    here, so no scaling multiply and no clamp of n. The clip keeps the infinities and the largest
    finite arguments away from the exponent field; its one caller, smooth_clamp's term
    2r / (1 + E) - r, is exactly r or -r in float32 from |v| = 26 on, clipped or not.
    """
    v = jnp.clip(v, -EXP2_LIMIT, EXP2_LIMIT)
    n = lax.round(v, lax.RoundingMethod.TO_NEAREST_EVEN)
    g = (v - n) * _LN2
    g2 = g * g
    c0, c1, c2, c3, c4 = _EXP_POLY
    p = ((g2 * c0 + c2) * g2 + c4) + (g2 * c1 + c3) * g
    p = p * g2 + g + 1.0
    step = lax.shift_left(lax.bitcast_convert_type(n + _SHIFTER, jnp.int32), jnp.int32(23))
    return lax.bitcast_convert_type(lax.bitcast_convert_type(p, jnp.int32) + step, jnp.float32)


def exp_scaled(e: jax.Array, scale: float) -> jax.Array:
    """exp(scale * e), for a caller whose result stops changing once E is below 2^-26 or above
    2^26: in float32, ``exp2_clipped`` (which clips at 2^+-30) of the argument in base 2; in
    float64, XLA's exp, whose 0 and inf the caller's form takes."""
    if e.dtype == jnp.float32:
        return exp2_clipped(e * (scale * _LOG2E))
    return jnp.exp(e * scale)
