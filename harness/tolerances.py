"""The one table of parity tolerances, each with the reason it is that size.

A comparison of two arrays ``a`` and ``b`` (PyTorch and JAX, or one of them and the numpy
reference) passes when, elementwise,

    |a - b| <= rtol * max(|a|, |b|, floor * scale),   scale = the largest |a|, |b| in the array

``floor`` = 1 makes it the norm-wise relative error max|a - b| / max|b|, the usual measure for
results formed by subtracting terms of similar size (the error is relative to the terms, not
to their small difference). ``floor`` = 1e-3 keeps values elementwise relative down to a
thousandth of the largest one. NaNs must sit at the same positions, infinities must be equal.

The table is the same on every device: on CUDA (an H200, ``pytest --device cuda``) every
comparison passed with it, the worst at half its tolerance
(bench/results/cuda-h200-2026-12-04/parity-cuda.md), so no entry is declared per device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

ELEMENTWISE = 1e-3
NORMWISE = 1.0


@dataclass(frozen=True)
class Tolerance:
    """``rtol`` and ``floor`` for one (dtype, quantity); ``reason`` is what a reviewer reads to accept it."""

    rtol: float
    reason: str
    floor: float = ELEMENTWISE


_ULPS_NOTE = "sigmoid/tanh/exp differ by a few ulps between ATen and XLA"

DEFAULTS: dict[tuple[str, str], Tolerance] = {
    ("float64", "value"): Tolerance(
        1e-11,
        "Same formula in IEEE double on both sides; transcendental functions differ by <= a few ulps (1e-15) "
        "and reductions over <= 64 elements by summation order (<= 64 ulps). 1e-11 keeps 3+ orders of margin "
        "and still catches any formula or convention difference.",
    ),
    ("float64", "vjp"): Tolerance(
        1e-10,
        "As for values, plus the backward pass. Norm-wise: backward formulas such as 1 - y^2 (tanh), "
        "y (1 - y) (sigmoid) and the normalization chain rule subtract terms of similar size, so their "
        "rounding error is absolute at the scale of the largest gradient.",
        NORMWISE,
    ),
    ("float32", "value"): Tolerance(
        2e-6,
        f"About 17 float32 ulps (eps 1.19e-7): {_ULPS_NOTE}, and reductions are ordered differently.",
    ),
    ("float32", "vjp"): Tolerance(
        1e-5,
        "About 80 float32 ulps: the backward pass compounds forward ulp differences (e.g. 4 s (1 - s) in the "
        "smooth_clamp tails, the normalization chain rule). Norm-wise, as for float64: a one-ulp forward "
        "difference in y near saturation becomes an absolute error 2 y ulp(y) in 1 - y^2.",
        NORMWISE,
    ),
    ("float16", "value"): Tolerance(
        2e-3,
        "2 float16 ulps (eps 9.8e-4): both sides round the same float32 value once, but a float32 result "
        "within a few float32 ulps of a float16 rounding tie can round either way.",
    ),
    ("float16", "vjp"): Tolerance(
        4e-3, "4 float16 ulps (norm-wise): the forward's 2, doubled by the backward pass.", NORMWISE
    ),
    ("bfloat16", "value"): Tolerance(
        1.6e-2,
        "2 bfloat16 ulps (eps 7.8e-3): a float32 result near a bfloat16 tie rounds either way "
        "(bf16 sigmoid differs by one ulp on about a third of random inputs).",
    ),
    ("bfloat16", "vjp"): Tolerance(
        3.2e-2, "4 bfloat16 ulps (norm-wise): the forward's 2, doubled by the backward pass.", NORMWISE
    ),
}

QUANTITIES = ("value", "vjp")
# The dtypes whose float32-rounded results carry a bound's absolute error (float64 meets the
# elementwise default); for the norm-wise value overrides below.
ROUNDED = ("float32", "float16", "bfloat16")

NORMALIZATION_VALUES = (
    "Norm-wise values: x - mean and the affine step w * xhat + b subtract terms of the array's size, so an "
    "output near zero carries an absolute, not relative, rounding error. Same rtol as the dtype's default."
)

SMOOTH_CLAMP_VALUES = (
    "Norm-wise values: the tails are computed from their join, m + 2r (sigmoid(2e/r) - 1/2), which takes "
    "five cheap passes instead of branches (PyTorch's where is 6x slower than sigmoid on CPU). Near a bound "
    "of 0 the error is therefore absolute, about ulp(r), instead of relative. float64 meets the elementwise "
    "default and keeps it."
)

SHIFTED_VALUES = (
    "Norm-wise values: the output is a bound plus or minus a term of the interval's size (lo + (hi - lo) s, "
    "hi - s(...) w / s(w), z - tau), so an output near zero carries an absolute error of a few ulps of the "
    "bound, not a relative one. Same rtol as the dtype's default; float64 meets the elementwise default."
)


def normwise_values(reason: str, dtypes: tuple[str, ...] = ROUNDED) -> dict[tuple[str, str], Tolerance]:
    """Values compared norm-wise at each dtype's default rtol, for ``reason``: the overrides a
    declaration gives in ``TechniqueSpec.tolerances`` when its outputs are a sum of terms of the
    array's size (a bound plus or minus a term, a centred and scaled value)."""
    return {(dtype, "value"): Tolerance(DEFAULTS[dtype, "value"].rtol, reason, NORMWISE) for dtype in dtypes}


