"""Declares ``erf_squash``: erf(x), a smooth bounded activation in [-1, 1]. Imports no framework."""

import math

import numpy as np

import harness

_erf = np.frompyfunc(math.erf, 1, 1)

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
        monotone=True,
        invertible=True,
    )
)
