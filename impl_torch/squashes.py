"""PyTorch squashes and their inverses (declared in ``harness/squashes.py``; mirrors
``impl_jax/squashes.py``). Inverses map the open range (lo, hi) onto the reals, lo and hi to
-inf and inf, values outside to NaN."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from harness import implements, implements_inverse
from harness.numerics import affine_needs_guard
from harness.squashes import SmoothClampParts, smooth_clamp_needs_guard, smooth_clamp_parts, soft_clip_shrink
from impl_torch._common import (
    NativeKernel,
    apply,
    as_dtype,
    blocks,
    clamp_straight_through,
    compiled_elementwise,
    compute_dtype,
    native_first,
    native_kernel,
    save_input,
    upcast,
)
from impl_torch._decisions import (
    block_size,
    compiled_kernel_serves,
    may_write_in_place,
    tracks_grad,
)
from impl_torch._native.memory import has_memory


@implements("sigmoid", "torch")
def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


@implements("tanh", "torch")
def tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


# Whether a formula's output needs its final clamp to the bounds: the declaration's answer for
# the parameters (rounding can step past a bound, or not). Under torch.compile each runs once, at
# trace time, and its answer enters the graph as a constant (assume_constant_result; floats in,
# as dynamo converts only constants): traced, its numpy arithmetic would become tensor ops and a
# branch on them a graph break. The clamp it saves is not free there: inductor's clamp keeps NaN
# with extra selects, 0.3-0.4 of a sigmoid's time (smooth_clamp at 2^22).
@torch.compiler.assume_constant_result
def _affine_guard(lo: float, hi: float, dtype: str) -> bool:
    return affine_needs_guard(lo, hi, dtype)


@torch.compiler.assume_constant_result
def _smooth_clamp_guard(lo: float, hi: float, r: float, b_lo: float, b_hi: float, dtype: str) -> bool:
    return smooth_clamp_needs_guard(lo, hi, SmoothClampParts(r, b_lo, b_hi), dtype)


def _scaled_sigmoid_derivative(x: torch.Tensor, grad: torch.Tensor, lo: float, hi: float, slope: float) -> torch.Tensor:
    s = torch.sigmoid(x * slope)
    return grad * (hi - lo) * (1.0 - s) * s * slope


@torch.compiler.assume_constant_result
def _scaled_sigmoid_native(lo: float, hi: float, slope: float) -> tuple[str, tuple[float, ...]]:
    """The C kernel's name and parameters (a constant to dynamo)."""
    return "scaled_sigmoid", (lo, hi, slope, hi - lo)


@functools.lru_cache(maxsize=256)
def _scaled_sigmoid_kernel(lo: float, hi: float, slope: float) -> NativeKernel:
    rule = functools.partial(_scaled_sigmoid_derivative, lo=lo, hi=hi, slope=slope)
    return native_kernel(*_scaled_sigmoid_native(lo, hi, slope), rule)


def _scaled_sigmoid(x: torch.Tensor, lo: float, hi: float, slope: float, name: str) -> torch.Tensor:
    if compiled_kernel_serves(x, name):
        # Inductor's code for the formula recomputes the sigmoid from x in the backward (the
        # built-in's backward reads its output): 1.32-1.57 sigmoids forward+backward at 2^22, the
        # kernel through the op 1.03-1.15, forward 1.05 and 0.92-0.98 (scaled_tanh alike; one
        # process, against a compiled torch.sigmoid). Forward only from 2^19 elements: see
        # _decisions.COMPILED_KERNELS.
        return compiled_elementwise(x, *_scaled_sigmoid_native(float(lo), float(hi), float(slope)))
    xc = upcast(x)
    s = torch.sigmoid(xc * slope if slope != 1.0 else xc)
    # lo + (hi - lo) * s stays <= hi by monotone rounding whenever lo + (hi - lo) rounds to <= hi.
    # Without a graph the sigmoid's fresh output is scaled in place (scaled_sigmoid 1.5 sigmoids
    # against 1.75 at 2^22, measured); autograd keeps it for the sigmoid's backward.
    in_place = may_write_in_place() and not tracks_grad(xc)
    y = (s.mul_(hi - lo) if in_place else s.mul(hi - lo)).add_(lo)
    if _affine_guard(lo, hi, str(xc.dtype).removeprefix("torch.")):
        y = clamp_straight_through(y, lo, hi, fresh=True)
    return y.to(x.dtype)


