"""The simplex family, declared once: row-wise maps onto the probability simplex (or its log).

softmax, log_softmax and sparsemax. Rows holding an infinity take their limit and pass zero
gradient; NaN spreads along the row and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness._common import AUTOCAST_FLOAT32_ON_CUDA, errstate
from harness.spec import Family, Param, TechniqueSpec
from harness.tolerances import shifted_values

P = Mapping[str, Any]


def _axis(doc: str) -> tuple[Param]:
    return (Param("axis", "int", -1, doc),)


def _along_axis(ndim: int, p: P) -> tuple[int, ...]:
    return (p["axis"] % ndim,)


def _softmax_ref(x: np.ndarray, p: P) -> np.ndarray:
    axis = p["axis"]
    if x.shape[axis] == 0:
        return x.copy()
    m = np.max(x, axis=axis, keepdims=True)
    with errstate():
        z = np.where(np.isfinite(m), x - np.where(np.isfinite(m), m, 0.0), x)
        z = np.where(m == np.inf, np.where(x == np.inf, 0.0, -np.inf), z)
        z = np.where(m == -np.inf, 0.0, z)
        e = np.exp(z)
        return e / np.sum(e, axis=axis, keepdims=True)


SOFTMAX = TechniqueSpec(
    name="softmax",
    autocast_float32=AUTOCAST_FLOAT32_ON_CUDA,
    bounds_doc="[0, 1]",
    family=Family.SIMPLEX,
    formula="exp(x - max) / sum(exp(x - max)) along axis",
    gradient_convention=(
        "y * (g - sum(g * y)); rows holding an infinity take their limit (the +inf entries share the mass "
        "equally, an all -inf row is uniform) and pass zero gradient"
    ),
    params=_axis("the axis that sums to 1"),
    bounds_fn=lambda p: (0.0, 1.0),
    reference=_softmax_ref,
    reduction_axes=_along_axis,
    min_rank=1,
    examples=({"axis": 0},),
    notes="Low-precision inputs are computed in float32 and rounded once at the end.",
)


def _log_softmax_ref(x: np.ndarray, p: P) -> np.ndarray:
    with errstate():
        return np.log(_softmax_ref(x, p))


LOG_SOFTMAX = TechniqueSpec(
    name="log_softmax",
    autocast_float32=AUTOCAST_FLOAT32_ON_CUDA,
    family=Family.SIMPLEX,
    formula="x - max - log(sum(exp(x - max))) along axis",
    bounds_doc="[-inf, 0]",
    gradient_convention=(
        "g - softmax(x) * sum(g); rows holding an infinity take their limit (as softmax) and pass zero gradient"
    ),
    params=_axis("the axis over which exp sums to 1"),
    bounds_fn=lambda p: (-math.inf, 0.0),
    reference=_log_softmax_ref,
    reduction_axes=_along_axis,
    min_rank=1,
    examples=({"axis": 0},),
)


def _sparsemax_ref(x: np.ndarray, p: P) -> np.ndarray:
    axis = p["axis"]
    moved = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    out = np.empty_like(moved)
    for index in np.ndindex(moved.shape[:-1]):
        z = moved[index]
        if np.isnan(z).any():
            out[index] = np.nan
            continue
        if np.isposinf(z).any():
            z = np.where(np.isposinf(z), 0.0, -np.inf)
        elif np.isneginf(z).all():
            z = np.zeros_like(z)
        else:
            # Shift-invariant: relative to the row's maximum (exact), 1 is not lost beside huge values.
            z = z - np.max(z)
        zs = np.sort(z)[::-1]
        cs = np.cumsum(zs)
        k = np.arange(1, z.size + 1)
        with errstate():
            support = 1.0 + k * zs > cs
        kz = int(k[support][-1])
        tau = (cs[kz - 1] - 1.0) / kz
        out[index] = np.maximum(z - tau, 0.0)
    return np.moveaxis(out, -1, axis)


SPARSEMAX = TechniqueSpec(
    name="sparsemax",
    family=Family.SIMPLEX,
    formula="max(x - tau, 0) with tau such that the row sums to 1 (Euclidean projection onto the simplex)",
    bounds_doc="[0, 1]",
    gradient_convention=(
        "on the support S (outputs > 0): g - mean_S(g), 0 off it; an input exactly at the threshold is off the "
        "support; rows holding an infinity take their limit and pass zero gradient"
    ),
    params=_axis("the axis that sums to 1"),
    bounds_fn=lambda p: (0.0, 1.0),
    reference=_sparsemax_ref,
    reduction_axes=_along_axis,
    min_rank=1,
    examples=({"axis": 0},),
    tolerances=shifted_values(),
    notes="Martins and Astudillo (2016). Low-precision inputs are computed in float32.",
)

SPECS: tuple[TechniqueSpec, ...] = (SOFTMAX, LOG_SOFTMAX, SPARSEMAX)
