"""Framework-neutral numeric facts that both implementations base a decision on."""

from __future__ import annotations

import functools
import math

import numpy as np


def finfo(dtype: str) -> dict[str, float]:
    """Largest finite ("max"), smallest normal ("tiny") and machine epsilon ("eps") of a dtype
    name, bfloat16 included (numpy has none)."""
    if dtype == "bfloat16":
        return {"max": 3.3895313892515355e38, "tiny": 1.1754943508222875e-38, "eps": 2.0**-7}
    info = np.finfo(dtype)
    return {"max": float(info.max), "tiny": float(info.tiny), "eps": float(info.eps)}


def compute_dtype(dtype: str) -> str:
    """The dtype composite formulas run in: float32 for float16 and bfloat16, else ``dtype``."""
    return "float32" if dtype in ("float16", "bfloat16") else dtype


# Mixed precision as torch.nn.LayerNorm and BatchNorm1d take it: float32 parameters also take
# float16 and bfloat16 inputs (computed in float32, returned in the input's dtype). Any other mix
# raises, as it does there; flax's layers accept every mix but promote the output (README).
MIXED_INPUTS: dict[str, tuple[str, ...]] = {"float32": ("float16", "bfloat16")}


def module_input_dtypes(param_dtype: str) -> tuple[str, ...]:
    """The input dtypes a module whose parameters are ``param_dtype`` takes, its own first."""
    return (param_dtype, *MIXED_INPUTS.get(param_dtype, ()))


@functools.lru_cache(maxsize=256)
def affine_needs_guard(lo: float, hi: float, dtype: str) -> bool:
    """True unless ``lo + (hi - lo)`` rounds to at most ``hi`` in ``dtype``.

    When it does, ``lo + (hi - lo) * s`` with ``s`` in [0, 1] stays in [lo, hi] (monotone rounding).
    """
    f = np.dtype(dtype).type
    with np.errstate(over="ignore"):
        return not f(f(lo) + f(hi - lo)) <= f(hi)


# The norms' fast paths (ATen's fused ops, flax's plain formula) are trusted for a group whose
# variance stands clear of what rounding can fake. Within _CANCELLATION_ULPS ulps of its mean a
# group may be constant: a mean that is a rounded sum leaves a spread of a few ulps there, which
# normalizes to +-1 where the declaration gives 0. Below _TINY_VARIANCE * eps the variance is lost
# in the rounding of var + eps (about eps * 2^-23), so it cannot tell either.
_CANCELLATION_ULPS = 64.0
_TINY_VARIANCE = 2.0**-18


def trusted_rstd_low(dtype: str) -> float:
    """The smallest rstd (1 / sqrt(var + eps)) a norm's fast path is trusted with, for statistics
    computed in ``dtype``: the power of two nearest above tiny^(1/4) (2^-31 in float32, 2^-255 in
    float64). Below it the fast formula's values hold, but its second-order terms (rstd^3 times
    the group's spread) underflow: layer_norm's and rms_norm's second order came out zero, inf or
    NaN in PyTorch and up to 110% off in JAX at 2^45 in float32. Those groups take the prescaled
    formula, whose derivatives work on values below 4. One rule for both frameworks (JAX's
    rms_norm narrows it for its derivative: impl_jax.norms._rms_plain_range). ``dtype`` is
    the one statistics are computed in, float32 or float64 (float16 and bfloat16 inputs are
    computed in float32)."""
    return math.ldexp(1.0, math.ceil(math.log2(finfo(dtype)["tiny"]) / 4))


def trusted_variance_floor(dtype: str, eps: float) -> tuple[float, float]:
    """(k, f) for statistics computed in ``dtype``: a group's fast-path result is the declared
    one where its variance is finite and above max(k mean^2, f). One rule for both frameworks."""
    k, per_eps = trusted_variance_terms(dtype)
    return k, per_eps * eps


def trusted_variance_terms(dtype: str) -> tuple[float, float]:
    """(k, t) with ``trusted_variance_floor(dtype, eps) == (k, t * eps)``: the part that depends
    on the dtype alone, for a compiled graph that takes eps as a symbolic value."""
    c = _CANCELLATION_ULPS * finfo(dtype)["eps"]
    return c * c, _TINY_VARIANCE
