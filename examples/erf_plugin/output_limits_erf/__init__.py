"""Declares ``erf_squash``: erf(x), a smooth bounded activation in [-1, 1]. Imports no framework."""

import math

import numpy as np

import harness

_erf = np.frompyfunc(math.erf, 1, 1)


def _erfinv_scalar(y: float) -> float:
    if math.isnan(y) or abs(y) > 1.0:
        return math.nan
    if abs(y) == 1.0:
        return math.copysign(math.inf, y)
    x = 0.0
    for _ in range(100):  # Newton on erf(x) = y; converges in a few steps from 0
        step = (math.erf(x) - y) / (2.0 / math.sqrt(math.pi) * math.exp(-x * x))
        x -= step
        if abs(step) <= 1e-15 * max(1.0, abs(x)):
            break
    return x


_erfinv = np.frompyfunc(_erfinv_scalar, 1, 1)

harness.declare(
    harness.TechniqueSpec(
        name="erf_squash",
        family="bounded activation",
        formula="erf(x) = 2 / sqrt(pi) * integral_0^x exp(-t^2) dt",
        bounds_doc="[-1, 1]",
        gradient_convention="2 / sqrt(pi) * exp(-x^2); no kinks",
        params=(),
        bounds_fn=lambda p: (-1.0, 1.0),
        reference=lambda x, p: _erf(x).astype(np.float64),
        inverse_reference=lambda y, p: _erfinv(y).astype(np.float64),
        monotone=True,
        invertible=True,
    )
)
