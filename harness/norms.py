"""The norms, declared once: normalization layers with PyTorch's parameter meaning.

layer_norm, rms_norm and batch_norm. References assume freshly built modules (weight 1, bias 0)
in training mode. Groups are scaled by an exact power of two before their statistics, so the
largest finite inputs do not overflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness._common import AUTOCAST_FLOAT32_ON_CUDA
from harness.numerics import compute_dtype, finfo
from harness.spec import DTYPES, Family, Param, TechniqueSpec, module_params, positive
from harness.tolerances import NORMALIZATION_VALUES, normwise_values

P = Mapping[str, Any]


def _eps(default: float) -> Param:
    return Param("eps", "float", default, "added to the variance (PyTorch's default 1e-5)", positive)


def eps_fits(params: P, dtype: str) -> str | None:
    """eps is a normal, finite number where the statistics are computed (float32 for float16 and
    bfloat16): rounded to 0 (1e-300 in float32) a constant group divides 0 by 0, rounded to an
    infinity every group does, and the two frameworks gave NaN in different places. None (rms_norm)
    is that dtype's machine epsilon."""
    if params["eps"] is None:
        return None
    compute = compute_dtype(dtype)
    tiny, biggest = finfo(compute)["tiny"], finfo(compute)["max"]
    if not tiny <= params["eps"] <= biggest:
        return (
            f"eps = {params['eps']:.6g} must lie in [{tiny:.6g}, {biggest:.6g}] in {compute} (a normal, finite "
            "number there); choose an eps the dtype can hold or use a wider dtype"
        )
    return None


