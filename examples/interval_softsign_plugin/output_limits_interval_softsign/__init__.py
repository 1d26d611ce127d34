"""Declares ``interval_softsign``: lo + (hi - lo) (1 + x / (1 + |x|)) / 2, softsign rescaled
onto [lo, hi].

An example of a plugin with parameters: each is a ``Param`` (name, kind, default, what it means,
and a check that says what is allowed), the pair is checked together by ``check_params``, the
bounds follow the parameters, and the values, a bound plus or minus a term of the interval's
size, are compared norm-wise in float32 and below (``tolerances``, with the reason the built-in
techniques of that shape give). Imports no framework.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

import harness
from harness.tolerances import shifted_values


def _finite(value: float) -> str | None:
    # A Param check returns what is allowed when the value is not, else None.
    return None if math.isfinite(value) else "must be a finite number"


def _ordered(p: Mapping[str, Any]) -> str | None:
    return None if p["lo"] < p["hi"] else f"lo must be < hi, got lo={p['lo']}, hi={p['hi']}"


def _reference(x: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    # The independent float64 formula the generic checks compare both implementations against;
    # an infinite x takes the limit, a bound.
    with np.errstate(invalid="ignore"):
        s = np.where(np.isinf(x), np.sign(x), x / (1.0 + np.abs(x)))
    return p["lo"] + (p["hi"] - p["lo"]) * (1.0 + s) / 2.0


harness.declare(
    harness.TechniqueSpec(
        name="interval_softsign",
        family="bounded activation",
        formula="lo + (hi - lo) * (1 + x / (1 + |x|)) / 2",
        bounds_doc="[lo, hi]",
        gradient_convention="(hi - lo) / (2 (1 + |x|)^2); no kinks",
        params=(
            harness.Param("lo", "float", -1.0, "the lower bound", _finite),
            harness.Param("hi", "float", 1.0, "the upper bound", _finite),
        ),
        bounds_fn=lambda p: (p["lo"], p["hi"]),
        reference=_reference,
        monotone=True,
        check_params=_ordered,
        examples=({"lo": 0.0, "hi": 6.0},),
        rejects=({"lo": 1.0, "hi": 1.0}, {"lo": 2.0, "hi": 1.0}, {"hi": math.inf}),
        tolerances=shifted_values(),
    )
)
