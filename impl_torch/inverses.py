"""PyTorch inverses of the invertible techniques (mirrors ``impl_jax/inverses.py``): the open
range (lo, hi) maps onto the reals, lo and hi to -inf and inf, values outside to NaN."""

from __future__ import annotations

import math

import torch

from harness import implements_inverse
from harness.numerics import soft_clip_shrink


def _logit(u: torch.Tensor) -> torch.Tensor:
    # log(u) - log1p(-u): -inf at 0, inf at 1, NaN outside [0, 1].
    return torch.log(u) - torch.log1p(-u)


@implements_inverse("sigmoid", "torch")
def sigmoid(y: torch.Tensor) -> torch.Tensor:
    return _logit(y)


@implements_inverse("tanh", "torch")
def tanh(y: torch.Tensor) -> torch.Tensor:
    return torch.atanh(y)


@implements_inverse("softsign", "torch")
def softsign(y: torch.Tensor) -> torch.Tensor:
    return torch.where(y.abs() > 1.0, math.nan, y / (1.0 - y.abs()))


@implements_inverse("scaled_sigmoid", "torch")
def scaled_sigmoid(y: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    return _logit((y - lo) / (hi - lo))


@implements_inverse("scaled_tanh", "torch")
def scaled_tanh(y: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    return _logit((y - lo) / (hi - lo)) / 2.0


@implements_inverse("smooth_clamp", "torch")
def smooth_clamp(y: torch.Tensor, *, lo: float, hi: float, linear_fraction: float) -> torch.Tensor:
    r = (1.0 - linear_fraction) * (hi - lo) / 2.0
    upper = (hi - r) - (r / 2.0) * _logit((hi - y) / (2.0 * r))
    lower = (lo + r) + (r / 2.0) * _logit((y - lo) / (2.0 * r))
    return torch.where(y > hi - r, upper, torch.where(y < lo + r, lower, y))


def _softplus_inverse(u: torch.Tensor, c: float) -> torch.Tensor:
    # c log(exp(u / c) - 1) written as u + c log(-expm1(-u / c)): -inf at 0, NaN below 0.
    return u + c * torch.log(-torch.expm1(-u / c))


@implements_inverse("soft_clip", "torch")
def soft_clip(y: torch.Tensor, *, lo: float, hi: float, hinge_softness: float) -> torch.Tensor:
    c, w = hinge_softness, hi - lo
    shrink = soft_clip_shrink(lo, hi, c)
    x = lo + _softplus_inverse(w - _softplus_inverse((hi - y) / shrink, c), c)
    # The bounds exactly, whatever the rounding of the shrink factor does near lo.
    return torch.where(y == lo, -math.inf, torch.where(y == hi, math.inf, x))
