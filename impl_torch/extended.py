"""PyTorch implementations of the extended catalogue (harness/catalog_extended.py); mirrors
``impl_jax/extended.py``. Kink gradients are explicit, as in ``functional.py``."""

from __future__ import annotations

import math
from typing import Any

import torch

from harness import implements
from harness.numerics import affine_needs_guard, soft_clip_shrink
from impl_torch.functional import (
    _as_dtype,
    _clamp_inside,
    _clamp_straight_through,
    _eager_cpu,
    _guard_always,
    _in_place_forward,
    _limit_shift,
    _prescale,
    _tracks_grad,
    _upcast,
)


@implements("hardtanh", "torch")
def hardtanh(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    return _clamp_inside(x, lo, hi)


@implements("relu6", "torch")
def relu6(x: torch.Tensor) -> torch.Tensor:
    return _clamp_inside(x, 0.0, 6.0)


class _Hardsigmoid(torch.autograd.Function):
    """relu6(x + 3) / 6 with gradient 1/6 strictly inside (-3, 3), 0 elsewhere (bounds included)."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _hardsigmoid_values(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        # Not aten.hardsigmoid_backward: it multiplies by 1/6 rounded to float32 even for float64.
        return torch.ops.aten.hardtanh_backward(grad, x, -3.0, 3.0).mul_(1.0 / 6.0)


def _hardsigmoid_values(x: torch.Tensor) -> torch.Tensor:
    # ATen's fused kernel computes min(max(x + 3, 0), 6) / 6, the declared formula, in one pass
    # (low precision in float32, rounded once): bit for bit clamp(x + 3, 0, 6) / 6 in all four
    # dtypes, NaN included. The reference, bounds and kink tests pin it, release after release.
    return torch.nn.functional.hardsigmoid(x)


@implements("hardsigmoid", "torch")
def hardsigmoid(x: torch.Tensor) -> torch.Tensor:
    return _Hardsigmoid.apply(x) if _tracks_grad(x) else _hardsigmoid_values(x)


def _softsign_values(x: torch.Tensor) -> torch.Tensor:
    xc = _upcast(x)
    # +-inf -> +-largest finite, whose softsign rounds to +-1 (the limit) instead of inf / inf.
    big = torch.finfo(xc.dtype).max
    xf = torch.clamp(xc, -big, big)
    if not _in_place_forward():
        return _as_dtype(xf / (xf.abs() + 1.0), x.dtype)
    return xf.div_(xf.abs().add_(1.0)).to(x.dtype)


class _Softsign(torch.autograd.Function):
    """x / (1 + |x|) with the declared derivative 1 / (1 + |x|)^2 in closed form: four passes
    instead of autograd's walk back through the division, the absolute value and the clamp."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _softsign_values(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        t = _upcast(x).abs().add_(1.0)
        # Divided twice rather than by t * t, which overflows (|x| > 1.8e19 in float32) where the
        # derivative is still a representable subnormal. +-inf gives 0, the limit.
        return _upcast(grad).div(t).div_(t).to(grad.dtype)


@implements("softsign", "torch")
def softsign(x: torch.Tensor) -> torch.Tensor:
    return _Softsign.apply(x) if _tracks_grad(x) else _softsign_values(x)


def _scaled_sigmoid(x: torch.Tensor, lo: float, hi: float, slope: float) -> torch.Tensor:
    xc = _upcast(x)
    s = torch.sigmoid(xc * slope if slope != 1.0 else xc)
    # lo + (hi - lo) * s stays <= hi by monotone rounding whenever lo + (hi - lo) rounds to <= hi.
    y = s.mul(hi - lo).add_(lo)
    if _guard_always() or affine_needs_guard(lo, hi, str(xc.dtype).removeprefix("torch.")):
        y = _clamp_straight_through(y, lo, hi, fresh=True)
    return y.to(x.dtype)


@implements("scaled_sigmoid", "torch")
def scaled_sigmoid(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    return _scaled_sigmoid(x, lo, hi, 1.0)


@implements("scaled_tanh", "torch")
def scaled_tanh(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    # (tanh(x) + 1) / 2 == sigmoid(2x); ATen's tanh is six times slower than its sigmoid on CPU.
    return _scaled_sigmoid(x, lo, hi, 2.0)


class _Softplus(torch.autograd.Function):
    """max(v, 0) + log1p(exp(-|v|)) with derivative sigmoid(v) by declaration (also at v == 0,
    where autodiff of max and abs would split or drop the gradient)."""

    @staticmethod
    def forward(v: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(v, 0.0) + torch.log1p(torch.exp(-v.abs()))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (v,) = ctx.saved_tensors
        return grad * torch.sigmoid(v)


def _softplus_c(v: torch.Tensor, c: float) -> torch.Tensor:
    return _Softplus.apply(v / c) * c


@implements("soft_clip", "torch")
def soft_clip(x: torch.Tensor, *, lo: float, hi: float, hinge_softness: float) -> torch.Tensor:
    c, w = hinge_softness, hi - lo
    shrink = soft_clip_shrink(lo, hi, c)
    xc = _upcast(x)
    y = hi - _softplus_c(w - _softplus_c(xc - lo, c), c) * shrink
    # hi - positive <= hi; the shrink factor can round the lower end an ulp below lo.
    y = _clamp_straight_through(y, lo, hi, fresh=True)
    return y.to(x.dtype)


@implements("ste_clamp", "torch")
def ste_clamp(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    return _clamp_straight_through(x, lo, hi)


class _LeakyClamp(torch.autograd.Function):
    """m + slope (x - m), m = clamp(x, lo, hi); gradient 1 strictly inside, slope elsewhere."""

    @staticmethod
    def forward(x: torch.Tensor, lo: float, hi: float, slope: float) -> torch.Tensor:
        return _leaky_clamp_values(x, lo, hi, slope)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, ctx.lo, ctx.hi, ctx.slope = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (x,) = ctx.saved_tensors
        inside = torch.ops.aten.hardtanh_backward(grad, x, ctx.lo, ctx.hi)  # grad inside, 0 at and beyond
        return inside.mul_(1.0 - ctx.slope).add_(grad, alpha=ctx.slope), None, None, None


def _leaky_clamp_values(x: torch.Tensor, lo: float, hi: float, slope: float) -> torch.Tensor:
    # In float32 for float16/bfloat16: x - m can overflow those although the output cannot.
    xc = _upcast(x)
    m = torch.clamp(xc, lo, hi)
    if not _in_place_forward():
        return _as_dtype(m + slope * (xc - m), x.dtype)
    return m.add_(torch.sub(xc, m), alpha=slope).to(x.dtype)


@implements("leaky_clamp", "torch")
def leaky_clamp(x: torch.Tensor, *, lo: float, hi: float, slope: float) -> torch.Tensor:
    return _LeakyClamp.apply(x, lo, hi, slope) if _tracks_grad(x) else _leaky_clamp_values(x, lo, hi, slope)


@implements("log_softmax", "torch")
def log_softmax(x: torch.Tensor, *, axis: int) -> torch.Tensor:
    if x.shape[axis] == 0:
        return x.clone()
    z, _ = _limit_shift(_upcast(x), axis)
    # z <= 0 and log(sum(exp(z))) >= 0 (the row's maximum contributes exp(0) = 1): never above 0.
    return (z - torch.log(torch.exp(z).sum(dim=axis, keepdim=True))).to(x.dtype)


class _Sparsemax(torch.autograd.Function):
    """Projection onto the simplex; gradient g - mean_S(g) on the support S, zero on rows that
    held an infinity."""

    @staticmethod
    def forward(z: torch.Tensor, axis: int, finite_rows: torch.Tensor) -> torch.Tensor:
        zs = torch.sort(z, dim=axis, descending=True).values
        cs = zs.cumsum(dim=axis)
        shape = [1] * z.ndim
        shape[axis] = -1
        k = torch.arange(1, z.shape[axis] + 1, dtype=z.dtype, device=z.device).reshape(shape)
        # At least 1: a NaN row counts no support (its output is set to NaN afterwards).
        support = (1.0 + k * zs > cs).sum(dim=axis, keepdim=True).clamp_min(1)
        tau = (torch.gather(cs, axis, support - 1) - 1.0) / support.to(z.dtype)
        return torch.clamp_min(z - tau, 0.0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        _, ctx.axis, finite_rows = inputs
        ctx.save_for_backward(output, finite_rows)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        y, finite_rows = ctx.saved_tensors
        on = (y > 0).to(grad.dtype) * finite_rows.to(grad.dtype)
        mean = (grad * on).sum(dim=ctx.axis, keepdim=True) / on.sum(dim=ctx.axis, keepdim=True).clamp_min(1.0)
        return (grad - mean) * on, None, None


@implements("sparsemax", "torch")
def sparsemax(x: torch.Tensor, *, axis: int) -> torch.Tensor:
    if x.shape[axis] == 0:
        return x.clone()
    xc = _upcast(x)
    z, top = _limit_shift(xc, axis)
    y = _Sparsemax.apply(z, axis % x.ndim, torch.isfinite(top))
    # The largest output is max(z) - tau <= 1 in exact arithmetic; this guards the rounding.
    y = _clamp_straight_through(y, 0.0, 1.0, fresh=True)
    # NaN rows stay NaN: sorting and counting would otherwise hide the NaN.
    nan_rows = torch.isnan(top)
    if not _eager_cpu(xc) or bool(nan_rows.any()):
        y = torch.where(nan_rows, top, y)
    return y.to(x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, *, eps: float | None) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight, with the power-of-two prescaling of _standardize."""
    xc = _upcast(x)
    if eps is None:
        # PyTorch's meaning: the machine epsilon of the dtype it computes in (float32 for float16
        # and bfloat16 inputs, as torch.nn.RMSNorm does), not of the input's.
        eps = torch.finfo(xc.dtype).eps
    scaled, scale = _prescale(xc, (-1,))
    ms = (scaled * scaled).mean(dim=-1, keepdim=True)
    y = scaled / torch.sqrt(ms + torch.clamp_min(eps / (scale * scale), torch.finfo(xc.dtype).tiny))
    if weight is None:
        bound = math.sqrt(x.shape[-1])
        y = _clamp_straight_through(y, -bound, bound)
    else:
        y = y * _upcast(weight)
    return y.to(x.dtype)
