"""The squashes, declared once: smooth monotone maps of the reals onto a bounded interval.

sigmoid, tanh, scaled_sigmoid, scaled_tanh, softsign, soft_clip and smooth_clamp, all
invertible. The constants their formulas derive from parameters (smooth_clamp's tail width and
joins, soft_clip's shrink factor) are computed here once, by :func:`smooth_clamp_parts` and
:func:`soft_clip_shrink`: smooth_clamp's for its declaration, both implementations, both
inverses and the C kernel's caller; soft_clip's for both implementations and inverses (its
numpy references compute the factor on their own, to check it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from harness._common import LO_HI_REJECTS, errstate, lo_hi, logit_ref, quiet, sigmoid_ref
from harness.spec import (
    Family,
    Kink,
    Param,
    TechniqueSpec,
    all_of,
    bounds_fit,
    lo_below_hi,
    positive,
    scale_fits,
    width_fits,
)
from harness.tolerances import SMOOTH_CLAMP_VALUES, normwise_values, shifted_values

P = Mapping[str, Any]


class SmoothClampParts(NamedTuple):
    """smooth_clamp's tail width ``r`` and its joins ``b_lo = lo + r``, ``b_hi = hi - r``, in
    Python floats (each framework rounds them to the compute dtype as it rounds any scalar)."""

    r: float
    b_lo: float
    b_hi: float

    @property
    def steepness(self) -> float:
        """2 / r: the tails are sigmoids of ``steepness * (x - join)``."""
        return 2.0 / self.r


def smooth_clamp_parts(lo: float, hi: float, linear_fraction: float) -> SmoothClampParts:
    """The tail width ``(1 - linear_fraction) * (hi - lo) / 2`` and the two joins."""
    r = (1.0 - linear_fraction) * (hi - lo) / 2.0
    return SmoothClampParts(r, lo + r, hi - r)


@functools.lru_cache(maxsize=256)
def smooth_clamp_needs_guard(lo: float, hi: float, parts: SmoothClampParts, dtype: str) -> bool:
    """True unless ``b_lo - r >= lo`` and ``b_hi + r <= hi`` hold in ``dtype``.

    When they hold, ``m + t`` with ``m`` in [b_lo, b_hi] and ``|t| <= r`` rounds into [lo, hi]
    (rounding is monotone), so no final clamp is needed. With no linear middle the two joins
    meet, and rounded they may cross (b_lo above b_hi): a clamp to [b_lo, b_hi] then returns b_hi
    everywhere, so the lower end is checked from there.
    """
    f = np.dtype(dtype).type
    b_lo, b_hi, r = f(parts.b_lo), f(parts.b_hi), f(parts.r)
    with np.errstate(over="ignore"):
        return not (f(min(b_lo, b_hi) - r) >= f(lo) and f(b_hi + r) <= f(hi))


def soft_clip_shrink(lo: float, hi: float, c: float) -> float:
    """soft_clip's factor (hi - lo) / s(hi - lo), s(v) = c log(1 + exp(v / c)), in float64.

    One Python constant shared by both frameworks' forward and inverse.
    """
    w = hi - lo
    return w / (c * (max(w / c, 0.0) + math.log1p(math.exp(-abs(w / c)))))


SIGMOID = TechniqueSpec(
    name="sigmoid",
    bounds_doc="[0, 1]",
    family=Family.SQUASHES,
    formula="1 / (1 + exp(-x))",
    gradient_convention="y * (1 - y); no kinks",
    params=(),
    bounds_fn=lambda p: (0.0, 1.0),
    reference=lambda x, p: sigmoid_ref(x),
    inverse_reference=lambda y, p: logit_ref(y),
    monotone=True,
    invertible=True,
    notes="The open range (0, 1) is declared as the closed interval [0, 1]: it is reached in finite precision.",
)

TANH = TechniqueSpec(
    name="tanh",
    bounds_doc="[-1, 1]",
    family=Family.SQUASHES,
    formula="(exp(x) - exp(-x)) / (exp(x) + exp(-x))",
    gradient_convention="1 - y^2; no kinks",
    params=(),
    bounds_fn=lambda p: (-1.0, 1.0),
    reference=lambda x, p: np.tanh(x),
    inverse_reference=lambda y, p: quiet(np.arctanh, y),
    monotone=True,
    invertible=True,
)


def _scaled(name: str, formula: str, ref: Any, inverse_ref: Any, note: str) -> TechniqueSpec:
    return TechniqueSpec(
        name=name,
        family=Family.SQUASHES,
        formula=formula,
        bounds_doc="[lo, hi]",
        gradient_convention="smooth; no kinks",
        params=lo_hi(-1.0, 1.0),
        bounds_fn=lambda p: (p["lo"], p["hi"]),
        reference=ref,
        inverse_reference=inverse_ref,
        monotone=True,
        invertible=True,
        check_params=lo_below_hi,
        check_dtype=all_of(bounds_fit, width_fits),
        dtype_rejects=(({"lo": -3e38, "hi": 3e38}, "float32"),),
        examples=({"lo": 0.0, "hi": 5.0},),
        rejects=LO_HI_REJECTS,
        tolerances=shifted_values(),
        notes=note,
    )


SCALED_SIGMOID = _scaled(
    "scaled_sigmoid",
    "lo + (hi - lo) * sigmoid(x)",
    lambda x, p: p["lo"] + (p["hi"] - p["lo"]) * sigmoid_ref(x),
    lambda y, p: logit_ref((y - p["lo"]) / (p["hi"] - p["lo"])),
    "A final clamp guards the rounding of lo + (hi - lo) only where it could exceed hi.",
)

SCALED_TANH = _scaled(
    "scaled_tanh",
    "lo + (hi - lo) * (tanh(x) + 1) / 2",
    lambda x, p: p["lo"] + (p["hi"] - p["lo"]) * (np.tanh(x) + 1.0) / 2.0,
    lambda y, p: logit_ref((y - p["lo"]) / (p["hi"] - p["lo"])) / 2.0,
    "The squash used for continuous actions in reinforcement learning. Computed as "
    "lo + (hi - lo) * sigmoid(2x), the same function.",
)


def _softsign_ref(x: np.ndarray, p: P) -> np.ndarray:
    with errstate():
        return np.where(np.isinf(x), np.sign(x), x / (1.0 + np.abs(x)))


def _softsign_inverse_ref(y: np.ndarray, p: P) -> np.ndarray:
    with errstate():
        return np.where(np.abs(y) > 1.0, np.nan, y / (1.0 - np.abs(y)))


SOFTSIGN = TechniqueSpec(
    name="softsign",
    family=Family.SQUASHES,
    formula="x / (1 + |x|)",
    bounds_doc="[-1, 1]",
    gradient_convention="1 / (1 + |x|)^2; no kinks",
    params=(),
    bounds_fn=lambda p: (-1.0, 1.0),
    reference=_softsign_ref,
    inverse_reference=_softsign_inverse_ref,
    monotone=True,
    invertible=True,
    notes="+-inf give +-1 (the limit), not inf / inf.",
)


def _softplus_ref(v: np.ndarray, c: float) -> np.ndarray:
    with errstate():
        return c * (np.maximum(v / c, 0.0) + np.log1p(np.exp(-np.abs(v / c))))


def _soft_clip_ref(x: np.ndarray, p: P) -> np.ndarray:
    lo, hi, c = p["lo"], p["hi"], p["hinge_softness"]
    w = hi - lo
    with errstate():
        inner = w - _softplus_ref(x - lo, c)
        y = hi - _softplus_ref(inner, c) * (w / _softplus_ref(np.float64(w), c))
    return np.clip(y, lo, hi)


def _softplus_inverse_ref(u: np.ndarray, c: float) -> np.ndarray:
    """c log(exp(u / c) - 1), written u + c log(-expm1(-u / c)): -inf at 0, NaN below."""
    with errstate():
        return u + c * np.log(-np.expm1(-u / c))


def _soft_clip_inverse_ref(y: np.ndarray, p: P) -> np.ndarray:
    lo, hi, c = p["lo"], p["hi"], p["hinge_softness"]
    w = hi - lo
    # Independent of soft_clip_shrink on purpose: the reference checks the implementations' constant.
    shrink = w / _softplus_ref(np.float64(w), c)
    with errstate():
        x = lo + _softplus_inverse_ref(w - _softplus_inverse_ref((hi - y) / shrink, c), c)
    return np.where(y == lo, -np.inf, np.where(y == hi, np.inf, x))


SOFT_CLIP = TechniqueSpec(
    name="soft_clip",
    family=Family.SQUASHES,
    formula=(
        "hi - s(hi - lo - s(x - lo)) * (hi - lo) / s(hi - lo), s(v) = c log(1 + exp(v / c)), "
        "c = hinge_softness (TensorFlow Probability's SoftClip)"
    ),
    bounds_doc="[lo, hi]",
    gradient_convention="smooth; the softplus derivative is sigmoid(v / c) by declaration, also at v == 0",
    params=(
        *lo_hi(-1.0, 1.0),
        Param("hinge_softness", "float", 1.0, "softness c of both hinges", positive),
    ),
    bounds_fn=lambda p: (p["lo"], p["hi"]),
    reference=_soft_clip_ref,
    inverse_reference=_soft_clip_inverse_ref,
    monotone=True,
    invertible=True,
    check_params=lo_below_hi,
    check_dtype=all_of(
        bounds_fit, width_fits, lambda p, dtype: scale_fits("hinge_softness", p["hinge_softness"], dtype)
    ),
    dtype_rejects=(({"hinge_softness": 1e-40}, "float32"), ({"lo": -3e38, "hi": 3e38}, "float32")),
    examples=({"lo": -10.0, "hi": 10.0, "hinge_softness": 0.5}, {"lo": 0.0, "hi": 1.0, "hinge_softness": 2.0}),
    rejects=(*LO_HI_REJECTS, {"hinge_softness": 0.0}, {"hinge_softness": -1.0}),
    tolerances=shifted_values(),
    notes="softplus is written out (max(v, 0) + log1p(exp(-|v|))): PyTorch's has a threshold, JAX's none.",
)


def _parts(p: P) -> SmoothClampParts:
    return smooth_clamp_parts(p["lo"], p["hi"], p["linear_fraction"])


def _smooth_clamp_ref(x: np.ndarray, p: P) -> np.ndarray:
    r, b_lo, b_hi = _parts(p)
    with errstate():
        upper = p["hi"] - 2.0 * r * sigmoid_ref(-2.0 * (x - b_hi) / r)
        lower = p["lo"] + 2.0 * r * sigmoid_ref(2.0 * (x - b_lo) / r)
    return np.where(x > b_hi, upper, np.where(x < b_lo, lower, x))


def _smooth_clamp_inverse_ref(y: np.ndarray, p: P) -> np.ndarray:
    r, b_lo, b_hi = _parts(p)
    upper = b_hi - (r / 2.0) * logit_ref((p["hi"] - y) / (2.0 * r))
    lower = b_lo + (r / 2.0) * logit_ref((y - p["lo"]) / (2.0 * r))
    return np.where(y > b_hi, upper, np.where(y < b_lo, lower, y))


def _smooth_clamp_kinks(p: P) -> tuple[Kink, ...]:
    _, b_lo, b_hi = _parts(p)
    joins = sorted({b_lo, b_hi})
    return tuple(Kink(b, left=1.0, at=1.0, right=1.0, note="join of identity and sigmoid tail (C2)") for b in joins)


SMOOTH_CLAMP = TechniqueSpec(
    name="smooth_clamp",
    bounds_doc="[lo, hi]",
    family=Family.SQUASHES,
    formula=(
        "r = (1 - linear_fraction) * (hi - lo) / 2; x on [lo + r, hi - r]; "
        "hi - 2r * sigmoid(-2 (x - (hi - r)) / r) above; lo + 2r * sigmoid(2 (x - (lo + r)) / r) below"
    ),
    gradient_convention=(
        "1 on the linear middle; 4 s (1 - s) on the tails with s the tail's sigmoid, which is 1 at the joins "
        "and stays > 0 until s underflows (about 40 r past a join in float32)"
    ),
    params=(
        *lo_hi(-1.0, 1.0),
        Param(
            "linear_fraction",
            "float",
            0.5,
            "fraction of [lo, hi] on which the output is exactly x",
            lambda v: None if 0.0 <= v < 1.0 else "must be in [0, 1)",
        ),
    ),
    bounds_fn=lambda p: (p["lo"], p["hi"]),
    kinks_fn=_smooth_clamp_kinks,
    reference=_smooth_clamp_ref,
    inverse_reference=_smooth_clamp_inverse_ref,
    monotone=True,
    invertible=True,
    check_params=lo_below_hi,
    check_dtype=all_of(bounds_fit, lambda p, dtype: scale_fits("the tail width r", _parts(p).r, dtype)),
    dtype_rejects=(({"lo": -1e38, "hi": 3e38}, "float32"), ({"lo": 0.0, "hi": 1e-39}, "float32")),
    examples=(
        {"lo": 0.0, "hi": 1.0, "linear_fraction": 0.0},
        {"lo": -3.0, "hi": 2.0, "linear_fraction": 0.8},
    ),
    rejects=({"lo": 1.0, "hi": -1.0}, {"linear_fraction": 1.0}, {"linear_fraction": -0.1}, {"hi": math.inf}),
    tolerances=normwise_values(SMOOTH_CLAMP_VALUES),
    notes=(
        "Identity in the middle (exactly), sigmoid tails matched in value, slope and curvature at the "
        "joins. Computed as m + 2r (sigmoid(2e/r) - 1/2) with m = clamp(x, lo + r, hi - r), e = x - m: "
        "inside [lo, hi] by monotone rounding, but near a bound of 0 accurate to about ulp(r) in "
        "absolute terms rather than relatively."
    ),
)

SPECS: tuple[TechniqueSpec, ...] = (SIGMOID, TANH, SCALED_SIGMOID, SCALED_TANH, SOFTSIGN, SOFT_CLIP, SMOOTH_CLAMP)
