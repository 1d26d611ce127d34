"""PyTorch simplex maps (declared in ``harness/simplex.py``; mirrors ``impl_jax/simplex.py``).

Rows holding an infinity take their limit instead of NaN; NaN rows stay NaN.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from harness import implements
from impl_torch import _native
from impl_torch._common import apply, as_dtype, clamp_straight_through, patch_rows, upcast
from impl_torch._decisions import compiled_cpu, eager_cpu, kernel_serves, rows_serve, tracks_grad
from impl_torch._native import rows as _rows


def _limit_shift(xc: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x - max along axis, with rows holding an infinity replaced by their limit (the +inf
    entries at 0, the rest at -inf; an all -inf row at 0), and the row maxima."""
    # Tensor methods rather than torch functions here and in the other functions a compiled
    # softmax traces: dynamo guards on each torch function it reads (a check at every call of
    # the compiled module), never on a method.
    top = xc.amax(dim=axis, keepdim=True).detach()
    if eager_cpu(xc) and bool(top.isfinite().all()):
        return xc - top, top
    z = xc - top.where(top.isfinite(), 0.0)
    limit = xc.new_full((), -math.inf).where(xc != math.inf, 0.0)  # 0 at +inf, -inf elsewhere
    z = limit.where(top == math.inf, z)
    return z.where(top != -math.inf, 0.0), top


def _softmax_plain(z: torch.Tensor, axis: int) -> torch.Tensor:
    """Softmax of rows shifted by their maximum (or their limit's)."""
    e = z.exp()
    # e / sum(e) with sum(e) >= e (rounded sums of non-negatives only grow): never above 1.
    return e / e.sum(dim=axis, keepdim=True)


def _log_softmax_plain(z: torch.Tensor, axis: int) -> torch.Tensor:
    """Log-softmax of rows shifted by their maximum (or their limit's)."""
    # z <= 0 and log(sum(exp(z))) >= 0 (the row's maximum contributes exp(0) = 1): never above 0.
    return z - z.exp().sum(dim=axis, keepdim=True).log()


def _softmax_formula(xc: torch.Tensor, axis: int) -> torch.Tensor:
    # Rows holding an infinity take their limit instead of NaN: +inf entries share the mass,
    # an all -inf row is uniform. NaN rows stay NaN (amax propagates NaN).
    return _softmax_plain(_limit_shift(xc, axis)[0], axis)


def _log_softmax_formula(xc: torch.Tensor, axis: int) -> torch.Tensor:
    return _log_softmax_plain(_limit_shift(xc, axis)[0], axis)


# The row kernels' records of softmax and log_softmax (by ``log``), with the formulas the second
# order differentiates.
_SIMPLEX_ROWS = {
    False: _rows.RowMap("softmax", 0.0, 1.0, lambda x, w, b: _softmax_formula(x, -1)),
    True: _rows.RowMap("log_softmax", 0.0, 0.0, lambda x, w, b: _log_softmax_formula(x, -1)),
}


