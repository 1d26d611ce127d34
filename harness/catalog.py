"""The built-in techniques, declared once (see :class:`harness.spec.TechniqueSpec`).

Each ``reference`` is an independent float64 numpy transcription of ``formula``: tests
compare both implementations with it, so the implementations are never checked only against
each other. References of modules with learned parameters assume freshly built modules
(weight 1, bias 0) in training mode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.registry import declare
from harness.spec import (
    Kink,
    Param,
    TechniqueSpec,
    all_of,
    bounds_fit,
    finite,
    lo_below_hi,
    module_params,
    positive,
    scale_fits,
)

P = Mapping[str, Any]

CLAMP_CONVENTION = (
    "1 strictly inside (lo, hi), 0 outside; at x == lo or x == hi the gradient is 0 "
    "(the kink belongs to the saturated piece, as relu(0) does in both frameworks)"
)


def _lo_hi(lo: float, hi: float) -> tuple[Param, Param]:
    return (
        Param("lo", "float", lo, "lower bound of the output", finite),
        Param("hi", "float", hi, "upper bound of the output", finite),
    )


def _errstate() -> Any:
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def _errstate_call(fn: Any, *args: Any) -> np.ndarray:
    with _errstate():
        return fn(*args)


# --- bounded activations -------------------------------------------------------------------


def _sigmoid_ref(x: np.ndarray) -> np.ndarray:
    with _errstate():
        return 1.0 / (1.0 + np.exp(-x))


def _logit_ref(u: np.ndarray) -> np.ndarray:
    """log(u / (1 - u)): -inf at 0, inf at 1, NaN outside [0, 1]."""
    with _errstate():
        return np.log(u) - np.log1p(-u)


declare(
    TechniqueSpec(
        name="sigmoid",
        bounds_doc="[0, 1]",
        family="bounded activation",
        formula="1 / (1 + exp(-x))",
        gradient_convention="y * (1 - y); no kinks",
        params=(),
        bounds_fn=lambda p: (0.0, 1.0),
        reference=lambda x, p: _sigmoid_ref(x),
        inverse_reference=lambda y, p: _logit_ref(y),
        monotone=True,
        invertible=True,
        notes="The open range (0, 1) is declared as the closed interval [0, 1]: it is reached in finite precision.",
    )
)

declare(
    TechniqueSpec(
        name="tanh",
        bounds_doc="[-1, 1]",
        family="bounded activation",
        formula="(exp(x) - exp(-x)) / (exp(x) + exp(-x))",
        gradient_convention="1 - y^2; no kinks",
        params=(),
        bounds_fn=lambda p: (-1.0, 1.0),
        reference=lambda x, p: np.tanh(x),
        inverse_reference=lambda y, p: _errstate_call(np.arctanh, y),
        monotone=True,
        invertible=True,
    )
)


def _bounded_relu_check(p: P) -> str | None:
    if p["hi"] <= 0:
        return f"hi must be > 0 (relu's output is >= 0, so hi <= 0 gives a constant), got hi={p['hi']!r}"
    return lo_below_hi(p)


declare(
    TechniqueSpec(
        name="bounded_relu",
        bounds_doc="[max(lo, 0), hi]",
        family="bounded activation",
        formula="clamp(relu(x), lo, hi) == clamp(x, max(lo, 0), hi), computed in one pass",
        gradient_convention=(
            "1 strictly inside (max(lo, 0), hi), 0 outside; at x == max(lo, 0) or x == hi the gradient is 0 "
            "(the kink belongs to the saturated piece, as relu(0) does in both frameworks)"
        ),
        params=_lo_hi(0.0, 1.0),
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
)


def _smooth_clamp_parts(p: P) -> tuple[float, float, float]:
    """Tail width r and the two joins b_lo = lo + r, b_hi = hi - r."""
    r = (1.0 - p["linear_fraction"]) * (p["hi"] - p["lo"]) / 2.0
    return r, p["lo"] + r, p["hi"] - r


def _smooth_clamp_ref(x: np.ndarray, p: P) -> np.ndarray:
    r, b_lo, b_hi = _smooth_clamp_parts(p)
    with _errstate():
        upper = p["hi"] - 2.0 * r * _sigmoid_ref(-2.0 * (x - b_hi) / r)
        lower = p["lo"] + 2.0 * r * _sigmoid_ref(2.0 * (x - b_lo) / r)
    return np.where(x > b_hi, upper, np.where(x < b_lo, lower, x))


def _smooth_clamp_inverse_ref(y: np.ndarray, p: P) -> np.ndarray:
    r, b_lo, b_hi = _smooth_clamp_parts(p)
    upper = b_hi - (r / 2.0) * _logit_ref((p["hi"] - y) / (2.0 * r))
    lower = b_lo + (r / 2.0) * _logit_ref((y - p["lo"]) / (2.0 * r))
    return np.where(y > b_hi, upper, np.where(y < b_lo, lower, y))


def _smooth_clamp_kinks(p: P) -> tuple[Kink, ...]:
    _, b_lo, b_hi = _smooth_clamp_parts(p)
    joins = sorted({b_lo, b_hi})
    return tuple(Kink(b, left=1.0, at=1.0, right=1.0, note="join of identity and sigmoid tail (C2)") for b in joins)


declare(
    TechniqueSpec(
        name="smooth_clamp",
        bounds_doc="[lo, hi]",
        family="bounded activation",
        formula=(
            "r = (1 - linear_fraction) * (hi - lo) / 2; x on [lo + r, hi - r]; "
            "hi - 2r * sigmoid(-2 (x - (hi - r)) / r) above; lo + 2r * sigmoid(2 (x - (lo + r)) / r) below"
        ),
        gradient_convention=(
            "1 on the linear middle; 4 s (1 - s) on the tails with s the tail's sigmoid, which is 1 at the joins "
            "and stays > 0 until s underflows (about 40 r past a join in float32)"
        ),
        params=(
            *_lo_hi(-1.0, 1.0),
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
        check_dtype=all_of(
            bounds_fit, lambda p, dtype: scale_fits("the tail width r", _smooth_clamp_parts(p)[0], dtype)
        ),
        dtype_rejects=(({"lo": -1e38, "hi": 3e38}, "float32"), ({"lo": 0.0, "hi": 1e-39}, "float32")),
        examples=(
            {"lo": 0.0, "hi": 1.0, "linear_fraction": 0.0},
            {"lo": -3.0, "hi": 2.0, "linear_fraction": 0.8},
        ),
        rejects=({"lo": 1.0, "hi": -1.0}, {"linear_fraction": 1.0}, {"linear_fraction": -0.1}, {"hi": math.inf}),
        notes=(
            "Identity in the middle (exactly), sigmoid tails matched in value, slope and curvature at the "
            "joins. Computed as m + 2r (sigmoid(2e/r) - 1/2) with m = clamp(x, lo + r, hi - r), e = x - m: "
            "inside [lo, hi] by monotone rounding, but near a bound of 0 accurate to about ulp(r) in "
            "absolute terms rather than relatively."
        ),
    )
)

# --- output-layer constraints --------------------------------------------------------------


def _softmax_ref(x: np.ndarray, p: P) -> np.ndarray:
    axis = p["axis"]
    if x.shape[axis] == 0:
        return x.copy()
    m = np.max(x, axis=axis, keepdims=True)
    with _errstate():
        z = np.where(np.isfinite(m), x - np.where(np.isfinite(m), m, 0.0), x)
        z = np.where(m == np.inf, np.where(x == np.inf, 0.0, -np.inf), z)
        z = np.where(m == -np.inf, 0.0, z)
        e = np.exp(z)
        return e / np.sum(e, axis=axis, keepdims=True)


declare(
    TechniqueSpec(
        name="softmax",
        bounds_doc="[0, 1]",
        family="output constraint",
        formula="exp(x - max) / sum(exp(x - max)) along axis",
        gradient_convention=(
            "y * (g - sum(g * y)); rows holding an infinity take their limit (the +inf entries share the mass "
            "equally, an all -inf row is uniform) and pass zero gradient"
        ),
        params=(Param("axis", "int", -1, "the axis that sums to 1"),),
        bounds_fn=lambda p: (0.0, 1.0),
        reference=_softmax_ref,
        reduction_axes=lambda ndim, p: (p["axis"] % ndim,),
        min_rank=1,
        examples=({"axis": 0},),
        notes="Low-precision inputs are computed in float32 and rounded once at the end.",
    )
)

declare(
    TechniqueSpec(
        name="clamp",
        bounds_doc="[lo, hi]",
        family="output constraint",
        formula="min(max(x, lo), hi)",
        gradient_convention=CLAMP_CONVENTION,
        params=_lo_hi(-1.0, 1.0),
        bounds_fn=lambda p: (p["lo"], p["hi"]),
        kinks_fn=lambda p: (
            Kink(p["lo"], left=0.0, at=0.0, right=1.0, note="lower saturation"),
            Kink(p["hi"], left=1.0, at=0.0, right=0.0, note="upper saturation"),
        ),
        reference=lambda x, p: np.clip(x, p["lo"], p["hi"]),
        monotone=True,
        check_params=lo_below_hi,
        check_dtype=bounds_fit,
        dtype_rejects=(({"lo": -1e5, "hi": 1e5}, "float16"), ({"lo": -1e39, "hi": 1e39}, "float32")),
        # The second: float32 values (0.1 and 0.7 rounded) that float16 and bfloat16 cannot hold.
        examples=({"lo": -0.5, "hi": 2.0}, {"lo": 0.10000000149011612, "hi": 0.699999988079071}),
        rejects=({"lo": 1.0, "hi": 1.0}, {"lo": -math.inf}, {"hi": math.nan}),
    )
)

# --- normalization -------------------------------------------------------------------------


def _standardize_ref(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def _layer_norm_bounds(p: P) -> tuple[float, float]:
    if p["elementwise_affine"] or p["num_features"] is None:
        return (-math.inf, math.inf)
    # |x_i - mean| <= sqrt(n - 1) * std for the biased std; eps > 0 keeps it strictly inside.
    b = math.sqrt(p["num_features"] - 1)
    return (-b, b)


declare(
    TechniqueSpec(
        name="layer_norm",
        bounds_doc="unbounded; [-sqrt(n-1), sqrt(n-1)] without affine",
        family="normalization",
        formula="(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance, two-pass)",
        gradient_convention="smooth; no kinks",
        params=module_params(
            (
                Param("eps", "float", 1e-5, "added to the variance (PyTorch's default 1e-5)", positive),
                Param("elementwise_affine", "bool", True, "learn weight (init 1) and bias (init 0)"),
            )
        ),
        bounds_fn=_layer_norm_bounds,
        reference=lambda x, p: _standardize_ref(x, (-1,), p["eps"]),
        reduction_axes=lambda ndim, p: (ndim - 1,),
        min_rank=1,
        feature_axis=-1,
        examples=({"elementwise_affine": False}, {"eps": 1e-3}),
        rejects=({"eps": 0.0}, {"eps": -1e-5}, {"eps": math.inf}, {"num_features": 0}, {"dtype": "int32"}),
        notes=(
            "Rows are scaled by a power of two before the statistics (exact), so the largest finite inputs "
            "do not overflow; a row holding an infinity takes its limit (the infinite entries at +-1 before "
            "the affine step). Low-precision inputs are computed in float32."
        ),
    )
)


def _momentum(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else "must be in [0, 1] (the weight of the new batch, as in PyTorch)"


declare(
    TechniqueSpec(
        name="batch_norm",
        bounds_doc="unbounded (affine)",
        family="normalization",
        formula=(
            "training: (x - mean_b) / sqrt(var_b + eps) * weight + bias over all axes but 1; "
            "running = (1 - momentum) * running + momentum * batch (variance unbiased); "
            "eval: (x - running_mean) / sqrt(running_var + eps) * weight + bias"
        ),
        gradient_convention="smooth; no kinks",
        params=module_params(
            (
                Param("eps", "float", 1e-5, "added to the variance (PyTorch's default 1e-5)", positive),
                Param("momentum", "float", 0.1, "weight of the new batch in the running statistics", _momentum),
            )
        ),
        bounds_fn=lambda p: (-math.inf, math.inf),
        reference=lambda x, p: _standardize_ref(x, tuple(a for a in range(x.ndim) if a != 1), p["eps"]),
        reduction_axes=lambda ndim, p: tuple(a for a in range(ndim) if a != 1),
        min_rank=2,
        feature_axis=1,
        stateful=True,
        examples=({"momentum": 0.5},),
        rejects=({"momentum": -0.1}, {"momentum": 1.5}, {"momentum": math.nan}, {"eps": 0.0}, {"num_features": -2}),
        notes="Channels are axis 1, as in PyTorch; training needs more than one value per channel.",
    )
)
