"""Pure PyTorch functions, one per technique, registered with ``harness.implements``.

Every kink gradient is chosen here explicitly (see each declaration in harness/catalog.py):
custom autograd Functions state the rule, never the convention of the primitive that computes
the forward. Where a fused ATen kernel computes exactly the declared rule it is called by name,
and the kink tests pin its result at and beside every kink.
"""

from __future__ import annotations

import math
from typing import Any

import torch

import native
from harness import implements
from harness.numerics import needs_rounding_guard

_LOW = (torch.float16, torch.bfloat16)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    # Composite formulas run in float32 for float16/bfloat16 and round once at the end, so
    # both frameworks round the same value (XLA and ATen round intermediates differently).
    return x.float() if x.dtype in _LOW else x


class _ClampInside(torch.autograd.Function):
    """clamp with gradient 1 strictly inside (lo, hi) and 0 elsewhere, bounds included."""

    @staticmethod
    def forward(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return torch.clamp(x, lo, hi)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, ctx.lo, ctx.hi = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        # ATen's fused hardtanh_backward computes exactly the declared rule, grad where
        # lo < x < hi and 0 where x <= lo or x >= hi, three times faster than torch.where on CPU.
        # The kink tests pin its result at and beside both bounds, release after release.
        return torch.ops.aten.hardtanh_backward(grad, x, ctx.lo, ctx.hi), None, None


class _ClampStraightThrough(torch.autograd.Function):
    """clamp whose gradient is 1 everywhere: only for rounding guards, never a modelled kink."""

    @staticmethod
    def forward(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return torch.clamp(x, lo, hi)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


def _tracks_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _clamp_straight_through(x: torch.Tensor, lo: float, hi: float, *, fresh: bool = False) -> torch.Tensor:
    """clamp with gradient 1 everywhere (rounding guards, ste_clamp). ``fresh``: ``x`` is a
    temporary made by the caller, so without autograd it is clamped in place."""
    if _tracks_grad(x):
        return _ClampStraightThrough.apply(x, lo, hi)
    return x.clamp_(lo, hi) if fresh else torch.clamp(x, lo, hi)


def _clamp_inside(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    # Without autograd the plain fused clamp runs; the Function only adds the kink rule.
    return _ClampInside.apply(x, lo, hi) if _tracks_grad(x) else torch.clamp(x, lo, hi)


@implements("sigmoid", "torch")
def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


@implements("tanh", "torch")
def tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


@implements("clamp", "torch")
def clamp(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    return _clamp_inside(x, lo, hi)


@implements("bounded_relu", "torch")
def bounded_relu(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    # clamp(relu(x), lo, hi) == clamp(x, max(lo, 0), hi): one pass instead of two.
    return _clamp_inside(x, max(lo, 0.0), hi)


# Elements per block on CPU: a block's temporaries stay in cache, so the six passes of the
# formula cost about one trip to memory (see bench/speed_ratios.py for the measured effect).
_CHUNK = 1 << 19


def _chunk(x: torch.Tensor) -> int:
    # One block when compiling (inductor fuses anyway) or on an accelerator (launches cost more).
    return _CHUNK if x.device.type == "cpu" and not torch.compiler.is_compiling() else max(x.numel(), 1)


def _blocks(x: torch.Tensor) -> list[slice]:
    step = _chunk(x)
    return [slice(start, start + step) for start in range(0, x.numel(), step)]


def _in_place_forward() -> bool:
    """Whether a custom Function's forward may return a tensor it wrote in place: not under
    torch.compile. There torch 2.11 routes the gradient of such an output to the wrong slot and
    returns dx = 0 without an error (pytorch#180642; this repository's GPU bench caught it), and
    inductor fuses the out-of-place form into one kernel, so writing in place gains nothing.
    The same release does the same to an output that aliases an intermediate: see _as_dtype."""
    return not torch.compiler.is_compiling()


def _guard_always() -> bool:
    """Whether rounding guards apply without asking whether rounding needs them: under
    torch.compile. Fused into the kernel the clamp costs nothing there, and the Python decision
    (numpy arithmetic on the parameters) would break the graph, or fail on parameters that
    dynamo traces as symbols (torch 2.11 on CUDA)."""
    return torch.compiler.is_compiling()


def _as_dtype(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Not y.to(dtype) when y has it already: that returns an alias of y, and a compiled custom
    # Function whose forward returns an alias gets dx = 0 from torch 2.11 (as in _in_place_forward).
    return y if y.dtype == dtype else y.to(dtype)


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


def _native(x: torch.Tensor) -> bool:
    """Whether the C kernel (native/) computes smooth_clamp: eager, CPU, float32, where it built.
    ATen has no fused op for the formula, and its six passes cost about 2.7 sigmoids where the
    kernel's one costs about 1.1 (README, speed targets); under torch.compile inductor fuses.

    Only a plain tensor with memory behind it: under torch.func transforms and vmap tensors are
    wrappers without storage, fake tensors (torch.export, FakeTensorMode) have a null one, and
    torch.jit.trace would record an empty output, since it sees no op the kernel performs."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or type(x) not in (torch.Tensor, torch.nn.Parameter):
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or not native.available():
        return False
    try:
        return x.untyped_storage().data_ptr() != 0
    except RuntimeError:  # "Cannot access storage of TensorWrapper" (torch.func) and the like
        return False


def _run_native(kernel: Any, *inputs: torch.Tensor, lo: float, hi: float, r: float) -> torch.Tensor:
    """A fresh contiguous output of ``kernel`` (a native/ function) applied to ``inputs``."""
    contiguous = [t.contiguous() for t in inputs]
    out = torch.empty_like(contiguous[0])
    if out.numel():
        addresses = [t.data_ptr() for t in (*contiguous, out)]
        kernel(*addresses, out.numel(), lo=lo, hi=hi, r=r, threads=torch.get_num_threads())
    return out


def _smooth_clamp_values(x: torch.Tensor, lo: float, hi: float, r: float) -> torch.Tensor:
    """m + 2r (sigmoid(2e/r) - 1/2) with m = clamp(x, lo + r, hi - r) and e = x - m.

    Equal to the declared tails (hi - 2r sigmoid(-2e/r), lo + 2r sigmoid(2e/r)), and exactly m = x
    in the middle (sigmoid(0) - 1/2 == 0). The added term lies in [-r, r], so by monotone rounding
    the output stays in [lo, hi] whenever (lo + r) - r == lo and (hi - r) + r == hi in the compute
    dtype; otherwise a final clamp guards the rounding. Computed block by block: six passes per
    block, one of them a sigmoid. Eager CPU float32 runs the C kernel instead (see _native).
    """
    if not _in_place_forward():
        return _smooth_clamp_fused(x, lo, hi, r)
    if _native(x):
        return _run_native(native.smooth_clamp_forward_f32, x, lo=lo, hi=hi, r=r)
    compute = torch.float32 if x.dtype in _LOW else x.dtype
    guard = needs_rounding_guard(lo, hi, r, str(compute).removeprefix("torch."))
    b_lo, b_hi = lo + r, hi - r
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    flat_x, flat_out = x.reshape(-1), out.view(-1)
    size = min(_chunk(x), flat_x.numel())
    excess, middle = torch.empty((2, size), dtype=compute, device=x.device)
    for block in _blocks(x):
        xs = flat_x[block].to(compute)
        n = xs.numel()
        y = flat_out[block] if compute == x.dtype else torch.empty_like(xs)
        e, m = excess[:n], middle[:n]
        has_middle = _excess(xs, b_lo, b_hi, e, m)
        # The sigmoid is the pass that first writes the output block: its arithmetic hides the
        # trip to memory that a cheap pass writing it first would wait for.
        torch.sigmoid(e.mul_(2.0 / r), out=y)
        y.sub_(0.5)
        if not has_middle:
            m = torch.clamp(xs, b_lo, b_hi, out=e)  # e is free after the sigmoid
        torch.add(m, y, alpha=2.0 * r, out=y)
        if guard:
            y.clamp_(lo, hi)
        if compute != x.dtype:
            flat_out[block].copy_(y)
    return out


def _smooth_clamp_fused(x: torch.Tensor, lo: float, hi: float, r: float) -> torch.Tensor:
    """The same formula out of place, for torch.compile, which fuses it into one kernel, with its
    rounding guard always applied (see _guard_always; no value in [lo, hi] changes)."""
    xc = _upcast(x)
    m = torch.clamp(xc, lo + r, hi - r)
    y = m + (2.0 * r) * (torch.sigmoid((xc - m) * (2.0 / r)) - 0.5)
    return _as_dtype(torch.clamp(y, lo, hi), x.dtype)


def _smooth_clamp_grad(x: torch.Tensor, grad: torch.Tensor, lo: float, hi: float, r: float) -> torch.Tensor:
    """grad * 4 s (1 - s) with s = sigmoid(-2|e|/r), block by block like the forward."""
    if _native(x) and _native(grad):
        return _run_native(native.smooth_clamp_backward_f32, x, grad, lo=lo, hi=hi, r=r)
    compute = torch.float32 if x.dtype in _LOW else x.dtype
    out = torch.empty(x.shape, dtype=grad.dtype, device=x.device)
    flat_x, flat_grad, flat_out = x.reshape(-1), grad.reshape(-1), out.view(-1)
    excess, middle = torch.empty((2, min(_chunk(x), flat_x.numel())), dtype=compute, device=x.device)
    for block in _blocks(x):
        xs = flat_x[block].to(compute)
        s = flat_out[block] if compute == grad.dtype else torch.empty_like(xs)
        e = excess[: xs.numel()]
        _excess(xs, lo + r, hi - r, e, middle[: xs.numel()])
        torch.sigmoid(e.abs_().mul_(-2.0 / r), out=s)
        # s - s * s, then the two products.
        s.addcmul_(s, s, value=-1.0).mul_(flat_grad[block].to(compute)).mul_(4.0)
        if compute != grad.dtype:
            flat_out[block].copy_(s)
    return out


class _SmoothClamp(torch.autograd.Function):
    """Forward as above; gradient 4 s (1 - s) with s = sigmoid(-2|e|/r) taken on its small side,
    which is exactly 1 on the linear middle and stays > 0 far into the tails."""

    @staticmethod
    def forward(x: torch.Tensor, lo: float, hi: float, r: float) -> torch.Tensor:
        return _smooth_clamp_values(x, lo, hi, r)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, ctx.lo, ctx.hi, ctx.r = inputs
        ctx.save_for_backward(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (x,) = ctx.saved_tensors
        return _smooth_clamp_grad(x, grad, ctx.lo, ctx.hi, ctx.r), None, None, None


@implements("smooth_clamp", "torch")
def smooth_clamp(x: torch.Tensor, *, lo: float, hi: float, linear_fraction: float) -> torch.Tensor:
    r = (1.0 - linear_fraction) * (hi - lo) / 2.0
    if _tracks_grad(x):
        return _SmoothClamp.apply(x, lo, hi, r)
    return _smooth_clamp_values(x, lo, hi, r)


def _eager_cpu(x: torch.Tensor) -> bool:
    # Data-dependent fast paths pay off in eager mode on CPU, where torch.where costs as much as
    # six sigmoids; under torch.compile or on an accelerator the branch-free form is fast as is.
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def _limit_shift(xc: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x - max along axis, with rows holding an infinity replaced by their limit (the +inf
    entries at 0, the rest at -inf; an all -inf row at 0), and the row maxima."""
    top = torch.amax(xc, dim=axis, keepdim=True).detach()
    if _eager_cpu(xc) and bool(torch.isfinite(top).all()):
        return xc - top, top
    z = xc - torch.where(torch.isfinite(top), top, 0.0)
    z = torch.where(top == math.inf, torch.where(xc == math.inf, 0.0, -math.inf), z)
    return torch.where(top == -math.inf, 0.0, z), top


@implements("softmax", "torch")
def softmax(x: torch.Tensor, *, axis: int) -> torch.Tensor:
    if x.shape[axis] == 0:
        return x.clone()
    xc = _upcast(x)
    # Rows holding an infinity take their limit instead of NaN: +inf entries share the mass,
    # an all -inf row is uniform. NaN rows stay NaN (amax propagates NaN).
    z, _ = _limit_shift(xc, axis)
    e = torch.exp(z)
    # e / sum(e) with sum(e) >= e (rounded sums of non-negatives only grow): never above 1.
    return (e / e.sum(dim=axis, keepdim=True)).to(x.dtype)


def _prescale(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` divided by a power of two per group, and that power (the group's scale).

    Groups whose largest magnitude exceeds 1 are divided by a power of two (exact) that brings it
    below 4 (one binade below the estimate, since log2 of the largest float32 rounds up to 128),
    so squares cannot overflow at the largest finite inputs. A group holding an infinity takes
    its limit: its infinite entries become +-1, the rest 0.
    """
    amax = torch.amax(x.abs(), dim=dims, keepdim=True).detach()
    big = torch.isfinite(amax) & (amax > 1.0)
    scale = torch.where(big, torch.exp2(torch.floor(torch.log2(torch.where(big, amax, 1.0))) - 1.0), 1.0).to(x.dtype)
    if _eager_cpu(x) and bool(torch.isfinite(amax).all()):
        # No infinity and no NaN in any group: the branch-free form below reduces to this.
        return (x / scale if bool(big.any()) else x), scale
    return torch.where(torch.isinf(amax), torch.where(torch.isinf(x), torch.sign(x), 0.0), x / scale), scale


def _standardize(x: torch.Tensor, dims: tuple[int, ...], eps: float) -> tuple[torch.Tensor, ...]:
    """(x - mean) / sqrt(var + eps) over ``dims``, with mean and biased variance (two-pass), on
    prescaled groups (see :func:`_prescale`); the eps term is scaled to match, which leaves the
    result unchanged."""
    scaled, scale = _prescale(x, dims)
    mean = scaled.mean(dim=dims, keepdim=True)
    centred = scaled - mean
    var = (centred * centred).mean(dim=dims, keepdim=True)
    # eps / scale^2 underflows for huge constant groups; the smallest normal keeps 0 / 0 away.
    xhat = centred / torch.sqrt(var + torch.clamp_min(eps / (scale * scale), torch.finfo(x.dtype).tiny))
    return xhat, mean * scale, var * scale * scale


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, *, eps: float) -> torch.Tensor:
    xc = _upcast(x)
    xhat, _, _ = _standardize(xc, (-1,), eps)
    if weight is None:
        # Declared bound sqrt(n - 1); eps keeps the exact value inside, this guards rounding.
        bound = math.sqrt(x.shape[-1] - 1)
        y = _clamp_straight_through(xhat, -bound, bound)
    else:
        y = torch.addcmul(_upcast(bias), xhat, _upcast(weight))
    return y.to(x.dtype)


def batch_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    *,
    training: bool,
    momentum: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (output, new running mean, new running variance); channels on axis 1."""
    xc = _upcast(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        dims = (0, *range(2, x.ndim))
        count = x.numel() // x.shape[1]
        xhat, mean, var = _standardize(xc, dims, eps)
        mean, var = mean.detach().reshape(-1), var.detach().reshape(-1)
        # PyTorch's meaning: momentum weights the new batch; the running variance is unbiased.
        new_mean = (1.0 - momentum) * _upcast(running_mean) + momentum * mean
        new_var = (1.0 - momentum) * _upcast(running_var) + momentum * (var * (count / (count - 1)))
        new_mean, new_var = new_mean.to(running_mean.dtype), new_var.to(running_var.dtype)
    else:
        xhat = (xc - _upcast(running_mean).reshape(shape)) / torch.sqrt(_upcast(running_var).reshape(shape) + eps)
        new_mean, new_var = running_mean, running_var
    y = xhat * _upcast(weight).reshape(shape) + _upcast(bias).reshape(shape)
    return y.to(x.dtype), new_mean, new_var
