"""PyTorch modules: thin wrappers that resolve everything at construction.

Parameters were validated by the declaration (``TechniqueSpec.resolve``); modules only check
the input (dtype, rank, axis, feature size) through the same harness function as the JAX side,
so both frameworks raise the same errors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

import harness
from harness.build import check_head_input
from impl_torch import extended as X
from impl_torch import functional as F
from impl_torch.adapter import TORCH_DTYPES, dtype_name, from_numpy


class Limit(nn.Module):
    """A stateless technique; its parameters are fixed when it is built."""

    def __init__(self, spec: harness.TechniqueSpec, fn: Callable[..., torch.Tensor], params: Mapping[str, Any]) -> None:
        super().__init__()
        self.technique = spec.name
        self.params = dict(params)
        self._spec = spec
        self._fn = functools.partial(fn, **params)
        # Elementwise techniques take any float input: skip the shape check on the hot path, and
        # decide now which dtypes can hold the parameters (the others raise in check_input).
        self._check_shape = spec.min_rank > 0
        self._fast_dtypes = frozenset(t for name, t in TORCH_DTYPES.items() if spec.dtype_problem(params, name) is None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._check_shape or x.dtype not in self._fast_dtypes:
            self._spec.check_input(dtype_name(x), tuple(x.shape), self.params)
        return self._fn(x)

    def extra_repr(self) -> str:
        return ", ".join([self.technique, *(f"{k}={v!r}" for k, v in self.params.items())])


@harness.implements("layer_norm", "torch")
class LayerNorm(nn.Module):
    """LayerNorm over the last axis with PyTorch's parameter meaning (eps 1e-5, weight 1, bias 0)."""

    def __init__(self, *, num_features: int, eps: float, elementwise_affine: bool, dtype: str, seed: int) -> None:
        super().__init__()
        self.params = {
            "num_features": num_features,
            "eps": eps,
            "elementwise_affine": elementwise_affine,
            "dtype": dtype,
        }
        self._spec = harness.get("layer_norm")
        self.eps = eps
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(num_features, dtype=TORCH_DTYPES[dtype]))
            self.bias = nn.Parameter(torch.zeros(num_features, dtype=TORCH_DTYPES[dtype]))
        else:
            self.weight = self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._spec.check_input(dtype_name(x), tuple(x.shape), self.params)
        return F.layer_norm(x, self.weight, self.bias, eps=self.eps)


@harness.implements("rms_norm", "torch")
class RMSNorm(nn.Module):
    """RMSNorm over the last axis with PyTorch's meaning (eps None: the input dtype's epsilon)."""

    def __init__(
        self, *, num_features: int, eps: float | None, elementwise_affine: bool, dtype: str, seed: int
    ) -> None:
        super().__init__()
        self.params = {
            "num_features": num_features,
            "eps": eps,
            "elementwise_affine": elementwise_affine,
            "dtype": dtype,
        }
        self._spec = harness.get("rms_norm")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features, dtype=TORCH_DTYPES[dtype])) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._spec.check_input(dtype_name(x), tuple(x.shape), self.params)
        return X.rms_norm(x, self.weight, eps=self.eps)


@harness.implements("batch_norm", "torch")
class BatchNorm(nn.Module):
    """BatchNorm over axis 1 with PyTorch's meaning: momentum weights the new batch, the running
    variance is unbiased; ``.train()``/``.eval()`` switch batch and running statistics."""

    def __init__(self, *, num_features: int, eps: float, momentum: float, dtype: str, seed: int) -> None:
        super().__init__()
        self.params = {"num_features": num_features, "eps": eps, "momentum": momentum, "dtype": dtype}
        self._spec = harness.get("batch_norm")
        self.eps, self.momentum = eps, momentum
        torch_dtype = TORCH_DTYPES[dtype]
        self.weight = nn.Parameter(torch.ones(num_features, dtype=torch_dtype))
        self.bias = nn.Parameter(torch.zeros(num_features, dtype=torch_dtype))
        self.register_buffer("running_mean", torch.zeros(num_features, dtype=torch_dtype))
        self.register_buffer("running_var", torch.ones(num_features, dtype=torch_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._spec.check_input(dtype_name(x), tuple(x.shape), self.params)
        if self.training and x.numel() <= x.shape[1]:
            raise ValueError(
                f"batch_norm needs more than one value per channel in training mode, got shape {tuple(x.shape)}; "
                "use a larger batch or call .eval()"
            )
        y, new_mean, new_var = F.batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var,
            training=self.training, momentum=self.momentum, eps=self.eps,
        )  # fmt: skip
        if self.training:
            with torch.no_grad():
                self.running_mean.copy_(new_mean)
                self.running_var.copy_(new_var)
        return y


class Head(nn.Module):
    """Linear(in_features, out_features) then an output-limiting technique."""

    def __init__(self, linear: nn.Linear, limit: nn.Module, dtype: str) -> None:
        super().__init__()
        self.linear, self.limit, self.dtype_name = linear, limit, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_head_input(dtype_name(x), tuple(x.shape), self.linear.in_features, self.dtype_name)
        return self.limit(self.linear(x))


def make_module(spec: harness.TechniqueSpec, impl: Any, params: Mapping[str, Any]) -> nn.Module:
    """A module class is constructed with the parameters; a function is wrapped in :class:`Limit`."""
    return impl(**params) if isinstance(impl, type) else Limit(spec, impl, params)


def make_head(weight: np.ndarray, bias: np.ndarray, limit: nn.Module, dtype: str) -> Head:
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, dtype=TORCH_DTYPES[dtype])
    with torch.no_grad():
        linear.weight.copy_(from_numpy(weight, dtype))
        linear.bias.copy_(from_numpy(bias, dtype))
    return Head(linear, limit, dtype)
