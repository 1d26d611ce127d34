"""The clamps, declared once: piecewise linear techniques whose output saturates at bounds.

clamp, hardtanh, relu6, bounded_relu, hardsigmoid, leaky_clamp and ste_clamp. Each kink's
gradient is declared here; ``impl_torch/clamps.py`` and ``impl_jax/clamps.py`` honour it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from harness._common import CLAMP_CONVENTION, LO_HI_REJECTS, clamp_kinks, lo_hi
from harness.spec import Family, Kink, Param, TechniqueSpec, bounds_fit, lo_below_hi

P = Mapping[str, Any]

CLAMP = TechniqueSpec(
    name="clamp",
    bounds_doc="[lo, hi]",
    family=Family.CLAMPS,
    formula="min(max(x, lo), hi)",
    gradient_convention=CLAMP_CONVENTION,
    params=lo_hi(-1.0, 1.0),
    bounds_fn=lambda p: (p["lo"], p["hi"]),
    kinks_fn=lambda p: clamp_kinks(p["lo"], p["hi"]),
    reference=lambda x, p: np.clip(x, p["lo"], p["hi"]),
    monotone=True,
    check_params=lo_below_hi,
    check_dtype=bounds_fit,
    dtype_rejects=(({"lo": -1e5, "hi": 1e5}, "float16"), ({"lo": -1e39, "hi": 1e39}, "float32")),
    # The second: float32 values (0.1 and 0.7 rounded) that float16 and bfloat16 cannot hold.
    examples=({"lo": -0.5, "hi": 2.0}, {"lo": 0.10000000149011612, "hi": 0.699999988079071}),
    rejects=({"lo": 1.0, "hi": 1.0}, {"lo": -math.inf}, {"hi": math.nan}),
)

# The same formula, bounds and kinks as clamp, under the activation's name.
HARDTANH = replace(
    CLAMP,
    name="hardtanh",
    dtype_rejects=(({"lo": -1e5, "hi": 1e5}, "float16"),),
    examples=({"lo": 0.0, "hi": 2.0},),
    rejects=LO_HI_REJECTS,
    notes="PyTorch's hardtanh gives 0 at the bounds, jax.nn.hard_tanh 1: this one gives 0 in both.",
)

RELU6 = TechniqueSpec(
    name="relu6",
    family=Family.CLAMPS,
    formula="min(max(x, 0), 6)",
    bounds_doc="[0, 6]",
    gradient_convention="1 strictly inside (0, 6), 0 outside and at 0 and 6",
    params=(),
    bounds_fn=lambda p: (0.0, 6.0),
    kinks_fn=lambda p: clamp_kinks(0.0, 6.0),
    reference=lambda x, p: np.clip(x, 0.0, 6.0),
    monotone=True,
)


def _bounded_relu_check(p: P) -> str | None:
    if p["hi"] <= 0:
        return f"hi must be > 0 (relu's output is >= 0, so hi <= 0 gives a constant), got hi={p['hi']!r}"
    return lo_below_hi(p)


BOUNDED_RELU = TechniqueSpec(
    name="bounded_relu",
    bounds_doc="[max(lo, 0), hi]",
    family=Family.CLAMPS,
    formula="clamp(relu(x), lo, hi) == clamp(x, max(lo, 0), hi), computed in one pass",
    gradient_convention=(
        "1 strictly inside (max(lo, 0), hi), 0 outside; at x == max(lo, 0) or x == hi the gradient is 0 "
        "(the kink belongs to the saturated piece, as relu(0) does in both frameworks)"
    ),
    params=lo_hi(0.0, 1.0),
    bounds_fn=lambda p: (max(p["lo"], 0.0), p["hi"]),
    kinks_fn=lambda p: (
        Kink(max(p["lo"], 0.0), left=0.0, at=0.0, right=1.0, note="lower saturation (relu's kink when lo <= 0)"),
        Kink(p["hi"], left=1.0, at=0.0, right=0.0, note="upper saturation"),
    ),
    reference=lambda x, p: np.minimum(np.maximum(np.maximum(x, 0.0), p["lo"]), p["hi"]),
    monotone=True,
    check_params=_bounded_relu_check,
    check_dtype=bounds_fit,
    dtype_rejects=(({"lo": 0.0, "hi": 1e5}, "float16"),),
    examples=({"lo": -0.5, "hi": 2.0}, {"lo": 0.25, "hi": 0.75}),
    rejects=({"lo": 1.0, "hi": 1.0}, {"lo": 2.0, "hi": 1.0}, {"hi": -1.0}, {"hi": math.inf}, {"lo": math.nan}),
)

HARDSIGMOID = TechniqueSpec(
    name="hardsigmoid",
    family=Family.CLAMPS,
    formula="relu6(x + 3) / 6",
    bounds_doc="[0, 1]",
    gradient_convention="1/6 strictly inside (-3, 3), 0 outside and at -3 and 3",
    params=(),
    bounds_fn=lambda p: (0.0, 1.0),
    kinks_fn=lambda p: clamp_kinks(-3.0, 3.0, inside=1.0 / 6.0),
    reference=lambda x, p: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    monotone=True,
    notes="Low-precision inputs are computed in float32 and rounded once.",
)


def _slope(v: float) -> str | None:
    return None if 0.0 < v <= 1.0 else "must be in (0, 1] (slope 0 is clamp)"


def _leaky_clamp_ref(x: np.ndarray, p: P) -> np.ndarray:
    m = np.clip(x, p["lo"], p["hi"])
    return m + p["slope"] * (x - m)


LEAKY_CLAMP = TechniqueSpec(
    name="leaky_clamp",
    family=Family.CLAMPS,
    formula="m + slope * (x - m), m = min(max(x, lo), hi): x inside [lo, hi], slope outside",
    bounds_doc="unbounded (slope > 0)",
    gradient_convention="1 strictly inside (lo, hi), slope outside and at lo and hi (the saturated piece)",
    params=(*lo_hi(-1.0, 1.0), Param("slope", "float", 0.01, "gradient outside [lo, hi]", _slope)),
    bounds_fn=lambda p: (-math.inf, math.inf),
    kinks_fn=lambda p: (
        Kink(p["lo"], left=p["slope"], at=p["slope"], right=1.0, note="lower hinge"),
        Kink(p["hi"], left=1.0, at=p["slope"], right=p["slope"], note="upper hinge"),
    ),
    reference=_leaky_clamp_ref,
    monotone=True,
    check_params=lo_below_hi,
    check_dtype=bounds_fit,
    dtype_rejects=(({"lo": -1e5, "hi": 1e5}, "float16"),),
    # The second: near float16's largest value, where x - clamp(x) overflows float16 but the
    # output does not (computed in float32).
    # A slope from 1/2 on (where ATen's lerp switches form) and float16's edge.
    examples=({"lo": 0.0, "hi": 1.0, "slope": 0.75}, {"lo": -65504.0, "hi": -65000.0}),
    rejects=(*LO_HI_REJECTS, {"slope": 0.0}, {"slope": -0.1}, {"slope": 1.5}),
)

STE_CLAMP = TechniqueSpec(
    name="ste_clamp",
    family=Family.CLAMPS,
    formula="forward min(max(x, lo), hi); gradient 1 everywhere (straight-through estimator)",
    bounds_doc="[lo, hi]",
    gradient_convention="1 everywhere, at and beyond the bounds included",
    params=lo_hi(-1.0, 1.0),
    bounds_fn=lambda p: (p["lo"], p["hi"]),
    kinks_fn=lambda p: (Kink(p["lo"], 1.0, 1.0, 1.0), Kink(p["hi"], 1.0, 1.0, 1.0)),
    reference=lambda x, p: np.clip(x, p["lo"], p["hi"]),
    vjp_reference=lambda x, cotangent, p: cotangent,
    monotone=True,
    check_params=lo_below_hi,
    check_dtype=bounds_fit,
    dtype_rejects=(({"lo": -1e5, "hi": 1e5}, "float16"),),
    rejects=LO_HI_REJECTS,
)

SPECS: tuple[TechniqueSpec, ...] = (CLAMP, HARDTANH, RELU6, BOUNDED_RELU, HARDSIGMOID, LEAKY_CLAMP, STE_CLAMP)
