"""Framework-neutral numeric facts that both implementations base a decision on."""

from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=256)
def needs_rounding_guard(lo: float, hi: float, r: float, dtype: str) -> bool:
    """True unless ``(lo + r) - r >= lo`` and ``(hi - r) + r <= hi`` hold in ``dtype``.

    When they hold, ``m + t`` with ``m`` in [lo + r, hi - r] and ``|t| <= r`` rounds into
    [lo, hi] (rounding is monotone), so no final clamp is needed. With no linear middle the two
    joins meet, and rounded they may cross (lo + r above hi - r): a clamp to [lo + r, hi - r] then
    returns hi - r everywhere, so the lower end is checked from there.
    """
    f = np.dtype(dtype).type
    b_lo, b_hi, rr = f(lo + r), f(hi - r), f(r)
    with np.errstate(over="ignore"):
        return not (f(min(b_lo, b_hi) - rr) >= f(lo) and f(b_hi + rr) <= f(hi))


@functools.lru_cache(maxsize=256)
def affine_needs_guard(lo: float, hi: float, dtype: str) -> bool:
    """True unless ``lo + (hi - lo)`` rounds to at most ``hi`` in ``dtype``.

    When it does, ``lo + (hi - lo) * s`` with ``s`` in [0, 1] stays in [lo, hi] (monotone rounding).
    """
    f = np.dtype(dtype).type
    with np.errstate(over="ignore"):
        return not f(f(lo) + f(hi - lo)) <= f(hi)


def soft_clip_shrink(lo: float, hi: float, c: float) -> float:
    """soft_clip's factor (hi - lo) / s(hi - lo), s(v) = c log(1 + exp(v / c)), in float64.

    One Python constant shared by both frameworks' forward and inverse.
    """
    w = hi - lo
    return w / (c * (max(w / c, 0.0) + math.log1p(math.exp(-abs(w / c)))))