def shifted_values(dtypes: tuple[str, ...] = ROUNDED) -> dict[tuple[str, str], Tolerance]:
    """``normwise_values`` for outputs that are a bound plus or minus a term of the interval's
    size, with the reason the built-in techniques of that shape give."""
    return normwise_values(SHIFTED_VALUES, dtypes)


def check_declared(technique: str, declared: Mapping[tuple[str, str], Any], dtypes: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``declared`` maps (dtype, quantity) to a Tolerance with a
    positive rtol and a reason: what ``TechniqueSpec`` checks of its ``tolerances``."""
    for key, tol in declared.items():
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] in dtypes and key[1] in QUANTITIES):
            raise ValueError(
                f"{technique}: tolerances keys are (dtype, quantity) with dtype one of {', '.join(dtypes)} and "
                f"quantity one of {', '.join(QUANTITIES)}, got {key!r}"
            )
        if not isinstance(tol, Tolerance) or not 0 < tol.rtol < 1 or not tol.reason.strip():
            raise ValueError(
                f"{technique}: tolerances[{key!r}] must be a harness.tolerances.Tolerance with 0 < rtol < 1 and a "
                f"reason a reviewer can accept, got {tol!r}"
            )


BENCH_CHECK = Tolerance(
    1e-4,
    "Benchmark outputs (float32, eager, compiled or jitted) against the float64 reference, once per row: "
    "compiled code may reassociate and fuse, so this is looser than the parity table; it exists to stop a "
    "wrong result from posting a time, and a wrong result misses by far more than 1e-4.",
    NORMWISE,
)


COMPILED = Tolerance(
    1e-5,
    "A torch.compile'd module against the same module run eagerly, float32: inductor fuses, contracts to FMA "
    "and reorders reductions (LayerNorm's 1024-element rows), a few ulps (<= 1e-6) apart. A compiled path "
    "that is wrong (torch 2.11 returned dx = 0 for some custom Functions) misses by 100%.",
    NORMWISE,
)


SECOND_ORDER = Tolerance(
    1e-6,
    "A float64 second-order term (a Hessian-vector product) against the central difference of the same "
    "framework's input VJP, step h = 1e-5 (1 + max|x|): truncation h^2 ~ 1e-10 and rounding eps / h ~ 1e-11, "
    "relative to the largest term, so 1e-6 keeps four orders of margin. A dropped second-order term, or a "
    "first derivative that autodiff cannot follow, misses by 100%.",
    NORMWISE,
)


_HEAD_VALUES = (
    "Head outputs norm-wise: the Linear layer's dot products sum terms of both signs, so an output near zero "
    "carries an absolute error of a few ulps of the terms (summation order differs between the frameworks)."
)


def head_tolerance(technique: str, dtype: str, quantity: str) -> Tolerance:
    """The tolerance for a head (Linear, then ``technique``): values norm-wise, VJPs as usual."""
    base = tolerance(technique, dtype, quantity)
    return Tolerance(base.rtol, _HEAD_VALUES, NORMWISE) if quantity == "value" else base


def _none_declared(technique: str) -> Mapping[tuple[str, str], Tolerance]:
    return {}


# A technique's declared tolerances by name, set by harness.registry when it loads (as
# harness.spec's lookup): the declarations import this module, so it imports none of them.
_declared: Callable[[str], Mapping[tuple[str, str], Tolerance]] = _none_declared


def tolerance(technique: str, dtype: str, quantity: str) -> Tolerance:
    """The tolerance for comparing ``quantity`` ("value" or "vjp") of ``technique`` in ``dtype``:
    the declaration's own (``TechniqueSpec.tolerances``), else the dtype's default."""
    return _declared(technique).get((dtype, quantity), DEFAULTS[dtype, quantity])


def bench_tolerance(technique: str, quantity: str) -> Tolerance:
    """The benchmark's output check for ``technique``: BENCH_CHECK, widened where the
    declaration's float32 tolerance allows more (a declared, reasoned override holds for the
    bench too). Both the rtol and the floor are the larger of the two, so the declared one can
    only loosen it: BENCH_CHECK is norm-wise, a declared rtol may be elementwise."""
    declared = _declared(technique).get(("float32", quantity))
    if declared is None or declared.rtol <= BENCH_CHECK.rtol:
        return BENCH_CHECK
    reason = f"{technique}'s declared float32 {quantity} tolerance, norm-wise at least: {declared.reason}"
    return Tolerance(declared.rtol, reason, max(declared.floor, BENCH_CHECK.floor))


@dataclass(frozen=True)
class Comparison:
    """Outcome of :func:`compare`: the largest scaled error against ``rtol``, and where it is."""

    max_abs: float
    max_rel: float
    rtol: float
    worst_index: tuple[int, ...] | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.max_rel <= self.rtol


# Elements per block of compare(): a block's float64 temporaries stay in cache, where a whole
# 2^26-element benchmark output makes a dozen passes through memory. 2^24 elements: 2.3 s
# unblocked, 0.47 s in blocks of 2^16, 0.23 s in blocks of 2^14 (measured here).
_BLOCK = 1 << 14


def _first(values: np.ndarray, start: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Where the first largest of a block's ``values`` (the first True of flags) sits in ``shape``."""
    return tuple(int(i) for i in np.unravel_index(start + int(np.argmax(values)), shape))


