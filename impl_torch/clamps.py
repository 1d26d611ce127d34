"""PyTorch clamps (declared in ``harness/clamps.py``; mirrors ``impl_jax/clamps.py``).

Where a fused ATen kernel computes exactly the declared rule it is called by name, and the kink
tests pin its result at and beside every kink.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from harness import implements
from impl_torch._common import (
    NativeKernel,
    apply,
    as_dtype,
    at_nan,
    clamp_inside,
    clamp_inside_rule,
    clamp_straight_through,
    compiled_elementwise,
    native_first,
    native_kernel,
    save_input,
    upcast,
)
from impl_torch._decisions import compiled_kernel_serves, is_compiling, plain_eager, tracks_grad
from impl_torch._native import node as _node


@implements("clamp", "torch")
def clamp(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    return clamp_inside(x, lo, hi)


@implements("hardtanh", "torch")
def hardtanh(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    return clamp_inside(x, lo, hi)


@implements("relu6", "torch")
def relu6(x: torch.Tensor) -> torch.Tensor:
    return clamp_inside(x, 0.0, 6.0)


@implements("bounded_relu", "torch")
def bounded_relu(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    # clamp(relu(x), lo, hi) == clamp(x, max(lo, 0), hi): one pass instead of two.
    return clamp_inside(x, max(lo, 0.0), hi)


def _hardsigmoid_values(x: torch.Tensor) -> torch.Tensor:
    # ATen's fused CPU kernel computes min(max(x + 3, 0), 6) / 6, the declared formula, in one
    # pass (low precision in float32, rounded once): bit for bit clamp(x + 3, 0, 6) / 6 in all
    # four dtypes, NaN included. The reference, bounds and kink tests pin it, release after
    # release. Its binding, not F.hardsigmoid: that one's Python wrapper costs a microsecond a call.
    # ATen's CUDA kernel multiplies by 1/6 rounded to float32 instead, in float64 too: 3e-8 off
    # the declaration there (pytest --device cuda, on an H200), so float64 off the CPU takes the
    # formula. In float32 and below the product is within an ulp of the quotient.
    if x.dtype is torch.float64 and not x.is_cpu:
        return _hardsigmoid_formula(x)
    return torch._C._nn.hardsigmoid(x)


def _hardsigmoid_formula(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


def _hardsigmoid_rule(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return clamp_inside_rule(x, v, -3.0, 3.0).mul_(1.0 / 6.0)


_HARDSIGMOID_RULE = _node.number(_hardsigmoid_rule)  # for the C++ node's float64 and second order


class _Hardsigmoid(torch.autograd.Function):
    """relu6(x + 3) / 6 with gradient 1/6 strictly inside (-3, 3), 0 elsewhere (bounds included)."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _hardsigmoid_values(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        save_input(ctx, inputs[0])

    @staticmethod
    def derivative(ctx: Any, v: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        # Not aten.hardsigmoid_backward (nor its forward rule): it multiplies by 1/6 rounded to
        # float32 even for float64.
        return _hardsigmoid_rule(x, v)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        if not torch.is_grad_enabled() and x.dtype != torch.float64 and not is_compiling():
            # First order, below float64: ATen's hardsigmoid_backward is the declared rule (g *
            # float32(1/6) strictly inside (-3, 3), rounded once; tests/test_kinks.py pins it)
            # in one pass where the rule takes two, but at NaN (at_nan). It has no derivative of
            # its own, so a backward that builds a graph (second order) takes the rule, and so
            # does a compiled one: inductor vectorizes the rule's selects, not this op and
            # at_nan's select of a NaN constant (1.6-1.7 of compiled F.hardsigmoid's).
            return at_nan(torch.isnan(x), torch.ops.aten.hardsigmoid_backward(grad, x))
        return _Hardsigmoid.derivative(ctx, grad)


@implements("hardsigmoid", "torch")
def hardsigmoid(x: torch.Tensor) -> torch.Tensor:
    # Not F.hardsigmoid's own autograd node, although hardsigmoid_backward is the declared rule
    # in float32 and below: it has no derivative of its own, so second order would raise.
    if not tracks_grad(x):
        return _hardsigmoid_values(x)
    if (x.is_cpu or x.dtype is not torch.float64) and plain_eager() and _node.node().hardsigmoid is not None:
        # The same node in C++ (_native/node.cpp): 10-15 us less per forward+backward. Its
        # forward is ATen's op, which off the CPU is not the declaration in float64 (above).
        return _node.node().hardsigmoid(x, _HARDSIGMOID_RULE)
    return apply(_Hardsigmoid, x)


def _leaky_clamp_values(x: torch.Tensor, lo: float, hi: float, slope: float) -> torch.Tensor:
    # In float32 for float16/bfloat16: x - m can overflow those although the output cannot.
    xc = upcast(x)
    m = torch.clamp(xc, lo, hi)
    if slope < 0.5:
        # lerp(m, x, slope) is m + slope (x - m) in one fused pass for weights below 1/2: two
        # passes in all, where the formula takes three and a temporary.
        return as_dtype(torch.lerp(m, xc, slope), x.dtype)
    # From 1/2 on, ATen's lerp computes x - (x - m)(1 - slope): inf - inf at an infinite x.
    return as_dtype(m + slope * (xc - m), x.dtype)


def _leaky_clamp_derivative(x: torch.Tensor, v: torch.Tensor, lo: float, hi: float, slope: float) -> torch.Tensor:
    inside = clamp_inside_rule(x, v, lo, hi)  # v inside, 0 at and beyond, NaN at NaN
    return inside.mul_(1.0 - slope).add_(v, alpha=slope)


class _LeakyClamp(torch.autograd.Function):
    """m + slope (x - m), m = clamp(x, lo, hi); gradient 1 strictly inside, slope elsewhere."""

    @staticmethod
    def forward(x: torch.Tensor, lo: float, hi: float, slope: float) -> torch.Tensor:
        return _leaky_clamp_values(x, lo, hi, slope)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, ctx.lo, ctx.hi, ctx.slope = inputs
        save_input(ctx, x)

    @staticmethod
    def derivative(ctx: Any, v: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return _leaky_clamp_derivative(x, v, ctx.lo, ctx.hi, ctx.slope)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return _LeakyClamp.derivative(ctx, grad), None, None, None


@torch.compiler.assume_constant_result
def _leaky_clamp_native(lo: float, hi: float, slope: float) -> tuple[str, tuple[float, ...]]:
    """The C kernel's name and parameters (a constant to dynamo)."""
    return "leaky_clamp", (lo, hi, slope)


@functools.lru_cache(maxsize=256)
def _leaky_clamp_kernel(lo: float, hi: float, slope: float) -> NativeKernel:
    rule = functools.partial(_leaky_clamp_derivative, lo=lo, hi=hi, slope=slope)
    return native_kernel(*_leaky_clamp_native(lo, hi, slope), rule)


# Eager: one pass each way, the memory traffic of a clamp, where ATen takes two forward and two back.
@implements("leaky_clamp", "torch")
@native_first(_leaky_clamp_kernel)
def leaky_clamp(x: torch.Tensor, *, lo: float, hi: float, slope: float) -> torch.Tensor:
    if compiled_kernel_serves(x, "leaky_clamp"):
        # Against a compiled clamp at 2^22, one process: forward+backward 0.10-0.13 where
        # inductor's code for the formula took 1.14-1.42. Forward alone a tie (1.02-1.08 against
        # 1.01-1.07), so there inductor's code stays (_decisions.COMPILED_KERNELS), which can
        # fuse with the ops around it.
        return compiled_elementwise(x, *_leaky_clamp_native(float(lo), float(hi), float(slope)))
    return apply(_LeakyClamp, x, lo, hi, slope) if tracks_grad(x) else _leaky_clamp_values(x, lo, hi, slope)


@implements("ste_clamp", "torch")
def ste_clamp(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    return clamp_straight_through(x, lo, hi)