def _power_of_two_scaled(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``x`` times 2^-e per group, with 2^e just above the group's largest magnitude (exact, so
    squares cannot overflow even at float64's largest values), and e."""
    with np.errstate(invalid="ignore"):
        amax = np.max(np.abs(x), axis=axes, keepdims=True)
    _, exponent = np.frexp(np.where(np.isfinite(amax) & (amax > 0), amax, 1.0))
    return np.ldexp(x, -exponent), exponent


def _standardize_ref(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    # Shifted by each group's first entry, so a constant group centres to exactly 0 (a rounded
    # mean of equal values would leave a spread of one rounding, normalized to +-1).
    scaled, exponent = _power_of_two_scaled(x, axes)
    first = scaled[tuple(slice(0, 1) if a in {d % x.ndim for d in axes} else slice(None) for a in range(x.ndim))]
    centred = (scaled - first) - np.mean(scaled - first, axis=axes, keepdims=True)
    var = np.mean(centred**2, axis=axes, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(centred == 0.0, 0.0, centred / np.sqrt(var + np.ldexp(eps, -2 * exponent)))


def _last_axis(ndim: int, p: P) -> tuple[int, ...]:
    return (ndim - 1,)


def _unbounded_with_affine(half_width: Any) -> Any:
    """Bounds of a norm: unbounded with the affine step, +-half_width(n) without it."""

    def bounds(p: P) -> tuple[float, float]:
        if p["elementwise_affine"] or p["num_features"] is None:
            return (-math.inf, math.inf)
        b = half_width(p["num_features"])
        return (-b, b)

    return bounds


LAYER_NORM = TechniqueSpec(
    name="layer_norm",
    autocast_float32=AUTOCAST_FLOAT32_ON_CUDA,
    bounds_doc="unbounded; [-sqrt(n-1), sqrt(n-1)] without affine",
    family=Family.NORMS,
    formula="(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance, two-pass)",
    gradient_convention="smooth; no kinks; a group holding an infinity takes its limit and passes zero gradient",
    params=module_params(
        (_eps(1e-5), Param("elementwise_affine", "bool", True, "learn weight (init 1) and bias (init 0)"))
    ),
    # |x_i - mean| <= sqrt(n - 1) * std for the biased std; eps > 0 keeps it strictly inside.
    bounds_fn=_unbounded_with_affine(lambda n: math.sqrt(n - 1)),
    reference=lambda x, p: _standardize_ref(x, (-1,), p["eps"]),
    reduction_axes=_last_axis,
    min_rank=1,
    feature_axis=-1,
    examples=({"elementwise_affine": False}, {"eps": 1e-3}),
    rejects=({"eps": 0.0}, {"eps": -1e-5}, {"eps": math.inf}, {"num_features": 0}, {"dtype": "int32"}),
    check_dtype=eps_fits,
    dtype_rejects=(({"eps": 1e-300}, "float32"), ({"eps": 1e300}, "float32")),
    tolerances=normwise_values(NORMALIZATION_VALUES, DTYPES),
    notes=(
        "Rows are scaled by a power of two before the statistics (exact), so the largest finite inputs "
        "do not overflow; a row holding an infinity takes its limit (the infinite entries at +-1 before "
        "the affine step). Low-precision inputs are computed in float32."
    ),
)


def _optional_positive(v: float | None) -> str | None:
    return None if v is None else positive(v)


def _rms_norm_ref(x: np.ndarray, p: P) -> np.ndarray:
    eps = p["eps"] if p["eps"] is not None else finfo(compute_dtype(p["dtype"]))["eps"]
    scaled, exponent = _power_of_two_scaled(x, (-1,))
    with np.errstate(invalid="ignore", divide="ignore"):
        ms = np.mean(scaled * scaled, axis=-1, keepdims=True)
        return np.where(scaled == 0.0, 0.0, scaled / np.sqrt(ms + np.ldexp(eps, -2 * exponent)))


RMS_NORM = TechniqueSpec(
    name="rms_norm",
    autocast_float32=AUTOCAST_FLOAT32_ON_CUDA,
    family=Family.NORMS,
    formula="x / sqrt(mean(x^2) + eps) * weight over the last axis",
    bounds_doc="unbounded; [-sqrt(n), sqrt(n)] without affine",
    gradient_convention="smooth; no kinks; a group holding an infinity takes its limit and passes zero gradient",
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
    bounds_fn=_unbounded_with_affine(math.sqrt),  # one non-zero entry: x / sqrt(x^2 / n)
    reference=_rms_norm_ref,
    reduction_axes=_last_axis,
    min_rank=1,
    feature_axis=-1,
    examples=({"elementwise_affine": False}, {"eps": 1e-3}),
    rejects=({"eps": 0.0}, {"eps": -1.0}, {"num_features": 0}),
    check_dtype=eps_fits,
    dtype_rejects=(({"eps": 1e-300}, "float32"), ({"eps": 1e-300}, "bfloat16")),
    notes="Scaled by a power of two first, as layer_norm; statistics in float32 for low-precision inputs.",
)


def _momentum(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else "must be in [0, 1] (the weight of the new batch, as in PyTorch)"


def _all_but_channels(ndim: int, p: P) -> tuple[int, ...]:
    return tuple(a for a in range(ndim) if a != 1)


BATCH_NORM = TechniqueSpec(
    name="batch_norm",
    bounds_doc="unbounded (affine)",
    family=Family.NORMS,
    formula=(
        "training: (x - mean_b) / sqrt(var_b + eps) * weight + bias over all axes but 1; "
        "running = (1 - momentum) * running + momentum * batch (variance unbiased); "
        "eval: (x - running_mean) / sqrt(running_var + eps) * weight + bias"
    ),
    gradient_convention="smooth; no kinks; a group holding an infinity takes its limit and passes zero gradient",
    params=module_params(
        (_eps(1e-5), Param("momentum", "float", 0.1, "weight of the new batch in the running statistics", _momentum))
    ),
    bounds_fn=lambda p: (-math.inf, math.inf),
    reference=lambda x, p: _standardize_ref(x, _all_but_channels(x.ndim, p), p["eps"]),
    reduction_axes=_all_but_channels,
    min_rank=2,
    feature_axis=1,
    stateful=True,
    examples=({"momentum": 0.5},),
    rejects=({"momentum": -0.1}, {"momentum": 1.5}, {"momentum": math.nan}, {"eps": 0.0}, {"num_features": -2}),
    check_dtype=eps_fits,
    dtype_rejects=(({"eps": 1e-300}, "float32"),),
    tolerances=normwise_values(NORMALIZATION_VALUES, DTYPES),
    notes="Channels are axis 1, as in PyTorch; training needs more than one value per channel.",
)

SPECS: tuple[TechniqueSpec, ...] = (LAYER_NORM, RMS_NORM, BATCH_NORM)