def compare(a: np.ndarray, b: np.ndarray, tol: Tolerance, scale: float = 0.0) -> Comparison:
    """Compare ``a`` and ``b`` as described in this module's docstring.

    ``scale`` raises the array's own scale: parts of one VJP (input and parameter gradients) are
    compared against the largest gradient of that VJP, so a gradient that is zero in exact
    arithmetic (a Linear bias before BatchNorm) is judged at the VJP's scale, not by its noise.
    Computed block by block in float64; the result does not depend on the block size.
    """
    rtol = tol.rtol
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return Comparison(np.inf, np.inf, rtol, None, f"shapes differ: {a.shape} vs {b.shape}")
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)

    def pairs() -> Any:
        # Converted lazily per pass, so that at most one block's float64 copies exist at a time.
        for start in range(0, flat_a.size, _BLOCK):
            block = slice(start, start + _BLOCK)
            yield start, np.asarray(flat_a[block], dtype=np.float64), np.asarray(flat_b[block], dtype=np.float64)

    for start, x, y in pairs():
        odd = np.isnan(x) != np.isnan(y)
        if odd.any():
            where = _first(odd, start, a.shape)
            return Comparison(np.inf, np.inf, rtol, where, f"NaN in one array only, first at {where}")
    top, any_finite = 0.0, False
    for start, x, y in pairs():
        inf = np.isinf(x) | np.isinf(y)
        if (x[inf] != y[inf]).any():
            where = _first(inf & (x != y), start, a.shape)
            return Comparison(np.inf, np.inf, rtol, where, f"infinities differ, first at {where}")
        finite = ~(np.isnan(x) | inf)
        if finite.any():
            any_finite = True
            top = max(top, float(np.maximum(np.abs(x[finite]), np.abs(y[finite])).max()))
    if not any_finite:
        return Comparison(0.0, 0.0, rtol, None, None)
    if not np.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    floor = tol.floor * max(top, scale)
    max_abs, max_rel, worst = 0.0, -1.0, ()
    for start, x, y in pairs():
        finite = np.isfinite(x) & np.isfinite(y)
        diff = np.where(finite, np.abs(x - y), 0.0)
        denominator = np.maximum(np.where(finite, np.maximum(np.abs(x), np.abs(y)), 0.0), floor)
        rel = np.divide(diff, denominator, out=np.zeros_like(diff), where=denominator > 0)
        max_abs = max(max_abs, float(diff.max()))
        peak = float(rel.max())
        if peak > max_rel:  # strictly: the first worst element wins, as with one argmax
            max_rel, worst = peak, _first(rel, start, a.shape)
    return Comparison(max_abs, max_rel, rtol, worst, None)


def vjp_scale(*gradients: np.ndarray) -> float:
    """The largest finite magnitude among the parts of one VJP (see :func:`compare`)."""
    finite = [np.abs(g[np.isfinite(g)]).max() for g in gradients if np.isfinite(g).any()]
    return float(max(finite, default=0.0))
