"""PyTorch versions of the benchmark baselines declared in ``bench.plan.BASELINES`` (the seed's
code) and ``bench.plan.BUILTINS`` (PyTorch's own op of the same meaning); mirrors
``impl_jax/baselines.py``. Each builder takes the technique's resolved parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.squashes import soft_clip_shrink


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


# --- PyTorch's own ops of the same meaning (bench.plan.BUILTINS) ---------------------------


def _clamp(*, lo: float, hi: float, **_: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.clamp(x, lo, hi)


def _one_sigmoid(**_: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    return torch.sigmoid


def _soft_clip(*, lo: float, hi: float, hinge_softness: float) -> Callable[[torch.Tensor], torch.Tensor]:
    beta, shrink = 1.0 / hinge_softness, soft_clip_shrink(lo, hi, hinge_softness)
    return lambda x: hi - F.softplus((hi - lo) - F.softplus(x - lo, beta), beta) * shrink


_BARE: dict[str, Callable[..., Any]] = {
    "sigmoid": lambda: torch.sigmoid,
    "tanh": lambda: torch.tanh,
    "clamp": _clamp,
    "hardtanh": lambda *, lo, hi: lambda x: F.hardtanh(x, lo, hi),
    "relu6": lambda: F.relu6,
    "hardsigmoid": lambda: F.hardsigmoid,
    "softsign": lambda: F.softsign,
    "bounded_relu": _clamp,
    "ste_clamp": _clamp,
    "leaky_clamp": _clamp,
    "smooth_clamp": _one_sigmoid,
    "scaled_sigmoid": _one_sigmoid,
    "scaled_tanh": _one_sigmoid,
    "soft_clip": _soft_clip,
    "softmax": lambda *, axis: lambda x: torch.softmax(x, axis),
    "log_softmax": lambda *, axis: lambda x: torch.log_softmax(x, axis),
    "sparsemax": lambda *, axis: lambda x: torch.softmax(x, axis),
    "layer_norm": layer_norm,
    "rms_norm": lambda *, num_features, eps, elementwise_affine, dtype, seed: nn.RMSNorm(
        num_features, eps=eps, elementwise_affine=elementwise_affine
    ),
    "batch_norm": lambda *, num_features, eps, momentum, dtype, seed: nn.BatchNorm1d(
        num_features, eps=eps, momentum=momentum
    ),
}


class _Op(nn.Module):
    """A bare op held as a model holds ours: in a module. A module call costs 1-2 us eager and a
    few more compiled (dynamo guards the module), a fifth of a 2^16-element clamp; timing ours,
    a module, against the function alone would time that call, not the op. The module call's
    own cost has its target apart (bench/speed_ratios.py: module call / bare op)."""

    def __init__(self, op: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def bare(name: str, **params: Any) -> Any:
    """PyTorch's own op of the same meaning as ``name``, as a function where it is one."""
    return _BARE[name](**params)


def _builtin(name: str) -> Callable[..., nn.Module]:
    def build(**params: Any) -> nn.Module:
        op = bare(name, **params)
        return op if isinstance(op, nn.Module) else _Op(op)

    return build


# The rows beside ours: the same ops, each in a module (see _Op).
BUILTINS: dict[str, Callable[..., nn.Module]] = {name: _builtin(name) for name in _BARE}