# Eager, scaled_sigmoid and scaled_tanh: one pass, where ATen's sigmoid, scale and shift take three
# (1.5-1.75 sigmoids at 2^22).
def _scaled_sigmoid_of(lo: float, hi: float) -> NativeKernel:
    """scaled_sigmoid's kernel: the scaled sigmoid of slope 1."""
    return _scaled_sigmoid_kernel(lo, hi, 1.0)


def _scaled_tanh_of(lo: float, hi: float) -> NativeKernel:
    """scaled_tanh's kernel: (tanh(x) + 1) / 2 is sigmoid(2x)."""
    return _scaled_sigmoid_kernel(lo, hi, 2.0)


@implements("scaled_sigmoid", "torch")
@native_first(_scaled_sigmoid_of)
def scaled_sigmoid(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    return _scaled_sigmoid(x, lo, hi, 1.0, "scaled_sigmoid")


@implements("scaled_tanh", "torch")
@native_first(_scaled_tanh_of)
def scaled_tanh(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    # (tanh(x) + 1) / 2 == sigmoid(2x); ATen's tanh is six times slower than its sigmoid on CPU.
    return _scaled_sigmoid(x, lo, hi, 2.0, "scaled_tanh")


def _softsign_values(x: torch.Tensor) -> torch.Tensor:
    xc = upcast(x)
    # +-inf -> +-largest finite, whose softsign rounds to +-1 (the limit) instead of inf / inf.
    big = torch.finfo(xc.dtype).max
    xf = torch.clamp(xc, -big, big)
    if not may_write_in_place():
        return as_dtype(xf / (xf.abs() + 1.0), x.dtype)
    return xf.div_(xf.abs().add_(1.0)).to(x.dtype)


def _softsign_rule(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """v / (1 + |x|)^2, softsign's derivative applied to ``v``: the Function's and the kernel's
    second order alike."""
    t = upcast(x).abs().add_(1.0)
    # Divided twice rather than by t * t, which overflows (|x| > 1.8e19 in float32) where the
    # derivative is still a representable subnormal. +-inf gives 0, the limit. In place only
    # where no graph is built (a second-order graph needs the first quotient).
    once = upcast(v).div(t)
    return as_dtype(once.div_(t) if not torch.is_grad_enabled() else once / t, v.dtype)


@functools.cache
def _softsign_kernel() -> NativeKernel:
    return native_kernel("softsign", (), _softsign_rule)


class _Softsign(torch.autograd.Function):
    """x / (1 + |x|) with the declared derivative 1 / (1 + |x|)^2 in closed form: four passes
    instead of autograd's walk back through the division, the absolute value and the clamp."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _softsign_values(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        save_input(ctx, inputs[0])

    @staticmethod
    def derivative(ctx: Any, v: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return _softsign_rule(x, v)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return _Softsign.derivative(ctx, grad)


# Eager: one pass each way, the same operations in the same order, where the formula takes four
# forward (F.softsign's own composite three) and four back.
@implements("softsign", "torch")
@native_first(_softsign_kernel)
def softsign(x: torch.Tensor) -> torch.Tensor:
    return apply(_Softsign, x) if tracks_grad(x) else _softsign_values(x)


class _Softplus(torch.autograd.Function):
    """max(v, 0) + log1p(exp(-|v|)) with derivative sigmoid(v) by declaration (also at v == 0,
    where autodiff of max and abs would split or drop the gradient)."""

    @staticmethod
    def forward(v: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(v, 0.0) + torch.log1p(torch.exp(-v.abs()))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        save_input(ctx, inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (v,) = ctx.saved_tensors
        return grad * torch.sigmoid(v)

    @staticmethod
    def tangent_rule(ctx: Any, v_t: torch.Tensor) -> torch.Tensor:
        (v,) = ctx.saved_tensors
        return v_t * torch.sigmoid(v)


def _softplus_c(v: torch.Tensor, c: float) -> torch.Tensor:
    return apply(_Softplus, v / c) * c


def _soft_clip_derivative(
    x: torch.Tensor, grad: torch.Tensor, lo: float, w: float, c: float, shrink: float
) -> torch.Tensor:
    inner = _softplus_c(x - lo, c)
    return grad * shrink * torch.sigmoid((w - inner) / c) * torch.sigmoid((x - lo) / c)


@torch.compiler.assume_constant_result
def _soft_clip_native(lo: float, hi: float, c: float) -> tuple[str, tuple[float, ...]]:
    """The C kernel's name and parameters (a constant to dynamo)."""
    return "soft_clip", (lo, hi, c, soft_clip_shrink(lo, hi, c), hi - lo)


@functools.lru_cache(maxsize=256)
def _soft_clip_kernel(lo: float, hi: float, hinge_softness: float) -> NativeKernel:
    c = hinge_softness
    w, shrink = hi - lo, soft_clip_shrink(lo, hi, c)
    rule = functools.partial(_soft_clip_derivative, lo=lo, w=w, c=c, shrink=shrink)
    return native_kernel(*_soft_clip_native(lo, hi, c), rule)


# Eager: one pass with two exp and two log1p, where the formula takes about ten ATen passes.
@implements("soft_clip", "torch")
@native_first(_soft_clip_kernel)
def soft_clip(x: torch.Tensor, *, lo: float, hi: float, hinge_softness: float) -> torch.Tensor:
    if compiled_kernel_serves(x, "soft_clip"):
        # Against the compiled softplus composition at 2^22, one process: inductor's code for
        # the formula 1.07-1.11 forward and forward+backward, the kernel through the op 0.85-0.90
        # and 0.62-0.66.
        return compiled_elementwise(x, *_soft_clip_native(float(lo), float(hi), float(hinge_softness)))
    c, w = hinge_softness, hi - lo
    shrink = soft_clip_shrink(lo, hi, c)
    xc = upcast(x)
    y = hi - _softplus_c(w - _softplus_c(xc - lo, c), c) * shrink
    # hi - positive <= hi; the shrink factor can round the lower end an ulp below lo.
    y = clamp_straight_through(y, lo, hi, fresh=True)
    return y.to(x.dtype)


def _excess(xs: torch.Tensor, b_lo: float, b_hi: float, out: torch.Tensor, middle: torch.Tensor) -> bool:
    """``out`` = x - clamp(x, b_lo, b_hi). Returns whether ``middle`` now holds that clamp; on
    symmetric joins it is left unwritten, since softshrink gets the excess without it."""
    if b_lo == -b_hi and b_hi >= 0.0:
        # softshrink(x, b_hi) is x - clamp(x, -b_hi, b_hi) bit for bit (up to the sign of a zero,
        # which the sigmoid or abs after it ignores), in one pass reading only x.
        torch._C._nn.softshrink(xs, b_hi, out=out)
        return False
    torch.clamp(xs, b_lo, b_hi, out=middle)
    torch.sub(xs, middle, out=out)
    return True


def _smooth_clamp_values(x: torch.Tensor, lo: float, hi: float, parts: SmoothClampParts) -> torch.Tensor:
    """m + 2r (sigmoid(2e/r) - 1/2) with m = clamp(x, lo + r, hi - r) and e = x - m.

    Equal to the declared tails (hi - 2r sigmoid(-2e/r), lo + 2r sigmoid(2e/r)), and exactly m = x
    in the middle (sigmoid(0) - 1/2 == 0). The added term lies in [-r, r], so by monotone rounding
    the output stays in [lo, hi] whenever (lo + r) - r == lo and (hi - r) + r == hi in the compute
    dtype; otherwise a final clamp guards the rounding. Computed block by block: six passes per
    block, one of them a sigmoid. Eager CPU float32 runs the C kernel instead (see smooth_clamp).
    """
    if not may_write_in_place():
        return _smooth_clamp_fused(x, lo, hi, parts)
    r, b_lo, b_hi = parts
    compute = compute_dtype(x)
    guard = smooth_clamp_needs_guard(lo, hi, parts, str(compute).removeprefix("torch."))
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    flat_x, flat_out = x.reshape(-1), out.view(-1)
    size = min(block_size(x), flat_x.numel())
    excess, middle = torch.empty((2, size), dtype=compute, device=x.device)
    for block in blocks(x):
        xs = flat_x[block].to(compute)
        n = xs.numel()
        y = flat_out[block] if compute == x.dtype else torch.empty_like(xs)
        e, m = excess[:n], middle[:n]
        has_middle = _excess(xs, b_lo, b_hi, e, m)
        # The sigmoid is the pass that first writes the output block: its arithmetic hides the
        # trip to memory that a cheap pass writing it first would wait for.
        torch.sigmoid(e.mul_(parts.steepness), out=y)
        y.sub_(0.5)
        if not has_middle:
            m = torch.clamp(xs, b_lo, b_hi, out=e)  # e is free after the sigmoid
        torch.add(m, y, alpha=2.0 * r, out=y)
        if guard:
            y.clamp_(lo, hi)
        if compute != x.dtype:
            flat_out[block].copy_(y)
    return out


def _smooth_clamp_fused(x: torch.Tensor, lo: float, hi: float, parts: SmoothClampParts) -> torch.Tensor:
    """The same formula out of place, wherever writing in place is not allowed (torch.compile,
    which fuses it into one kernel; torch.func transforms; forward AD; tracing), with its
    rounding guard where the declaration says rounding needs it, as above."""
    r, b_lo, b_hi = parts
    xc = upcast(x)
    m = torch.clamp(xc, b_lo, b_hi)
    excess = torch.sigmoid((xc - m) * parts.steepness) - 0.5
    # Inductor keeps a product by 1 (2r for the default bounds): one vector operation in eleven.
    y = m + (excess if 2.0 * r == 1.0 else (2.0 * r) * excess)
    if _smooth_clamp_guard(lo, hi, r, b_lo, b_hi, str(xc.dtype).removeprefix("torch.")):
        y = torch.clamp(y, lo, hi)
    return as_dtype(y, x.dtype)


def _smooth_clamp_slope(x: torch.Tensor, parts: SmoothClampParts) -> torch.Tensor:
    """4 s (1 - s) with s = sigmoid(-2|e|/r), in the compute dtype, out of place: for torch.func
    transforms and forward mode, and differentiable for second order."""
    xc = upcast(x)
    s = torch.sigmoid((xc - torch.clamp(xc, parts.b_lo, parts.b_hi)).abs() * -parts.steepness)
    return 4.0 * s * (1.0 - s)


def _smooth_clamp_rule(x: torch.Tensor, grad: torch.Tensor, parts: SmoothClampParts) -> torch.Tensor:
    """grad * 4 s (1 - s), out of place and differentiable (second order)."""
    return as_dtype(upcast(grad) * _smooth_clamp_slope(x, parts), grad.dtype)


def _smooth_clamp_grad(x: torch.Tensor, grad: torch.Tensor, parts: SmoothClampParts) -> torch.Tensor:
    """grad * 4 s (1 - s) with s = sigmoid(-2|e|/r), block by block like the forward; out of
    place where writing in place is not allowed, or where the result is itself differentiated
    (a backward that builds a graph, for second order), or where ``grad`` has no memory of its
    own (see has_memory: autograd's batched gradients)."""
    if not may_write_in_place() or torch.is_grad_enabled() or not has_memory(grad):
        return _smooth_clamp_rule(x, grad, parts)
    _, b_lo, b_hi = parts
    compute = compute_dtype(x)
    out = torch.empty(x.shape, dtype=grad.dtype, device=x.device)
    flat_x, flat_grad, flat_out = x.reshape(-1), grad.reshape(-1), out.view(-1)
    excess, middle = torch.empty((2, min(block_size(x), flat_x.numel())), dtype=compute, device=x.device)
    for block in blocks(x):
        xs = flat_x[block].to(compute)
        s = flat_out[block] if compute == grad.dtype else torch.empty_like(xs)
        e = excess[: xs.numel()]
        _excess(xs, b_lo, b_hi, e, middle[: xs.numel()])
        torch.sigmoid(e.abs_().mul_(-parts.steepness), out=s)
        # s - s * s, then the two products.
        s.addcmul_(s, s, value=-1.0).mul_(flat_grad[block].to(compute)).mul_(4.0)
        if compute != grad.dtype:
            flat_out[block].copy_(s)
    return out


class _SmoothClamp(torch.autograd.Function):
    """Forward as above; gradient 4 s (1 - s) with s = sigmoid(-2|e|/r) taken on its small side,
    which is exactly 1 on the linear middle and stays > 0 far into the tails. The parts come as
    three floats, not a SmoothClampParts: a generated vmap rule flattens a NamedTuple argument as
    a pytree, and nested transforms (jvp of vmap) then fail to rebuild it."""

    @staticmethod
    def forward(x: torch.Tensor, lo: float, hi: float, r: float, b_lo: float, b_hi: float) -> torch.Tensor:
        return _smooth_clamp_values(x, lo, hi, SmoothClampParts(r, b_lo, b_hi))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, _, _, r, b_lo, b_hi = inputs
        ctx.parts = SmoothClampParts(r, b_lo, b_hi)
        save_input(ctx, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        return _smooth_clamp_grad(x, grad, ctx.parts), None, None, None, None, None

    @staticmethod
    def tangent_rule(ctx: Any, x_t: torch.Tensor, *_: Any) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return _smooth_clamp_rule(x, x_t, ctx.parts)


@torch.compiler.assume_constant_result
def _smooth_clamp_native(lo: float, hi: float, linear_fraction: float) -> tuple[str, tuple[float, ...]]:
    """The C kernel's name and parameters for smooth_clamp with these parameters (a constant to
    dynamo, like the guards above)."""
    parts = smooth_clamp_parts(lo, hi, linear_fraction)
    # The bounds clamp only where float32 rounding can step past them (squashes.c).
    name = "smooth_clamp" if smooth_clamp_needs_guard(lo, hi, parts, "float32") else "smooth_clamp_open"
    return name, (lo, hi, parts.b_lo, parts.b_hi, parts.r, parts.steepness)


@functools.lru_cache(maxsize=256)
def _smooth_clamp_kernel(lo: float, hi: float, linear_fraction: float) -> NativeKernel:
    name, params = _smooth_clamp_native(lo, hi, linear_fraction)
    rule = functools.partial(_smooth_clamp_rule, parts=smooth_clamp_parts(lo, hi, linear_fraction))
    return native_kernel(name, params, rule)


# Eager: one pass each way, where the ATen formula takes six per block forward and five back.
@implements("smooth_clamp", "torch")
@native_first(_smooth_clamp_kernel)
def smooth_clamp(x: torch.Tensor, *, lo: float, hi: float, linear_fraction: float) -> torch.Tensor:
    if compiled_kernel_serves(x, "smooth_clamp"):
        # Inductor's code for the formula below costs 1.5-1.6 sigmoids at 2^22 (forward and
        # forward+backward); the kernel through the op 1.10-1.15 and 1.21-1.25 (measured in one
        # process against a compiled torch.sigmoid; README, speed targets).
        # float(): dynamo hands a module's float attributes on lazily, and converts them for
        # assume_constant_result only once something has read them.
        return compiled_elementwise(x, *_smooth_clamp_native(float(lo), float(hi), float(linear_fraction)))
    parts = smooth_clamp_parts(lo, hi, linear_fraction)
    if tracks_grad(x):
        return apply(_SmoothClamp, x, lo, hi, *parts)
    return _smooth_clamp_values(x, lo, hi, parts)


# --- inverses ------------------------------------------------------------------------------


def _logit(u: torch.Tensor) -> torch.Tensor:
    # log(u) - log1p(-u): -inf at 0, inf at 1, NaN outside [0, 1].
    return torch.log(u) - torch.log1p(-u)


@implements_inverse("sigmoid", "torch")
def sigmoid_inverse(y: torch.Tensor) -> torch.Tensor:
    return _logit(y)


@implements_inverse("tanh", "torch")
def tanh_inverse(y: torch.Tensor) -> torch.Tensor:
    return torch.atanh(y)


@implements_inverse("softsign", "torch")
def softsign_inverse(y: torch.Tensor) -> torch.Tensor:
    return torch.where(y.abs() > 1.0, math.nan, y / (1.0 - y.abs()))


@implements_inverse("scaled_sigmoid", "torch")
def scaled_sigmoid_inverse(y: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    return _logit((y - lo) / (hi - lo))


@implements_inverse("scaled_tanh", "torch")
def scaled_tanh_inverse(y: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    return _logit((y - lo) / (hi - lo)) / 2.0


@implements_inverse("smooth_clamp", "torch")
def smooth_clamp_inverse(y: torch.Tensor, *, lo: float, hi: float, linear_fraction: float) -> torch.Tensor:
    r, b_lo, b_hi = smooth_clamp_parts(lo, hi, linear_fraction)
    upper = b_hi - (r / 2.0) * _logit((hi - y) / (2.0 * r))
    lower = b_lo + (r / 2.0) * _logit((y - lo) / (2.0 * r))
    return torch.where(y > b_hi, upper, torch.where(y < b_lo, lower, y))


def _softplus_inverse(u: torch.Tensor, c: float) -> torch.Tensor:
    # c log(exp(u / c) - 1) written as u + c log(-expm1(-u / c)): -inf at 0, NaN below 0.
    return u + c * torch.log(-torch.expm1(-u / c))


@implements_inverse("soft_clip", "torch")
def soft_clip_inverse(y: torch.Tensor, *, lo: float, hi: float, hinge_softness: float) -> torch.Tensor:
    c, w = hinge_softness, hi - lo
    shrink = soft_clip_shrink(lo, hi, c)
    x = lo + _softplus_inverse(w - _softplus_inverse((hi - y) / shrink, c), c)
    # The bounds exactly, whatever the rounding of the shrink factor does near lo.
    return torch.where(y == lo, -math.inf, torch.where(y == hi, math.inf, x))
