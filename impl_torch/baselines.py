"""PyTorch versions of the benchmark baselines declared in ``bench.plan.BASELINES``
(mirrors ``impl_jax/baselines.py``). Each builder takes the technique's resolved parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def bounded_relu(*, lo: float, hi: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.clamp(torch.relu(x), lo, hi)


def smooth_clamp(*, lo: float, hi: float, linear_fraction: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: lo + (hi - lo) * torch.sigmoid(x)


def clamp(*, lo: float, hi: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.clamp(x, lo, hi)


def softmax(*, axis: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.softmax(x, dim=axis)


def layer_norm(*, num_features: int, eps: float, elementwise_affine: bool, dtype: str, seed: int) -> nn.Module:
    return nn.LayerNorm(num_features, eps=eps, elementwise_affine=elementwise_affine)


BUILDERS: dict[str, Callable[..., Any]] = {
    "bounded_relu": bounded_relu,
    "smooth_clamp": smooth_clamp,
    "clamp": clamp,
    "softmax": softmax,
    "layer_norm": layer_norm,
}
