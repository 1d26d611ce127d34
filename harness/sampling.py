"""Inputs, cotangents and shapes for tests and benchmarks, drawn in numpy from a seed.

Both frameworks always receive the same numpy values. Random inputs are kept away from
declared kinks (a draw that lands on a kink would test the convention by accident; the kink
tests do that on purpose).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.numerics import finfo
from harness.spec import TechniqueSpec

# Distance kept from a kink, relative to (1 + |kink|): several ulps even in bfloat16.
KINK_MARGIN = 2e-2


def input_shape(spec: TechniqueSpec, params: Mapping[str, Any], size: str = "small") -> tuple[int, ...]:
    """A representative shape: batch dims around ``num_features`` where the technique has one."""
    if spec.feature_axis is None:
        return {"small": (4, 6), "rank5": (2, 3, 1, 2, 3)}[size]
    n = params["num_features"]
    if spec.feature_axis == -1:
        return {"small": (3, 5, n), "rank5": (2, 1, 3, 2, n)}[size]
    return {"small": (6, n, 3), "rank5": (2, n, 2, 1, 3)}[size]


def spread(spec: TechniqueSpec, params: Mapping[str, Any]) -> float:
    """Standard deviation of random inputs: wide enough to cover every kink and finite bound."""
    points = [k.x for k in spec.kinks_fn(params)] + [b for b in spec.bounds_fn(params) if math.isfinite(b)]
    return max([2.0, *(1.5 * abs(p) for p in points)])


def sample_input(
    spec: TechniqueSpec, params: Mapping[str, Any], shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """Normal float64 values of the technique's spread, none within KINK_MARGIN of a kink."""
    x = rng.normal(size=shape) * spread(spec, params)
    for kink in spec.kinks_fn(params):
        margin = KINK_MARGIN * (1.0 + abs(kink.x))
        near = np.abs(x - kink.x) < margin
        x = np.where(near, kink.x + np.where(x >= kink.x, margin, -margin) * 2.0, x)
    return x


def sample_cotangent(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A random cotangent: gradients of a sum are zero for softmax and normalization."""
    return rng.normal(size=shape)


def extreme_values(dtype: str) -> np.ndarray:
    """Infinities, the largest and smallest finite magnitudes of ``dtype``, signed zeros, ones."""
    info = finfo(dtype)
    values = [math.inf, info["max"], 1e4, 1.0, info["tiny"], 0.0]
    return np.array(values + [-v for v in values], dtype=np.float64)


def machine_epsilon(dtype: str) -> float:
    """The dtype's machine epsilon (bfloat16 included, which numpy lacks)."""
    return finfo(dtype)["eps"]


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` rounded to ``dtype`` as the adapters round them, returned as float64.

    float16 and bfloat16 are reached from float32, as in ``from_numpy``; bfloat16 rounding is
    done here with integer arithmetic (round to nearest even) so numpy needs no bfloat16 type.
    """
    if dtype == "float64":
        return np.asarray(values, dtype=np.float64)
    f32 = np.asarray(values, dtype=np.float32)
    if dtype == "float32":
        return f32.astype(np.float64)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return f32.astype(np.float16).astype(np.float64)
    bits = f32.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    out = rounded.astype(np.uint32).view(np.float32).astype(np.float64)
    return np.where(np.isnan(f32), np.nan, out)
