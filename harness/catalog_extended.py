"""The extended catalogue: more bounded activations, output constraints and RMSNorm.

Same contract as harness/catalog.py: one declaration each, an independent float64 numpy
reference, kinks with their gradients, examples and rejects that drive the generic tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.catalog import CLAMP_CONVENTION, _errstate, _lo_hi, _logit_ref, _sigmoid_ref, _softmax_ref
from harness.numerics import compute_dtype
from harness.registry import declare
from harness.sampling import machine_epsilon
from harness.spec import (
    Kink,
    Param,
    TechniqueSpec,
    all_of,
    bounds_fit,
    lo_below_hi,
    module_params,
    positive,
    scale_fits,
    width_fits,
)

P = Mapping[str, Any]
_LO_HI_REJECTS = ({"lo": 1.0, "hi": 1.0}, {"lo": 2.0, "hi": -2.0}, {"hi": math.inf}, {"lo": math.nan})


def _clamp_kinks(lo: float, hi: float, inside: float = 1.0) -> tuple[Kink, ...]:
    return (
        Kink(lo, left=0.0, at=0.0, right=inside, note="lower saturation"),
        Kink(hi, left=inside, at=0.0, right=0.0, note="upper saturation"),
    )


declare(
    TechniqueSpec(
        name="hardtanh",
        family="bounded activation",
        formula="min(max(x, lo), hi)",
        bounds_doc="[lo, hi]",
        gradient_convention=CLAMP_CONVENTION,
        params=_lo_hi(-1.0, 1.0),
        bounds_fn=lambda p: (p["lo"], p["hi"]),
        kinks_fn=lambda p: _clamp_kinks(p["lo"], p["hi"]),
        reference=lambda x, p: np.clip(x, p["lo"], p["hi"]),
        monotone=True,
        check_params=lo_below_hi,
        check_dtype=bounds_fit,
        dtype_rejects=(({"lo": -1e5, "hi": 1e5}, "float16"),),
        examples=({"lo": 0.0, "hi": 2.0},),
        rejects=_LO_HI_REJECTS,
        notes="PyTorch's hardtanh gives 0 at the bounds, jax.nn.hard_tanh 1: this one gives 0 in both.",
    )
)

declare(
    TechniqueSpec(
        name="relu6",
        family="bounded activation",
        formula="min(max(x, 0), 6)",
        bounds_doc="[0, 6]",
        gradient_convention="1 strictly inside (0, 6), 0 outside and at 0 and 6",
        params=(),
        bounds_fn=lambda p: (0.0, 6.0),
        kinks_fn=lambda p: _clamp_kinks(0.0, 6.0),
        reference=lambda x, p: np.clip(x, 0.0, 6.0),
        monotone=True,
    )
)

declare(
    TechniqueSpec(
        name="hardsigmoid",
        family="bounded activation",
        formula="relu6(x + 3) / 6",
        bounds_doc="[0, 1]",
        gradient_convention="1/6 strictly inside (-3, 3), 0 outside and at -3 and 3",
        params=(),
        bounds_fn=lambda p: (0.0, 1.0),
        kinks_fn=lambda p: (
            Kink(-3.0, left=0.0, at=0.0, right=1.0 / 6.0, note="lower saturation"),
            Kink(3.0, left=1.0 / 6.0, at=0.0, right=0.0, note="upper saturation"),
        ),
        reference=lambda x, p: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
        monotone=True,
        notes="Low-precision inputs are computed in float32 and rounded once.",
    )
)


def _softsign_ref(x: np.ndarray, p: P) -> np.ndarray:
    with _errstate():
        return np.where(np.isinf(x), np.sign(x), x / (1.0 + np.abs(x)))


def _softsign_inverse_ref(y: np.ndarray) -> np.ndarray:
    with _errstate():
        return np.where(np.abs(y) > 1.0, np.nan, y / (1.0 - np.abs(y)))


declare(
    TechniqueSpec(
        name="softsign",
        family="bounded activation",
        formula="x / (1 + |x|)",
        bounds_doc="[-1, 1]",
        gradient_convention="1 / (1 + |x|)^2; no kinks",
        params=(),
        bounds_fn=lambda p: (-1.0, 1.0),
        reference=_softsign_ref,
        inverse_reference=lambda y, p: _softsign_inverse_ref(y),
        monotone=True,
        invertible=True,
        notes="+-inf give +-1 (the limit), not inf / inf.",
    )
)


def _scaled(name: str, formula: str, ref: Any, inverse_ref: Any, note: str) -> TechniqueSpec:
    return TechniqueSpec(
        name=name,
        family="bounded activation",
        formula=formula,
        bounds_doc="[lo, hi]",
        gradient_convention="smooth; no kinks",
        params=_lo_hi(-1.0, 1.0),
        bounds_fn=lambda p: (p["lo"], p["hi"]),
        reference=ref,
        inverse_reference=inverse_ref,
        monotone=True,
        invertible=True,
        check_params=lo_below_hi,
        check_dtype=all_of(bounds_fit, width_fits),
        dtype_rejects=(({"lo": -3e38, "hi": 3e38}, "float32"),),
        examples=({"lo": 0.0, "hi": 5.0},),
        rejects=_LO_HI_REJECTS,
        notes=note,
    )


declare(
    _scaled(
        "scaled_sigmoid",
        "lo + (hi - lo) * sigmoid(x)",
        lambda x, p: p["lo"] + (p["hi"] - p["lo"]) * _sigmoid_ref(x),
        lambda y, p: _logit_ref((y - p["lo"]) / (p["hi"] - p["lo"])),
        "A final clamp guards the rounding of lo + (hi - lo) only where it could exceed hi.",
    )
)
declare(
    _scaled(
        "scaled_tanh",
        "lo + (hi - lo) * (tanh(x) + 1) / 2",
        lambda x, p: p["lo"] + (p["hi"] - p["lo"]) * (np.tanh(x) + 1.0) / 2.0,
        lambda y, p: _logit_ref((y - p["lo"]) / (p["hi"] - p["lo"])) / 2.0,
        "The squash used for continuous actions in reinforcement learning. Computed as "
        "lo + (hi - lo) * sigmoid(2x), the same function.",
    )
)


def _softplus_ref(v: np.ndarray, c: float) -> np.ndarray:
    with _errstate():
        return c * (np.maximum(v / c, 0.0) + np.log1p(np.exp(-np.abs(v / c))))


def _soft_clip_ref(x: np.ndarray, p: P) -> np.ndarray:
    lo, hi, c = p["lo"], p["hi"], p["hinge_softness"]
    w = hi - lo
    with _errstate():
        inner = w - _softplus_ref(x - lo, c)
        y = hi - _softplus_ref(inner, c) * (w / _softplus_ref(np.float64(w), c))
    return np.clip(y, lo, hi)


def _softplus_inverse_ref(u: np.ndarray, c: float) -> np.ndarray:
    """c log(exp(u / c) - 1), written u + c log(-expm1(-u / c)): -inf at 0, NaN below."""
    with _errstate():
        return u + c * np.log(-np.expm1(-u / c))


def _soft_clip_inverse_ref(y: np.ndarray, p: P) -> np.ndarray:
    lo, hi, c = p["lo"], p["hi"], p["hinge_softness"]
    w = hi - lo
    shrink = w / _softplus_ref(np.float64(w), c)
    with _errstate():
        x = lo + _softplus_inverse_ref(w - _softplus_inverse_ref((hi - y) / shrink, c), c)
    return np.where(y == lo, -np.inf, np.where(y == hi, np.inf, x))


declare(
    TechniqueSpec(
        name="soft_clip",
        family="bounded activation",
        formula=(
            "hi - s(hi - lo - s(x - lo)) * (hi - lo) / s(hi - lo), s(v) = c log(1 + exp(v / c)), "
            "c = hinge_softness (TensorFlow Probability's SoftClip)"
        ),
        bounds_doc="[lo, hi]",
        gradient_convention="smooth; the softplus derivative is sigmoid(v / c) by declaration, also at v == 0",
        params=(
            *_lo_hi(-1.0, 1.0),
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
        rejects=(*_LO_HI_REJECTS, {"hinge_softness": 0.0}, {"hinge_softness": -1.0}),
        notes="softplus is written out (max(v, 0) + log1p(exp(-|v|))): PyTorch's has a threshold, JAX's none.",
    )
)

declare(
    TechniqueSpec(
        name="ste_clamp",
        family="output constraint",
        formula="forward min(max(x, lo), hi); gradient 1 everywhere (straight-through estimator)",
        bounds_doc="[lo, hi]",
        gradient_convention="1 everywhere, at and beyond the bounds included",
        params=_lo_hi(-1.0, 1.0),
        bounds_fn=lambda p: (p["lo"], p["hi"]),
        kinks_fn=lambda p: (Kink(p["lo"], 1.0, 1.0, 1.0), Kink(p["hi"], 1.0, 1.0, 1.0)),
        reference=lambda x, p: np.clip(x, p["lo"], p["hi"]),
        vjp_reference=lambda x, cotangent, p: cotangent,
        monotone=True,
        check_params=lo_below_hi,
        check_dtype=bounds_fit,
        dtype_rejects=(({"lo": -1e5, "hi": 1e5}, "float16"),),
        rejects=_LO_HI_REJECTS,
    )
)


def _slope(v: float) -> str | None:
    return None if 0.0 < v <= 1.0 else "must be in (0, 1] (slope 0 is clamp)"


declare(
    TechniqueSpec(
        name="leaky_clamp",
        family="output constraint",
        formula="m + slope * (x - m), m = min(max(x, lo), hi): x inside [lo, hi], slope outside",
        bounds_doc="unbounded (slope > 0)",
        gradient_convention="1 strictly inside (lo, hi), slope outside and at lo and hi (the saturated piece)",
        params=(*_lo_hi(-1.0, 1.0), Param("slope", "float", 0.01, "gradient outside [lo, hi]", _slope)),
        bounds_fn=lambda p: (-math.inf, math.inf),
        kinks_fn=lambda p: (
            Kink(p["lo"], left=p["slope"], at=p["slope"], right=1.0, note="lower hinge"),
            Kink(p["hi"], left=1.0, at=p["slope"], right=p["slope"], note="upper hinge"),
        ),
        reference=lambda x, p: np.clip(x, p["lo"], p["hi"]) + p["slope"] * (x - np.clip(x, p["lo"], p["hi"])),
        monotone=True,
        check_params=lo_below_hi,
        check_dtype=bounds_fit,
        dtype_rejects=(({"lo": -1e5, "hi": 1e5}, "float16"),),
        # The second: near float16's largest value, where x - clamp(x) overflows float16 but the
        # output does not (computed in float32).
        examples=({"lo": 0.0, "hi": 1.0, "slope": 0.25}, {"lo": -65504.0, "hi": -65000.0}),
        rejects=(*_LO_HI_REJECTS, {"slope": 0.0}, {"slope": -0.1}, {"slope": 1.5}),
    )
)


def _log_softmax_ref(x: np.ndarray, p: P) -> np.ndarray:
    with _errstate():
        return np.log(_softmax_ref(x, p))


declare(
    TechniqueSpec(
        name="log_softmax",
        family="output constraint",
        formula="x - max - log(sum(exp(x - max))) along axis",
        bounds_doc="[-inf, 0]",
        gradient_convention=(
            "g - softmax(x) * sum(g); rows holding an infinity take their limit (as softmax) and pass zero gradient"
        ),
        params=(Param("axis", "int", -1, "the axis over which exp sums to 1"),),
        bounds_fn=lambda p: (-math.inf, 0.0),
        reference=_log_softmax_ref,
        reduction_axes=lambda ndim, p: (p["axis"] % ndim,),
        min_rank=1,
        examples=({"axis": 0},),
    )
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
        zs = np.sort(z)[::-1]
        cs = np.cumsum(zs)
        k = np.arange(1, z.size + 1)
        with _errstate():
            support = 1.0 + k * zs > cs
        kz = int(k[support][-1])
        tau = (cs[kz - 1] - 1.0) / kz
        out[index] = np.maximum(z - tau, 0.0)
    return np.moveaxis(out, -1, axis)


declare(
    TechniqueSpec(
        name="sparsemax",
        family="output constraint",
        formula="max(x - tau, 0) with tau such that the row sums to 1 (Euclidean projection onto the simplex)",
        bounds_doc="[0, 1]",
        gradient_convention=(
            "on the support S (outputs > 0): g - mean_S(g), 0 off it; an input exactly at the threshold is off the "
            "support; rows holding an infinity take their limit and pass zero gradient"
        ),
        params=(Param("axis", "int", -1, "the axis that sums to 1"),),
        bounds_fn=lambda p: (0.0, 1.0),
        reference=_sparsemax_ref,
        reduction_axes=lambda ndim, p: (p["axis"] % ndim,),
        min_rank=1,
        examples=({"axis": 0},),
        notes="Martins and Astudillo (2016). Low-precision inputs are computed in float32.",
    )
)


def _optional_positive(v: float | None) -> str | None:
    return None if v is None else positive(v)


def _rms_norm_ref(x: np.ndarray, p: P) -> np.ndarray:
    eps = p["eps"] if p["eps"] is not None else machine_epsilon(compute_dtype(p["dtype"]))
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def _rms_norm_bounds(p: P) -> tuple[float, float]:
    if p["elementwise_affine"] or p["num_features"] is None:
        return (-math.inf, math.inf)
    b = math.sqrt(p["num_features"])  # one non-zero entry: x / sqrt(x^2 / n)
    return (-b, b)


declare(
    TechniqueSpec(
        name="rms_norm",
        family="normalization",
        formula="x / sqrt(mean(x^2) + eps) * weight over the last axis",
        bounds_doc="unbounded; [-sqrt(n), sqrt(n)] without affine",
        gradient_convention="smooth; no kinks",
        params=module_params(
            (
                Param(
                    "eps",
                    "optional_float",
                    None,
                    "added to the mean square; None means the machine epsilon of the compute dtype (float32 for "
                    "float16 and bfloat16 inputs), PyTorch's meaning",
                    _optional_positive,
                ),
                Param("elementwise_affine", "bool", True, "learn weight (init 1)"),
            )
        ),
        bounds_fn=_rms_norm_bounds,
        reference=_rms_norm_ref,
        reduction_axes=lambda ndim, p: (ndim - 1,),
        min_rank=1,
        feature_axis=-1,
        examples=({"elementwise_affine": False}, {"eps": 1e-3}),
        rejects=({"eps": 0.0}, {"eps": -1.0}, {"num_features": 0}),
        notes="Scaled by a power of two first, as layer_norm; statistics in float32 for low-precision inputs.",
    )
)