def _compiled(xc: torch.Tensor, axis: int, log: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Under torch.compile on the CPU: softmax (or log_softmax) by the plain fused formula on rows
    shifted by their maximum where every row's maximum is finite, by the limits formula
    otherwise, chosen by torch.cond after the row maxima, which the fast side takes (see
    impl_torch/_decisions.py, compiled_cpu); and the rows' finiteness (their maximum's)."""
    plain, formula = (_log_softmax_plain, _log_softmax_formula) if log else (_softmax_plain, _softmax_formula)
    top = xc.amax(dim=axis, keepdim=True).detach()
    finite = top.isfinite()

    def fast(xc: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        return plain(xc - top, axis)

    def rare(xc: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        return formula(xc, axis)

    return torch.cond(finite.all(), fast, rare, (xc, top)), finite


class _CompiledMap(torch.autograd.Function):
    """softmax or log_softmax under torch.compile with autograd (CPU): the value by _compiled,
    the derivative written from the output as ATen's, y (g - sum(g y)) and g - exp(y) sum(g),
    times the finiteness of the row's maximum: zero for a row whose limit was taken (a +inf, or
    all -inf), NaN for a NaN row; a -inf entry under a finite maximum is an ordinary row.

    Not torch.cond's own derivative: it runs the branch again in the backward (the exp and its
    sum: 1.2-1.5x compiled torch.softmax forward+backward), and torch 2.13's inductor let that
    backward's subgraph write its result into the grad_output it was given (pytorch#192840): the
    cotangent a caller passed to autograd.grad came back overwritten, and a gradient that add's
    backward hands to two branches would reach the other one wrong."""

    @staticmethod
    def forward(xc: torch.Tensor, axis: int, log: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return _compiled(xc, axis, log)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        _, ctx.axis, ctx.log = inputs
        y, finite = output
        ctx.mark_non_differentiable(finite)
        ctx.save_for_backward(y, finite)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _: Any) -> tuple[torch.Tensor, None, None]:
        y, finite = ctx.saved_tensors
        if ctx.log:
            dx = grad - y.exp() * grad.sum(dim=ctx.axis, keepdim=True)
        else:
            dx = y * (grad - (grad * y).sum(dim=ctx.axis, keepdim=True))
        return dx * finite.to(dx.dtype), None, None


def _guarded(x: torch.Tensor, axis: int, native: Any, formula: Any, log: bool) -> torch.Tensor:
    """ATen's fused ``native`` (softmax or log_softmax) where it is the declared map, else ``formula``.

    ATen's kernel is the declaration on every row without an infinity, derivatives included
    (y (g - sum(g y)) and g - y sum(g), in every mode); a row holding one comes out all NaN
    (inf - inf, then a NaN sum that every entry is divided by or less), as a NaN row does. So
    the guard reads one entry per row, the first: their sum is NaN exactly when a row is (entries
    lie in [0, 1], or in [-inf, 0], so no inf - inf can arise); a pass over the whole output cost
    a quarter of the softmax (measured). Only then are the NaN rows found and recomputed by the
    formula, which gives the limits (and NaN again for NaN rows); the tests of infinite and NaN
    rows pin ATen's all-NaN rows. Eager CPU only: elsewhere the branch-free formula runs (a host
    check would synchronize a device or break a trace)."""
    if x.shape[axis] == 0:
        return x.clone()
    if rows_serve(x) and axis % x.ndim == x.ndim - 1:  # eager CUDA: one Triton kernel each way
        return _rows.apply(_SIMPLEX_ROWS[log], x, None, None, tracks_grad(x))
    xc = upcast(x)
    if compiled_cpu(xc):
        y = apply(_CompiledMap, xc, axis, log)[0] if tracks_grad(xc) else _compiled(xc, axis, log)[0]
        return y.to(x.dtype)
    if not eager_cpu(xc):
        return formula(xc, axis).to(x.dtype)
    y = native(xc, axis)
    if _has_nan_row(y, axis):
        last = y.detach().movedim(axis, -1)
        good = ~torch.isnan(last).reshape(-1, last.shape[-1]).any(dim=-1)
        rows = patch_rows(xc.movedim(axis, -1), good, lambda r: native(r, -1), lambda r: formula(r, -1))
        y = rows.movedim(-1, axis)
    return as_dtype(y, x.dtype)


def _has_nan_row(y: torch.Tensor, axis: int) -> bool:
    """Whether a first entry along ``axis`` of ``y`` (float32 or float64) is NaN: one C call
    (guards.c) on a contiguous output; else their sum in numpy, on a view of the output (ATen's
    select, sum and item cost twice as much, and so does np.moveaxis). Each costs a fraction of
    the softmax: 1 us and 3-8 us against 40 us at 64 rows of 1024."""
    if _native.available() and y.is_contiguous():
        shape, axis = y.shape, axis % y.ndim
        outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1 :])
        return _native.nan_in_first(y.data_ptr(), outer, shape[axis], inner, double=y.dtype == torch.float64)
    first = [slice(None)] * y.ndim
    first[axis] = 0
    total = y.detach().numpy()[tuple(first)].sum()
    return bool(total != total)


@implements("softmax", "torch")
def softmax(x: torch.Tensor, *, axis: int) -> torch.Tensor:
    return _guarded(x, axis, torch.softmax, _softmax_formula, log=False)


@implements("log_softmax", "torch")
def log_softmax(x: torch.Tensor, *, axis: int) -> torch.Tensor:
    return _guarded(x, axis, torch.log_softmax, _log_softmax_formula, log=True)


def _sorted_threshold(zs: torch.Tensor, axis: int) -> torch.Tensor:
    """tau from the row's largest values in descending order (all of the row, or any leading
    part holding the support): the support is the j with 1 + j z_(j) > sum of the first j."""
    cs = zs.cumsum(dim=axis)
    shape = [1] * zs.ndim
    shape[axis] = -1
    k = torch.arange(1, zs.shape[axis] + 1, dtype=zs.dtype, device=zs.device).reshape(shape)
    # At least 1: a NaN row counts no support (its output is set to NaN afterwards).
    support = (1.0 + k * zs > cs).sum(dim=axis, keepdim=True).clamp_min(1)
    return (torch.gather(cs, axis, support - 1) - 1.0) / support.to(zs.dtype)


def _threshold(z: torch.Tensor, axis: int) -> torch.Tensor:
    """sparsemax's tau per row of ``z`` (rows shifted so that their maximum is 0, or NaN).

    Eager CPU float32 where the C kernel built: Michelot's iteration per row (``_native``,
    sparsemax.c). Other eager CPU dtypes, in linear time for rows spread over more than about 1:
    tau >= max - 1 = -1 and tau >= (sum z - 1) / n, so the support lies inside {z > the larger
    bound}, a handful of values per row then. Those values are gathered (``masked_select``, in row order), padded
    with -inf to the widest row's count, sorted, and given the sort-based rule, which yields the
    same tau as on the whole sorted row: they are the row's largest values, and the rule's count
    only looks at the first |support| + 1 of them (the sums agree to rounding). Where the
    bracket holds half a row or more, or off eager CPU (torch.compile, transforms, devices,
    where a host-sized padding cannot be chosen), the whole row is sorted."""
    n = z.shape[axis]

    def sorted_whole() -> torch.Tensor:
        return _sorted_threshold(torch.sort(z, dim=axis, descending=True).values, axis)

    if kernel_serves(z) and z.numel():
        # float32: the C kernel, Michelot's iteration per row in the cache (see sparsemax.c).
        rows = z.movedim(axis, -1).contiguous()
        tau = rows.new_empty((*rows.shape[:-1], 1))
        _native.sparsemax_threshold_f32(rows.data_ptr(), tau.data_ptr(), rows.numel() // n, n,
                                        threads=torch.get_num_threads())  # fmt: skip
        return tau.movedim(-1, axis)
    if compiled_cpu(z) and z.numel():
        return _threshold_compiled(z, axis, sorted_whole)
    if not eager_cpu(z) or n < _SORT_BELOW:
        return sorted_whole()
    rows = z.movedim(axis, -1).reshape(-1, n)
    # NaN rows compare False everywhere: no candidates, tau -inf, and NaN set afterwards.
    lower = torch.clamp_min((rows.sum(dim=-1, keepdim=True) - 1.0) / n, -1.0)
    candidates = rows > lower
    counts = candidates.sum(dim=-1)
    k = int(counts.max()) if rows.numel() else 0
    if k == 0 or 2 * k > n:
        return sorted_whole()
    values = torch.masked_select(rows, candidates)
    row_of = torch.repeat_interleave(torch.arange(rows.shape[0]), counts)
    starts = torch.cumsum(counts, dim=0) - counts
    place = torch.arange(values.numel()) - torch.repeat_interleave(starts, counts)
    padded = rows.new_full((rows.shape[0], k), -math.inf).index_put((row_of, place), values)
    tau = _sorted_threshold(torch.sort(padded, dim=-1, descending=True).values, -1)
    shape = list(z.movedim(axis, -1).shape)
    shape[-1] = 1
    return tau.reshape(shape).movedim(-1, axis)


# Rows this short are sorted whole: the bracketing's few passes and host check cost more.
_SORT_BELOW = 64

# Michelot steps unrolled under torch.compile: rows of 1024 spread as N(0, s^2) stop after 2 (s =
# 100) to 8 (s = 0.1) steps from the lower bound; a batch with a row still moving after them is
# sorted instead.
_COMPILED_STEPS = 8


def _threshold_compiled(z: torch.Tensor, axis: int, sorted_whole: Any) -> torch.Tensor:
    """Under torch.compile on the CPU: Michelot's iteration (as sparsemax.c and the JAX side:
    t' = (sum of the z > t, less 1) / their count, from max(-1, (sum z - 1) / n); a row that
    stopped rising keeps its state; tau is the step from where it stopped), unrolled, since
    inductor compiles no loop of unknown length. torch.cond then takes its tau where every row
    stopped, the sort-based rule otherwise. Each step is a pass over the rows, where a sort of
    the whole row cost 40-70 softmaxes."""
    n = z.shape[axis]

    def step(t: torch.Tensor) -> torch.Tensor:
        above = z > t
        count = above.sum(dim=axis, keepdim=True).clamp_min(1).to(z.dtype)
        return (torch.where(above, z, 0.0).sum(dim=axis, keepdim=True) - 1.0) / count

    t = torch.clamp_min((z.sum(dim=axis, keepdim=True) - 1.0) / n, -1.0)
    following = step(t)
    for _ in range(_COMPILED_STEPS):
        rising = following > t
        t, following = torch.where(rising, following, t), torch.where(rising, step(following), following)

    def stopped(z: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return tau.clone()  # a branch returns no input

    def moving(z: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return sorted_whole()

    return torch.cond((following > t).any(), moving, stopped, (z, following))


class _Sparsemax(torch.autograd.Function):
    """Projection onto the simplex; gradient g - mean_S(g) on the support S, zero on rows that
    held an infinity. The Jacobian is symmetric, so the tangent map is the same."""

    @staticmethod
    def forward(z: torch.Tensor, axis: int, finite_rows: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(z - _threshold(z, axis), 0.0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        _, ctx.axis, finite_rows = inputs
        ctx.save_for_backward(output, finite_rows)
        ctx.save_for_forward(output, finite_rows)

    @staticmethod
    def derivative(ctx: Any, v: torch.Tensor) -> torch.Tensor:
        y, finite_rows = ctx.saved_tensors
        # sign(y) is (y > 0) for y >= 0, and NaN only in NaN rows, which are not finite_rows.
        # Not the comparison: torch.compile would save its boolean result for the backward, and
        # inductor's CPU store of a boolean tensor costs three times the rest of the training
        # forward (measured: 38 ms for 2^22 values, against 12).
        on = torch.where(finite_rows, y.sign(), 0.0).to(v.dtype)
        mean = (v * on).sum(dim=ctx.axis, keepdim=True) / on.sum(dim=ctx.axis, keepdim=True).clamp_min(1.0)
        return (v - mean) * on

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _Sparsemax.derivative(ctx, grad), None, None


@implements("sparsemax", "torch")
def sparsemax(x: torch.Tensor, *, axis: int) -> torch.Tensor:
    if x.shape[axis] == 0:
        return x.clone()
    if rows_serve(x) and axis % x.ndim == x.ndim - 1:  # eager CUDA: one Triton kernel each way
        return _rows.apply(_SPARSEMAX_ROWS, x, None, None, tracks_grad(x))
    return _sparsemax_formula(x, axis)


def _sparsemax_formula(x: torch.Tensor, axis: int) -> torch.Tensor:
    """sparsemax by ATen ops: the rows shifted (their limits taken), the threshold (_threshold),
    the rest elementwise."""
    xc = upcast(x)
    z, top = _limit_shift(xc, axis)
    y = apply(_Sparsemax, z, axis % x.ndim, torch.isfinite(top))
    # The largest output is max(z) - tau <= 1 in exact arithmetic; this guards the rounding.
    y = clamp_straight_through(y, 0.0, 1.0, fresh=True)
    # NaN rows stay NaN, and so do their derivatives (a select would pass zero): the threshold's
    # counting would otherwise hide the NaN.
    nan_rows = torch.isnan(top)
    if not eager_cpu(xc) or bool(nan_rows.any()):
        y = y * torch.where(nan_rows, math.nan, 1.0)
    return y.to(x.dtype)


# The row kernels' record of sparsemax, with the formula the second order differentiates.
_SPARSEMAX_ROWS = _rows.RowMap("sparsemax", 0.0, 1.0, lambda x, w, b: _sparsemax_formula(x, -1))
