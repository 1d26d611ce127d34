"""What the built-in families' declarations share: parameter pairs, kink shapes, numpy helpers.

Private to ``harness``: plugins declare with the public records of :mod:`harness.spec`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.spec import Kink, Param, finite

CLAMP_CONVENTION = (
    "1 strictly inside (lo, hi), 0 outside; at x == lo or x == hi the gradient is 0 "
    "(the kink belongs to the saturated piece, as relu(0) does in both frameworks)"
)

LO_HI_REJECTS: tuple[dict[str, float], ...] = (
    {"lo": 1.0, "hi": 1.0},
    {"lo": 2.0, "hi": -2.0},
    {"hi": math.inf},
    {"lo": math.nan},
)


def lo_hi(lo: float, hi: float) -> tuple[Param, Param]:
    """The ``lo`` and ``hi`` parameters of a technique bounded to [lo, hi], with their defaults."""
    return (
        Param("lo", "float", lo, "lower bound of the output", finite),
        Param("hi", "float", hi, "upper bound of the output", finite),
    )


def clamp_kinks(lo: float, hi: float, inside: float = 1.0) -> tuple[Kink, ...]:
    """The two saturation kinks of a clamp-like technique: the gradient is 0 at each bound."""
    return (
        Kink(lo, left=0.0, at=0.0, right=inside, note="lower saturation"),
        Kink(hi, left=inside, at=0.0, right=0.0, note="upper saturation"),
    )


def errstate() -> Any:
    # References are evaluated at infinities and the largest finite values on purpose.
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def quiet(fn: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
    """``fn(*args)`` without numpy's overflow and invalid-value warnings."""
    with errstate():
        return fn(*args)


def sigmoid_ref(x: np.ndarray) -> np.ndarray:
    with errstate():
        return 1.0 / (1.0 + np.exp(-x))


def logit_ref(u: np.ndarray) -> np.ndarray:
    """log(u / (1 - u)): -inf at 0, inf at 1, NaN outside [0, 1]."""
    with errstate():
        return np.log(u) - np.log1p(-u)


# torch.autocast's float32 list: ATen's CUDA policy runs layer_norm, rms_norm, softmax and
# log_softmax in float32 (their AutocastCUDA kernels); its CPU policy runs none of the ops the
# built-ins correspond to in float32 (torch 2.13, tests/test_dtypes.py reads ATen's registry).
AUTOCAST_FLOAT32_ON_CUDA = frozenset({"cuda"})
