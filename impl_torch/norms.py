"""PyTorch norms: the functions and their module classes (declared in ``harness/norms.py``;
mirrors ``impl_jax/norms.py``). PyTorch's parameter meaning throughout.

Groups are scaled by an exact power of two before their statistics (see ``_prescale``), so the
largest finite inputs do not overflow. Modules validate nothing themselves (the declaration
did); they check the input through the same harness function as the JAX side.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.compiler import is_compiling

import harness
from harness.numerics import trusted_rstd_low, trusted_variance_terms
from impl_torch import _native
from impl_torch._common import (
    InputCheck,
    apply,
    as_dtype,
    clamp_straight_through,
    follow_dtype,
    patch_rows,
    refuse_mixed_assigned_load,
    upcast,
)
from impl_torch._decisions import (
    compiled_cpu,
    compiled_mend_serves,
    eager_cpu,
    norm_kernels_take,
    rows_serve,
    tracks_grad,
    transforming,
)
from impl_torch._native import channels as _channels
from impl_torch._native import mend as _mend
from impl_torch._native import rows as _rows
from impl_torch.adapter import FRAMEWORK_DTYPES


class _Prescaled(NamedTuple):
    """Groups brought to a safe range: ``values = x / scale`` per group (see _prescale)."""

    values: torch.Tensor
    scale: torch.Tensor  # a power of two per group
    minimum: torch.Tensor  # the group's smallest value, divided by scale (exact)
    constant: torch.Tensor  # the finite groups whose entries are all equal
    finite: torch.Tensor  # the groups without an infinity or NaN (the others' values are their limit)


def _prescale(x: torch.Tensor, dims: tuple[int, ...]) -> _Prescaled:
    """``x`` divided by a power of two per group, and that power (the group's scale).

    Groups whose largest magnitude exceeds 1 are divided by a power of two (exact) that brings it
    below 4 (one binade below the estimate, since log2 of the largest float32 rounds up to 128),
    so squares cannot overflow at the largest finite inputs. A group holding an infinity takes
    its limit: its infinite entries become +-1, the rest 0. The largest magnitude comes from the
    group's maximum and minimum (two reading passes cost less than abs, which writes one), and
    they also tell which groups are constant.
    """
    # Tensor methods rather than torch functions here and in the other functions a compiled norm
    # traces: dynamo guards on each torch function it reads (one check per call of the compiled
    # module), never on a method.
    top = x.amax(dim=dims, keepdim=True).detach()
    bottom = x.amin(dim=dims, keepdim=True).detach()
    amax = top.maximum(-bottom)
    finite = amax.isfinite()
    big = finite & (amax > 1.0)
    scale = (amax.where(big, 1.0).log2().floor() - 1.0).exp2().where(big, 1.0).to(x.dtype)
    constant = (top == bottom) & finite
    if eager_cpu(x) and bool(finite.all()):
        # No infinity and no NaN in any group: the branch-free form below reduces to this.
        return _Prescaled(x / scale if bool(big.any()) else x, scale, bottom / scale, constant, finite)
    scaled = x.sign().where(x.isinf(), 0.0).where(amax.isinf(), x / scale)
    return _Prescaled(scaled, scale, bottom / scale, constant, finite)


def _standardize(x: torch.Tensor, dims: tuple[int, ...], eps: float | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(x - mean) / sqrt(var + eps) over ``dims``, with mean and biased variance (two-pass), on
    prescaled groups (see :func:`_prescale`); the eps term is scaled to match, which leaves the
    result unchanged. Also returns the prescaled groups' mean and variance, and the groups'
    scale and finiteness, from which :func:`_statistics` makes the raw ones."""
    prescaled = _prescale(x, dims)
    scaled, scale = prescaled.values, prescaled.scale
    # A constant group's mean is its value, exactly: a mean computed by summing rounds (six
    # copies of c sum to 6c rounded), and normalizing the spread that rounding leaves gives +-1
    # instead of 0. Per group, so it costs no pass over the data. The value comes from the minimum
    # (minimum - mean is exact, the two being that close), the gradient from the mean: the
    # centring term of a constant group's gradient stays.
    mean = scaled.mean(dim=dims, keepdim=True)
    mean = mean + (prescaled.minimum - mean).where(prescaled.constant, 0.0).detach()
    centred = scaled - mean
    var = (centred * centred).mean(dim=dims, keepdim=True)
    xhat = centred / _root(var, scale, eps)
    return xhat, mean, var, scale, prescaled.finite


def _root(var: torch.Tensor, scale: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """sqrt(var + eps / scale^2): the denominator of prescaled groups (see _standardize). eps /
    scale^2 underflows for huge groups; the smallest normal keeps 0 / 0 away."""
    return (var + (eps / (scale * scale)).clamp_min(torch.finfo(var.dtype).tiny)).sqrt()


def _statistics(
    mean: torch.Tensor, var: torch.Tensor, scale: torch.Tensor, finite: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The groups' mean and biased variance from those of :func:`_standardize`, non-finite for a
    group that held an infinity (as ATen's batch norm gives), never the finite statistics of its
    limit: an infinite mean (NaN where the signs balance) and a NaN variance."""
    mean_scale = scale.where(finite, math.inf)
    var_scale = scale.where(finite, math.nan)
    # Scaled back one factor at a time: scale * scale overflows where the variance does not.
    return mean * mean_scale, (var * var_scale) * var_scale


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, *, eps: float) -> torch.Tensor:
    """The declared layer norm: ATen's fused op where its per-row statistics show it is (eager
    CPU, see _trusted_rows), the prescaled formula for the other rows; on eager CUDA one Triton
    kernel each way (_native/rows.py); the formula everywhere else."""
    if rows_serve(x, weight, bias):
        rowmap = _row_map("layer_norm", eps, x.shape[-1])
        bias = None if weight is None else bias  # as the formula: no weight, no affine step
        return _rows.apply(rowmap, x, weight, bias, tracks_grad(x, weight, bias))
    if compiled_cpu(x) and weight is not None:
        return _layer_norm_compiled(x, weight, bias, eps)
    if not eager_cpu(x):
        return _layer_norm_formula(x, weight, bias, eps)
    n = x.shape[-1]
    # float16 and bfloat16 in float32, rounded once, as the formula does: ATen's mixed-precision
    # kernel returns its mean and rstd in the input's dtype, too coarse for the guard.
    xc = upcast(x)
    if xc is not x and weight is not None:
        weight, bias = upcast(weight), upcast(bias)
    y, mean, rstd = torch.native_layer_norm(xc, (n,), weight, bias, eps)
    if _untrusted_count(mean, rstd, eps):  # rare: ATen on the rows it got right, the formula on the rest
        y = patch_rows(
            xc,
            _trusted_rows(mean, rstd, eps).reshape(-1),
            lambda rows: torch.native_layer_norm(rows, (n,), weight, bias, eps)[0],
            lambda rows: _layer_norm_formula(rows, weight, bias, eps),
        )
    if weight is None:
        # Declared bound sqrt(n - 1): rounding in ATen's kernel may step past it.
        bound = math.sqrt(n - 1)
        y = clamp_straight_through(y, -bound, bound, fresh=not y.requires_grad)
    return as_dtype(y, x.dtype)


@functools.lru_cache(maxsize=64)
def _row_map(kind: str, eps: float, n: int) -> _rows.RowMap:
    """The row kernels' record of layer_norm or rms_norm with ``eps`` on rows of ``n``: the
    bound of the weightless norm, and the formula the second order differentiates."""
    if kind == "layer_norm":
        return _rows.RowMap(kind, eps, math.sqrt(n - 1), lambda x, w, b: _layer_norm_formula(x, w, b, eps))
    return _rows.RowMap(kind, eps, math.sqrt(n), lambda x, w, b: _rms_norm_formula(x, w, eps)[0])


@functools.lru_cache(maxsize=64)
def _trust_rule(dtype: torch.dtype, eps: float) -> tuple[float, float, float]:
    """(k, floor, low) of the trust rule for statistics of ``dtype`` (harness.numerics)."""
    k, per_eps, low = _trust_terms(dtype)
    return k, per_eps * eps, low


# A constant to dynamo: traced, the rule's reads of harness.numerics (its constants, finfo, math)
# made a dozen guards, which a compiled norm checks at every call. eps stays out: with dynamic
# shapes it is symbolic, which this cannot take.
@torch.compiler.assume_constant_result
def _trust_terms(dtype: torch.dtype) -> tuple[float, float, float]:
    name = str(dtype).removeprefix("torch.")
    return (*trusted_variance_terms(name), trusted_rstd_low(name))


def _trusted_rows(mean: torch.Tensor, rstd: torch.Tensor, eps: float) -> torch.Tensor:
    """Rows where ATen's fused layer norm is the declared one, from the per-row mean and rstd it
    returns anyway (2/n of a pass): finite statistics (no infinity, NaN or overflowed variance)
    and a variance clear of cancellation (harness.numerics.trusted_variance_floor), not so large
    that the second order underflows (trusted_rstd_low). NaN rows fall to the formula too, which
    also gives NaN.

    In float64, as guards.c computes it (see _untrusted_count): var > floor is rstd < 1 /
    sqrt(floor + eps), which is False for NaN; an infinite mean makes the floor infinite, an
    overflowed variance rstd 0. float64 holds the square of any float32 mean, so nothing
    overflows on the way."""
    # Not _trust_rule: torch.compile traces this (the compiled guards), and dynamo warns of a
    # cache.
    k, per_eps, low = _trust_terms(mean.dtype)
    floor = per_eps * eps
    m, r = mean.detach().double(), rstd.detach().double()
    limit = 1.0 / ((k * (m * m)).clamp_min(floor) + eps).sqrt()
    return (r > low) & (r < limit)


def _layer_norm_compiled(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Under torch.compile on the CPU: compiled F.layer_norm's own arithmetic (var_mean, rsqrt,
    one affine pass: inductor's decomposition of it, the same bits) where every row's statistics
    pass the trust rule (_trusted_rows), the prescaled formula otherwise, chosen by torch.cond.
    The statistics come before the branch, so that the guard reads them and the fast side takes
    them: a statistics pass and an output pass, as compiled F.layer_norm takes (1.0x its time at
    2^22, against 4-6x for the formula alone). With autograd, see _CompiledNorm."""
    xc, w, b = upcast(x), upcast(weight), upcast(bias)
    y = (
        apply(_CompiledNorm, xc, w, b, "layer_norm", eps)[0]
        if tracks_grad(xc, w, b)
        else _layer_norm_cond(xc, w, b, eps, rule=False)[0]
    )
    return y.to(x.dtype)


def _layer_norm_cond(
    xc: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float, rule: bool = True
) -> tuple[torch.Tensor, ...]:
    """(output, *_GroupRule) of _layer_norm_compiled; (output,) without ``rule``."""
    var, mean = torch.var_mean(xc, dim=-1, correction=0, keepdim=True)
    rstd = (var + eps).rsqrt()

    def fast(xc: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return b.addcmul((xc - mean) * rstd, w), *(_plain_rule(mean, rstd) if rule else ())

    eps_t = _operand(eps, xc)

    def rare(xc: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor) -> tuple[torch.Tensor, ...]:
        xhat, mean, var, scale, finite = _standardize(xc, (-1,), eps_t)
        return b.addcmul(xhat, w), *(_prescaled_rule(mean, var, scale, finite, eps_t) if rule else ())

    untrusted = ~_trusted_rows(mean, rstd, eps)
    return torch.cond(untrusted.any(), rare, fast, (xc, mean, rstd))


def _operand(eps: float, like: torch.Tensor) -> torch.Tensor:
    """eps as a 0-d tensor for a torch.cond branch to close over: with dynamic shapes (dynamo's
    automatic dynamic, after a second batch size) a module's float attribute becomes a symbolic
    float, which a branch cannot take as an operand (tensors and ints only)."""
    return like.new_full((), eps)


class _GroupRule(NamedTuple):
    """Per group, what a compiled norm's backward rebuilds the normalized input from: xhat =
    (v - mean) rstd with v = x / scale, or, in a group that held an infinity (``limit``), its
    limit values (sign(x) at the infinities, 0 elsewhere), whose derivative is zero."""

    scale: torch.Tensor
    mean: torch.Tensor  # rms_norm: 0
    rstd: torch.Tensor
    limit: torch.Tensor

    # x / scale as two products, x times 2 / scale, then times 1/2: the first is exact (but where
    # it is subnormal itself) and the second rounds once, so the quotient's bits (within a
    # subnormal's ulp in that corner) without a division per element (which inductor repeats in
    # each pass that reads xhat): compiled layer_norm's forward+backward at 2^22 1.01-1.02 of
    # nn.LayerNorm's against 1.04-1.05 (batch_norm's unchanged; one process each, alternating).
    # Not x times 1 / scale: that is 2^-127 for a group at the largest float32, a subnormal that
    # flush-to-zero would make 0; 2 / scale is 2^-126.
    def xhat(self, x: torch.Tensor) -> torch.Tensor:
        """(x / scale - mean) rstd, from x as it is: inf - inf in a group that held an infinity."""
        return ((x * (2.0 / self.scale)) * 0.5 - self.mean) * self.rstd

    def input_factor(self) -> torch.Tensor:
        """rstd / scale, the input gradient's factor per group, by the same two products."""
        return (self.rstd * (2.0 / self.scale)) * 0.5

    def limit_xhat(self, x: torch.Tensor) -> torch.Tensor:
        """xhat of a group that held an infinity: its limit values, sign(x) at the infinities and
        0 elsewhere, centred and scaled."""
        # abs() == inf, not isinf: inductor's CPU code runs isinf one element at a time.
        return (torch.where(x.abs() == math.inf, torch.sign(x), 0.0) - self.mean) * self.rstd


def _plain_rule(mean: torch.Tensor, rstd: torch.Tensor) -> _GroupRule:
    # Fresh tensors: a torch.cond branch returns none of its inputs.
    return _GroupRule(torch.ones_like(rstd), mean * 1.0, rstd * 1.0, torch.zeros_like(rstd, dtype=torch.bool))


def _prescaled_rule(
    mean: torch.Tensor, var: torch.Tensor, scale: torch.Tensor, finite: torch.Tensor, eps: float | torch.Tensor
) -> _GroupRule:
    # A NaN group is not a limit: its derivative is NaN, as its value.
    return _GroupRule(scale, mean, 1.0 / _root(var, scale, eps), ~finite & ~var.isnan())


class _CompiledNorm(torch.autograd.Function):
    """layer_norm, rms_norm or batch_norm (training) under torch.compile with autograd (CPU):
    the value by the technique's torch.cond (``_<name>_cond``), which also returns each group's
    _GroupRule; the derivative written out from x and that rule, as the JAX side's is: rstd / scale
    (g' - mean(g') - xhat mean(xhat g')) with g' = g weight (no mean(g') term for rms_norm), zero
    in a group that held an infinity; weight and bias gradients sum(g xhat) and sum(g).
    batch_norm's, whose weight is per group, are _batch_norm_grads.

    Not torch.cond's own derivative: it runs the branch again in the backward; the gradient of
    the statistics computed before the branch came out NaN for a group holding an infinity or
    the largest finite values (0 times inf - inf in var_mean's backward), where the declaration
    says zero and eager gives it; and torch 2.13's inductor let that backward write into the
    grad_output it was given (pytorch#192840)."""

    @staticmethod
    def forward(xc: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, name: str, eps: float) -> tuple:
        if name == "layer_norm":
            return _layer_norm_cond(xc, w, b, eps)
        if name == "rms_norm":
            return _rms_norm_cond(xc, w, eps)
        return _batch_norm_cond(xc, w, b, eps)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
        xc, w, _, ctx.name, _ = inputs
        rule = output[1:5]
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(xc, w, *rule)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        x, w, *saved = ctx.saved_tensors
        rule = _GroupRule(*saved)
        if ctx.name == "batch_norm":
            return *_batch_norm_grads(x, grad, w, rule, ctx.needs_input_grad[:3]), None, None
        # The rows' norms (batch_norm's groups are channels: _batch_norm_grads). The input
        # gradient from x as it is (inf - inf in a group that held an infinity, whose gradient
        # is zero), and the limit values only where the weight gradient needs them: a normalized
        # input of several selects, read by the reductions and the output pass alike, is written
        # out to memory first (inductor, batch_norm when it took this code: 1.5x compiled
        # nn.BatchNorm1d).
        xhat = rule.xhat(x)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            g = grad if w is None else grad * w
            inner = g - xhat * (xhat * g).mean(dim=-1, keepdim=True)
            if ctx.name != "rms_norm":
                inner = inner - g.mean(dim=-1, keepdim=True)
            dx = torch.where(rule.limit, 0.0, rule.input_factor() * inner)
        features = tuple(range(x.ndim - 1))  # summed for weights
        if ctx.needs_input_grad[1]:
            dw = (grad * torch.where(rule.limit, rule.limit_xhat(x), xhat)).sum(dim=features)
        if ctx.needs_input_grad[2]:
            db = grad.sum(dim=features)
        return dx, dw, db, None, None


def _batch_norm_grads(
    x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor | None, rule: _GroupRule, needs: tuple[bool, bool, bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """_CompiledNorm's VJPs of batch_norm (input, weight, bias; None where not needed): factor
    (grad - mean(grad) - xhat mean(grad xhat)) with xhat = (x / scale - mean) rstd and factor =
    rstd weight / scale, zero in a channel that held an infinity; sum(grad xhat), with xhat the
    limit values in such a channel; sum(grad).

    The weight is per channel, so it sits in the factor, outside the reductions (as in ATen's
    backward; by the formula, not tested, an infinite weight then gives an infinite input
    gradient, as ATen's, where a product inside gave NaN): they read grad and x alone, and their
    sums are the weight's and the bias's gradients. What limit channels need (the zero, the
    limit values) is in a torch.cond of its own on whether any channel is one; the JAX side's
    tangent, too, has a cond of its own (_normalized_tangent). Without it, a select by the
    channels' flags ran in every vector of the output pass, where inductor's CPU code loads them
    as a bool vector each time: that select alone took about a fifth of the backward (its kernel
    10.4-10.8 ms against 8.2-8.5 with a float comparison in its place, or none, at 2^22, 64
    channels). Forward+backward against compiled nn.BatchNorm1d at 2^22, before and after this
    helper (one process each, Zen 3): input VJP 1.18-1.31 and 0.97-1.08, with the parameters'
    VJPs too 1.14 and 1.02-1.03. Each branch takes x and computes xhat itself: given xhat as an
    operand, the partitioner saved it in the forward, a pass more. The cotangent goes in as a
    view: given as it came, inductor took it for a donated buffer and wrote a branch's output
    into it (pytorch#192840, which _CompiledNorm's docstring names;
    test_compiled_limits_match_eager)."""
    dims = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    # Sums times 1 / count, not means: inductor divides by the count in each vector of the
    # output pass where it reads a per-channel mean.
    per = 1.0 / (x.numel() // x.shape[1])
    input_grad, weight_grad, bias_grad = needs

    # xhat before any product with the cotangent, as in the other norms: rstd^2 or rstd times a
    # mean can overflow where each product with xhat stays finite.
    xhat_sum = (grad * rule.xhat(x)).sum(dim=dims, keepdim=True)
    grad_sum = grad.sum(dim=dims, keepdim=True)
    # Outside the branches: with dynamic shapes the count is symbolic, which a branch cannot
    # close over.
    means = (xhat_sum * per, grad_sum * per)
    factor = rule.input_factor()
    factor = factor if weight is None else factor * weight.reshape(shape)

    def input_grad_of(x: torch.Tensor, grad: torch.Tensor, *means: torch.Tensor) -> torch.Tensor:
        return factor * (grad - rule.xhat(x) * means[0] - means[1])

    def plain(
        x: torch.Tensor, grad: torch.Tensor, xhat_sum: torch.Tensor, *means: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        out = [input_grad_of(x, grad, *means)] if input_grad else []
        if weight_grad:
            out.append(xhat_sum * 1.0)  # a fresh tensor: a branch returns none of its inputs
        return tuple(out)

    def limits(
        x: torch.Tensor, grad: torch.Tensor, xhat_sum: torch.Tensor, *means: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        out = []
        if input_grad:
            # A select, not a zero factor: 0 times the inf - inf of x's infinities is NaN.
            out.append(torch.where(rule.limit, 0.0, input_grad_of(x, grad, *means)))
        if weight_grad:
            limit_sum = (grad * rule.limit_xhat(x)).sum(dim=dims, keepdim=True)
            out.append(torch.where(rule.limit, limit_sum, xhat_sum))
        return tuple(out)

    grads = ()
    if input_grad or weight_grad:
        grads = torch.cond(rule.limit.any(), limits, plain, (x, grad.view(grad.shape), xhat_sum, *means))
    dx = grads[0] if input_grad else None
    dw = grads[-1].reshape(-1) if weight_grad else None
    return dx, dw, grad_sum.reshape(-1) if bias_grad else None


def _untrusted_rms_count(rstd: torch.Tensor) -> int:
    """How many of rms_norm's rstd are not above trusted_rstd_low (see _rms_norm_trusted), NaN
    included: the C guard with the rule on rstd alone where the kernels built, its twin
    _rms_norm_trusted otherwise."""
    guard = _row_guard(rstd.dtype, None)
    if guard is None:
        return int((~_rms_norm_trusted(rstd)).sum())
    r = _contiguous(rstd)
    return guard(None, r.data_ptr(), r.numel())


def _rms_norm_trusted(rstd: torch.Tensor) -> torch.Tensor:
    """The rows where ATen's RMSNorm is the declared one: rstd above trusted_rstd_low. It fails
    exactly where the formula is needed: a mean square that overflowed (the largest finite
    inputs) or held an infinity gives 0, a NaN row NaN, and a huge row's second order would
    underflow. Tiny rows need no care: their squares underflow where eps dominates anyway."""
    return rstd.detach() > _trust_terms(rstd.dtype)[2]


def _untrusted_count(mean: torch.Tensor, rstd: torch.Tensor, eps: float) -> int:
    """How many rows _trusted_rows rejects: one C call (_native.row_guard) where the kernels
    built, since a dozen tensor operations on a row-sized array cost more than ATen's whole
    layer norm of 64 rows (about 20 us against 1 here); those otherwise."""
    guard = _row_guard(mean.dtype, eps)
    if guard is None:
        return int((~_trusted_rows(mean, rstd, eps)).sum())
    m, r = _contiguous(mean), _contiguous(rstd)
    return guard(m.data_ptr(), r.data_ptr(), m.numel())


@functools.lru_cache(maxsize=64)
def _row_guard(dtype: torch.dtype, eps: float | None) -> Callable[[int | None, int, int], int] | None:
    """The C trust rule for statistics of ``dtype``, once per rule: layer_norm's and
    batch_norm's with their ``eps``; rms_norm's on rstd alone with None (k = floor = eps = 0
    leaves low < rstd < inf, and rsqrt(mean square + eps) is finite). None where the kernels
    did not build, which is decided once per process (_native.build), as cached here."""
    if not _native.available():
        return None
    k, floor, low = _trust_rule(dtype, 0.0 if eps is None else eps)
    if eps is None:
        k = floor = 0.0
    return _native.row_guard(dtype == torch.float64, k, floor, eps or 0.0, low)


def _contiguous(t: torch.Tensor) -> torch.Tensor:
    # Statistics the fused ops return come contiguous; their address is read without a copy (no
    # detach either: data_ptr reads it through autograd).
    return t if t.is_contiguous() else t.contiguous()


def _layer_norm_formula(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias on prescaled rows (see _standardize): exact
    for constant rows, limits for rows holding an infinity, no overflow at the largest values."""
    xc = upcast(x)
    xhat, *_ = _standardize(xc, (-1,), eps)
    if weight is None:
        # Declared bound sqrt(n - 1); eps keeps the exact value inside, this guards rounding.
        bound = math.sqrt(x.shape[-1] - 1)
        y = clamp_straight_through(xhat, -bound, bound)
    else:
        y = torch.addcmul(upcast(bias), xhat, upcast(weight))
    return y.to(x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, *, eps: float | None) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight: ATen's own composite (F.rms_norm's on CPU) where its
    per-row statistic shows it is the declared one (eager CPU), one Triton kernel each way on
    eager CUDA (_native/rows.py), the prescaled formula elsewhere."""
    xc = upcast(x)
    if eps is None:
        # PyTorch's meaning: the machine epsilon of the dtype it computes in (float32 for float16
        # and bfloat16 inputs, as torch.nn.RMSNorm does), not of the input's.
        eps = torch.finfo(xc.dtype).eps
    if rows_serve(x, weight):
        return _rows.apply(_row_map("rms_norm", eps, x.shape[-1]), x, weight, None, tracks_grad(x, weight))
    w = None if weight is None else upcast(weight)
    if eager_cpu(xc):
        y, rstd = _native_rms_norm(xc, w, eps)
        if _untrusted_rms_count(rstd):  # rare: see _rms_norm_trusted
            y = patch_rows(
                xc,
                _rms_norm_trusted(rstd).reshape(-1),
                lambda rows: _native_rms_norm(rows, None, eps)[0],
                lambda rows: _rms_norm_formula(rows, None, eps)[0],
            )
            y = y if w is None else y * w
    elif compiled_cpu(xc):
        y = _rms_norm_compiled(xc, w, eps)
    else:
        y = _rms_norm_formula(xc, w, eps)[0]
    if weight is None:
        # Declared bound sqrt(n); eps keeps the exact value inside, this guards rounding.
        bound = math.sqrt(x.shape[-1])
        y = clamp_straight_through(y, -bound, bound, fresh=True)
    return as_dtype(y, x.dtype)


# ATen's RMSNorm with its per-row rstd (torch 2.8 and later): on the CPU the composite below,
# x * rsqrt(mean(x^2) + eps) * weight, bit for bit (tests/test_numerics.py), in one call
# instead of five from Python. Its autograd is the composite's, second order included. Through
# its binding in the torch namespace, not torch.ops.aten: the OpOverload's Python __call__ cost
# 8 us more per call after a 64-row RMSNorm (0.93 against 0.79 of nn.RMSNorm, one process).
_FUSED_RMS_NORM = getattr(torch, "_fused_rms_norm", None)


def _native_rms_norm(xc: torch.Tensor, w: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(ATen's RMSNorm of the rows of ``xc``, their rstd)."""
    # Not where dynamo traces this (a frame it compiles alone, see _common.native_elementwise):
    # it cannot trace the binding. Compiled, the composite agrees with eager's fused kernel to
    # rounding, as compiled torch.ops.aten._fused_rms_norm does (both within 1e-6 in float32).
    if _FUSED_RMS_NORM is not None and not is_compiling():
        return _FUSED_RMS_NORM(xc, [xc.shape[-1]], w, eps)
    rstd = _rms_rstd(xc, eps)
    return _rms_scaled(xc, rstd, w), rstd


def _rms_rstd(xc: torch.Tensor, eps: float) -> torch.Tensor:
    return ((xc * xc).mean(dim=-1, keepdim=True) + eps).rsqrt()


def _rms_scaled(xc: torch.Tensor, rstd: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    y = xc * rstd
    return y if w is None else y * w


def _rms_norm_compiled(xc: torch.Tensor, w: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Under torch.compile on the CPU: the composite x * rsqrt(mean(x^2) + eps) * weight where
    every row's rstd passes _rms_norm_trusted (as in eager). Without autograd on large inputs,
    the composite first and then the rows that fail rewritten in place by the prescaled formula
    (_native/mend.py); otherwise torch.cond after the mean squares chooses between the composite,
    which takes them, and the prescaled formula on every row (see _layer_norm_compiled; with
    autograd, _CompiledNorm)."""
    if tracks_grad(xc, w):
        return apply(_CompiledNorm, xc, w, None, "rms_norm", eps)[0]
    if compiled_mend_serves(xc):
        # The op takes the rows' sums of squares, not rstd: the reduction's own buffer, which
        # inductor writes anyway. An rstd output of its own made inductor split its kernel into
        # a loop over every row's sum, then one over the output: two reads of the input where
        # compiled nn.RMSNorm reads each row once (at 2^22, 1.05-1.65 of its time against
        # 1.13-1.23 in alternating processes: README).
        squares = (xc * xc).sum(dim=-1, keepdim=True)
        y = _rms_scaled(xc, _rms_rstd_of_sums(squares, xc.shape[-1], eps), w)
        _mend.mend_(y, xc, w, None, [squares], "rms_norm", eps)
        return y
    return _rms_norm_cond(xc, w, eps, rule=False)[0]


def _rms_rstd_of_sums(squares: torch.Tensor, n: int, eps: float) -> torch.Tensor:
    """rsqrt(mean(x^2) + eps) from the rows' sums of squares: the bits of _rms_rstd (a mean is
    its sum divided by n)."""
    return (squares / n + eps).rsqrt()


def _rms_norm_mend(
    y: torch.Tensor, xc: torch.Tensor, w: torch.Tensor | None, _: None, stats: list[torch.Tensor], eps: float
) -> None:
    """_native.mend's mender: the rows of ``y`` whose rstd fails _rms_norm_trusted, by the
    formula; ``stats`` holds the rows' sums of squares."""
    (squares,) = stats
    rstd = _rms_rstd_of_sums(squares, xc.shape[-1], eps)
    if _untrusted_rms_count(rstd):  # rare
        bad = ~_rms_norm_trusted(rstd).squeeze(-1)
        y[bad] = _rms_norm_formula(xc[bad], w, eps)[0].to(y.dtype)


_mend.register("rms_norm", _rms_norm_mend)


def _rms_norm_cond(xc: torch.Tensor, w: torch.Tensor | None, eps: float, rule: bool = True) -> tuple[torch.Tensor, ...]:
    """(output, *_GroupRule) of _rms_norm_compiled; (output,) without ``rule``."""
    rstd = _rms_rstd(xc, eps)

    def fast(xc: torch.Tensor, rstd: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _rms_scaled(xc, rstd, w), *(_plain_rule(torch.zeros_like(rstd), rstd) if rule else ())

    eps_t = _operand(eps, xc)

    def rare(xc: torch.Tensor, rstd: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, group_rule = _rms_norm_formula(xc, w, eps_t)
        return y, *(group_rule if rule else ())

    return torch.cond((~_rms_norm_trusted(rstd)).any(), rare, fast, (xc, rstd))


def _rms_norm_formula(
    xc: torch.Tensor, weight: torch.Tensor | None, eps: float | torch.Tensor
) -> tuple[torch.Tensor, _GroupRule]:
    """x / sqrt(mean(x^2) + eps) * weight on rows prescaled as in _standardize (no overflow at
    the largest values, limits for rows holding an infinity), and the rows' _GroupRule."""
    scaled, scale, *_, finite = _prescale(xc, (-1,))
    ms = (scaled * scaled).mean(dim=-1, keepdim=True)
    y = scaled / _root(ms, scale, eps)
    rule = _prescaled_rule(torch.zeros_like(ms), ms.detach(), scale, finite, eps)
    return (y if weight is None else y * weight), rule


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
    """Returns (output, new running mean, new running variance); channels on axis 1.

    In training mode on eager CPU, ATen's fused batch norm on the channels its per-channel mean
    and invstd show it got right (the guard of layer_norm, see _trusted_rows), the prescaled
    formula on the others. It updates copies of the running statistics with PyTorch's meaning,
    which is ours (momentum weights the new batch; the running variance is unbiased). On eager
    CUDA in training mode, Triton kernels with the same rules (_native/channels.py)."""
    stats = (weight, bias, running_mean, running_var)
    if training and _channels.serves(x) and norm_kernels_take(x, stats, x.shape[1]):
        settings = _channels.Settings(momentum, eps, _batch_norm_rows_formula(eps))
        return _channels.apply(x, *stats, settings, tracks_grad(x, weight, bias))
    if training and compiled_cpu(x):
        return _batch_norm_compiled(x, weight, bias, running_mean, running_var, momentum, eps)
    if not (training and eager_cpu(x)):
        return _batch_norm_formula(x, weight, bias, running_mean, running_var, training, momentum, eps)
    xc, w, b = upcast(x), upcast(weight), upcast(bias)

    def native(select: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        args = [xc, w, b, upcast(running_mean).clone(), upcast(running_var).clone()]
        if select is not None:
            args = [args[0].index_select(1, select), *(a.index_select(0, select) for a in args[1:])]
        y, mean, invstd = torch.native_batch_norm(*args, True, momentum, eps)
        return y, args[3], args[4], mean, invstd

    y, new_mean, new_var, mean, invstd = native(None)
    if _untrusted_count(mean, invstd, eps):  # rare: ATen on the channels it got right, the formula on the rest
        trusted = _trusted_rows(mean, invstd, eps).reshape(-1)
        if not trusted.any():  # ATen takes no empty channel selection
            return _batch_norm_formula(x, weight, bias, running_mean, running_var, True, momentum, eps)
        good, bad = (torch.nonzero(t).reshape(-1) for t in (trusted, ~trusted))
        y, new_mean, new_var, *_ = native(good)
        parts = _batch_norm_formula(
            xc.index_select(1, bad), w[bad], b[bad], running_mean[bad], running_var[bad], True, momentum, eps
        )
        whole = (torch.zeros_like(xc), torch.zeros_like(w), torch.zeros_like(w))
        y, new_mean, new_var = (
            t.index_copy(int(t.ndim > 1), good, g).index_copy(int(t.ndim > 1), bad, upcast(f))
            for t, g, f in zip(whole, (y, new_mean, new_var), parts, strict=True)
        )
    return as_dtype(y, x.dtype), as_dtype(new_mean, running_mean.dtype), as_dtype(new_var, running_var.dtype)


@functools.lru_cache(maxsize=64)
def _batch_norm_rows_formula(eps: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The output of batch_norm in training mode by the formula, which the Triton kernels'
    second order differentiates."""
    return lambda x, w, b: _batch_norm_training(x, w, b, eps)[0]


def _running_update(
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    momentum: float,
    count: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The new running statistics from the batch's mean and biased variance over ``count``
    values, with PyTorch's meaning: momentum weights the new batch; the running variance is
    unbiased. The batch statistics are detached: the running ones never require grad."""
    new_mean = (1.0 - momentum) * upcast(running_mean) + momentum * mean.detach()
    new_var = (1.0 - momentum) * upcast(running_var) + momentum * (var.detach() * (count / (count - 1)))
    return new_mean.to(running_mean.dtype), new_var.to(running_var.dtype)


def _batch_norm_compiled(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    momentum: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training mode under torch.compile on the CPU: the plain normalization by the batch's
    statistics where every channel passes the trust rule (_trusted_rows), the prescaled formula
    otherwise, chosen by torch.cond after the statistics (see _layer_norm_compiled; with
    autograd, _CompiledNorm). The running statistics are updated outside the branch, from the
    statistics the branch taken returns: the module writes them in place afterwards, and a
    branch's saved inputs must not change."""
    xc, w, b = upcast(x), upcast(weight), upcast(bias)
    if tracks_grad(xc, w, b):
        y, *_, mean, var = apply(_CompiledNorm, xc, w, b, "batch_norm", eps)
    else:
        y, mean, var = _batch_norm_cond(xc, w, b, eps, rule=False)
    count = x.numel() // x.shape[1]
    return y.to(x.dtype), *_running_update(running_mean, running_var, mean, var, momentum, count)


def _batch_norm_cond(
    xc: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float, rule: bool = True
) -> tuple[torch.Tensor, ...]:
    """(output, *_GroupRule, batch mean, batch biased variance) of _batch_norm_compiled; without
    ``rule``, (output, batch mean, batch biased variance): a branch's outputs are computed even
    where the caller drops them."""
    shape = (1, -1) + (1,) * (xc.ndim - 2)
    var, mean = torch.var_mean(xc, dim=(0, *range(2, xc.ndim)), correction=0, keepdim=True)
    rstd = (var + eps).rsqrt()

    def fast(xc: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, rstd: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = b.reshape(shape).addcmul((xc - mean) * rstd, w.reshape(shape))
        return y, *(_plain_rule(mean, rstd) if rule else ()), mean.reshape(-1) * 1.0, var.reshape(-1) * 1.0

    eps_t = _operand(eps, xc)

    def rare(xc: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, rstd: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, mean, var, group_rule = _batch_norm_training(xc, w, b, eps_t)
        return y, *(group_rule if rule else ()), mean, var

    untrusted = ~_trusted_rows(mean, rstd, eps)
    return torch.cond(untrusted.any(), rare, fast, (xc, mean, var, rstd))


def _batch_norm_training(
    xc: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, _GroupRule]:
    """The declared batch norm of ``xc`` by its batch statistics (prescaled, see _standardize:
    exact for constant channels, non-finite statistics for a channel holding an infinity), in
    the compute dtype, those statistics (mean, biased variance), detached, and the channels'
    _GroupRule."""
    shape = (1, -1) + (1,) * (xc.ndim - 2)
    xhat, mean, var, scale, finite = _standardize(xc, (0, *range(2, xc.ndim)), eps)
    raw_mean, raw_var = (s.detach().reshape(-1) for s in _statistics(mean, var, scale, finite))
    y = torch.addcmul(upcast(bias).reshape(shape), xhat, upcast(weight).reshape(shape))
    return y, raw_mean, raw_var, _prescaled_rule(mean.detach(), var.detach(), scale, finite, eps)


def _batch_norm_formula(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    training: bool,
    momentum: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The declared batch norm, branch-free: prescaled statistics in training mode (see
    _standardize), exact for constant channels, non-finite statistics for a channel holding an
    infinity."""
    xc = upcast(x)
    if training:
        y, mean, var, _ = _batch_norm_training(xc, weight, bias, eps)
        count = x.numel() // x.shape[1]
        return y.to(x.dtype), *_running_update(running_mean, running_var, mean, var, momentum, count)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (xc - upcast(running_mean).reshape(shape)) / torch.sqrt(upcast(running_var).reshape(shape) + eps)
    y = xhat * upcast(weight).reshape(shape) + upcast(bias).reshape(shape)
    return y.to(x.dtype), running_mean, running_var


def _ones(num_features: int, dtype: str) -> nn.Parameter:
    return nn.Parameter(torch.ones(num_features, dtype=FRAMEWORK_DTYPES[dtype]))


class _Norm(nn.Module):
    """What the norm modules share: the input check, autocast, and a dtype that follows moves.

    ``.double()``, ``.half()``, ``.bfloat16()`` and ``.to(dtype)`` make the module one built with
    that dtype: its parameters, ``params["dtype"]`` and build record say so, and it takes what
    such a module takes (harness.numerics.module_input_dtypes).
    """

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        super().__init__()
        self.params = params
        self._input = InputCheck(harness.get(name), params)
        # The module's dtype, also without parameters (elementwise_affine=False): a floating
        # tensor that every move converts, never saved (not in the state dict).
        self.register_buffer("_dtype", torch.empty(0, dtype=FRAMEWORK_DTYPES[params["dtype"]]), persistent=False)
        self.register_load_state_dict_pre_hook(refuse_mixed_assigned_load)
        self.register_load_state_dict_post_hook(_follow_assigned_dtype)

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        module = super()._apply(fn, recurse)
        self._follow_dtype()
        return module

    def reset_parameters(self) -> None:
        """Weight 1 and bias 0 in place (batch_norm: its running statistics too), as torch.nn's
        norms: a module built on the meta device and given memory by ``to_empty`` gets its
        values from this (FSDP calls it), where memory is left as it was found."""
        with torch.no_grad():
            for value, p in ((1.0, getattr(self, "weight", None)), (0.0, getattr(self, "bias", None))):
                if p is not None:
                    p.fill_(value)

    def _follow_dtype(self) -> None:
        self.params["dtype"] = follow_dtype(self, self._dtype)
        self._input.forget()  # the dtypes it takes moved with it


def _follow_assigned_dtype(module: _Norm, _: Any) -> None:
    """After ``load_state_dict(..., assign=True)``, which puts the loaded tensors in place in
    their own dtype (a load without it converts them to the module's), a module of that dtype,
    as after ``.to(dtype)`` (refuse_mixed_assigned_load has refused two dtypes)."""
    found = {t.dtype for t in module.state_dict().values()}
    if len(found) == 1 and found != {module._dtype.dtype}:
        module._dtype = torch.empty(0, dtype=found.pop(), device=module._dtype.device)
        module._follow_dtype()


@harness.implements("layer_norm", "torch")
class LayerNorm(_Norm):
    """LayerNorm over the last axis with PyTorch's parameter meaning (eps 1e-5, weight 1, bias 0)."""

    def __init__(self, *, num_features: int, eps: float, elementwise_affine: bool, dtype: str, seed: int) -> None:
        params = {"num_features": num_features, "eps": eps, "elementwise_affine": elementwise_affine, "dtype": dtype}
        super().__init__("layer_norm", params)
        self.eps = eps
        if elementwise_affine:
            self.weight = _ones(num_features, dtype)
            self.bias = nn.Parameter(torch.zeros(num_features, dtype=FRAMEWORK_DTYPES[dtype]))
        else:
            self.weight = self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(self._input(x), self.weight, self.bias, eps=self.eps)


@harness.implements("rms_norm", "torch")
class RMSNorm(_Norm):
    """RMSNorm over the last axis with PyTorch's meaning (eps None: the compute dtype's epsilon,
    float32 for float16 and bfloat16 inputs)."""

    def __init__(
        self, *, num_features: int, eps: float | None, elementwise_affine: bool, dtype: str, seed: int
    ) -> None:
        params = {"num_features": num_features, "eps": eps, "elementwise_affine": elementwise_affine, "dtype": dtype}
        super().__init__("rms_norm", params)
        self.eps = eps
        self.weight = _ones(num_features, dtype) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(self._input(x), self.weight, eps=self.eps)


@harness.implements("batch_norm", "torch")
class BatchNorm(_Norm):
    """BatchNorm over axis 1 with PyTorch's meaning: momentum weights the new batch, the running
    variance is unbiased; ``.train()``/``.eval()`` switch batch and running statistics."""

    def __init__(self, *, num_features: int, eps: float, momentum: float, dtype: str, seed: int) -> None:
        super().__init__("batch_norm", {"num_features": num_features, "eps": eps, "momentum": momentum, "dtype": dtype})
        self.eps, self.momentum = eps, momentum
        torch_dtype = FRAMEWORK_DTYPES[dtype]
        self.weight = _ones(num_features, dtype)
        self.bias = nn.Parameter(torch.zeros(num_features, dtype=torch_dtype))
        self.register_buffer("running_mean", torch.zeros(num_features, dtype=torch_dtype))
        self.register_buffer("running_var", torch.ones(num_features, dtype=torch_dtype))

    def reset_running_stats(self) -> None:
        """Running mean 0 and variance 1 in place, as torch.nn's batch norms."""
        self.running_mean.zero_()
        self.running_var.fill_(1.0)

    def reset_parameters(self) -> None:
        """Running statistics, weight and bias as built, as torch.nn's batch norms."""
        self.reset_running_stats()
        super().reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._input(x)
        if self.training and x.numel() <= x.shape[1]:
            raise ValueError(
                f"batch_norm needs more than one value per channel in training mode, got shape {tuple(x.shape)}; "
                "use a larger batch or call .eval()"
            )
        y, new_mean, new_var = batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var,
            training=self.training, momentum=self.momentum, eps=self.eps,
        )  # fmt: skip
        if self.training:
            # The new statistics never require grad (ATen's updated copies, or the formula's from
            # detached batch statistics): the copy records nothing, with or without no_grad,
            # whose context costs a microsecond or two at each call.
            try:
                self.running_mean.copy_(new_mean)
                self.running_var.copy_(new_var)
            except RuntimeError as error:
                if not transforming():
                    raise
                # vmap: per-example statistics cannot go into unbatched buffers; grad and jvp
                # refuse the in-place update of a buffer that is not their input.
                raise RuntimeError(
                    "batch_norm in training mode updates its running statistics in place, which torch.func "
                    "transforms refuse for buffers they do not map over; call .eval() to use the running "
                    "statistics, or pass the buffers to torch.func.functional_call"
                ) from error
        return y
