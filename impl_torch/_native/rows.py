"""Triton kernels for PyTorch's eager CUDA path: layer_norm, rms_norm, softmax, log_softmax and
sparsemax over the last axis, one kernel each way, with every rule of the declaration inside it.

Why: on CUDA the guarded fast path of the CPU (ATen's fused op, then a host-side look at its
per-row statistics) would synchronize the device at every call, so the branch-free ATen formula
ran there instead, at 7-15 times the built-in op, and sparsemax sorted its rows, at 3-39
softmaxes (bench/results/cuda-h200-2026-12-04). A row of up to MAX_ROW elements fits a
program's registers, so the rules cost arithmetic, not passes: one read and one write forward,
as ATen's own kernels take. The kernels are in ``row_kernels.py``.

Served where ``_decisions.rows_serve`` says (eager, plain float32 tensors, CUDA or Triton's
interpreter on the CPU, ``fused.available``); the formula runs everywhere else, and also where a
backward is itself differentiated (second order: see ``_Rows.backward``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from impl_torch._native import fused
from impl_torch._native.memory import has_memory

# The simplex maps: a kernel of their own each way, from the row (forward) and the output (backward).
SIMPLEX = ("softmax", "log_softmax", "sparsemax")

# Elements of the longest row the kernels take: the row lives in registers (spilled beyond a few
# thousand, still one trip to memory); longer rows take the formula.
MAX_ROW = 1 << 14

Formula = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]


class RowMap(NamedTuple):
    """A row-wise technique with its parameters fixed: ``kind`` ("layer_norm", "rms_norm", or one
    of SIMPLEX), its eps (norms), the bound of a norm without weight, and
    ``formula(x, weight, bias)``, the declaration in differentiable ATen ops, which the second
    order differentiates."""

    kind: str
    eps: float
    bound: float
    formula: Formula


@functools.cache
def _kernels() -> Any:
    # Imported at first use, as fused._kernel: importing Triton costs a second.
    from impl_torch._native import row_kernels

    return row_kernels


def _warps(block: int) -> int:
    return 4 if block <= 1024 else 8 if block <= 4096 else 16


def _bands_for(device: torch.device) -> int:
    """How many bands of rows a norm's backward sums its weight gradients over: a few per
    streaming multiprocessor on a GPU, fewer in the interpreter (its programs run one by one)."""
    return 4 * fused.multiprocessors(device) or 8


def forward(
    rowmap: RowMap, x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, per-row statistics) of ``rowmap`` on ``x`` (float32, last axis of at most
    MAX_ROW elements): a norm's _GroupRule as four rows of a (4, rows) tensor, a simplex map's
    finiteness of each row's maximum (1.0, 0.0 where the row took its limit, NaN for a NaN row)."""
    kernels = _kernels()
    n = x.shape[-1]
    x = x.contiguous()
    rows = x.numel() // n
    y = torch.empty_like(x)
    block = _next_power_of_2(n)
    with fused.on_device_of(x):
        if rowmap.kind == "sparsemax":
            stats = x.new_empty(rows)
            kernels.sparsemax_forward[(rows,)](x, y, stats, n, BLOCK=block, num_warps=_warps(block),
                                               enable_fp_fusion=False)  # fmt: skip
        elif rowmap.kind in SIMPLEX:
            stats = x.new_empty(rows)
            kernels.simplex_forward[(rows,)](x, y, stats, n, LOG=rowmap.kind == "log_softmax", BLOCK=block,
                                             num_warps=_warps(block), enable_fp_fusion=False)  # fmt: skip
        else:
            stats = x.new_empty(4, rows)
            kernels.norm_forward[(rows,)](
                x, x if w is None else w.contiguous(), x if b is None else b.contiguous(), y, stats, rows, n,
                rowmap.eps, rowmap.bound, CENTRED=rowmap.kind == "layer_norm", WEIGHT=w is not None,
                BIAS=b is not None, BLOCK=block, num_warps=_warps(block), enable_fp_fusion=False,
            )  # fmt: skip
    return y, stats


def backward(
    rowmap: RowMap,
    grad: torch.Tensor,
    saved: torch.Tensor,
    stats: torch.Tensor,
    w: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, ...]:
    """(dx, dweight, dbias) of ``rowmap``, each None unless ``needs`` asks for it; ``saved`` is
    a norm's input or a simplex map's output."""
    kernels = _kernels()
    n = saved.shape[-1]
    rows = saved.numel() // n
    g = grad.contiguous()
    block = _next_power_of_2(n)
    with fused.on_device_of(saved):
        if rowmap.kind in SIMPLEX:
            dx = torch.empty_like(saved)
            if rowmap.kind == "sparsemax":
                kernels.sparsemax_backward[(rows,)](saved, g, stats, dx, n, BLOCK=block, num_warps=_warps(block),
                                                    enable_fp_fusion=False)  # fmt: skip
            else:
                log = rowmap.kind == "log_softmax"
                kernels.simplex_backward[(rows,)](saved, g, stats, dx, n, LOG=log, BLOCK=block,
                                                  num_warps=_warps(block), enable_fp_fusion=False)  # fmt: skip
            return dx, None, None
        # A band per row where no weight gradient is summed: a program per row, as forward,
        # rather than a few per multiprocessor walking their rows one after another.
        bands = min(rows, _bands_for(saved.device)) if needs[1] or needs[2] else rows
        band = -(-rows // bands)
        bands = -(-rows // band)
        dx = torch.empty_like(saved) if needs[0] else None
        dw = saved.new_empty(bands, n) if needs[1] else None
        db = saved.new_empty(bands, n) if needs[2] else None
        kernels.norm_backward[(bands,)](
            saved, saved if w is None else w, g, stats, saved if dx is None else dx, saved if dw is None else dw,
            saved if db is None else db, rows, n, band, CENTRED=rowmap.kind == "layer_norm", WEIGHT=w is not None,
            DX=needs[0], DW=needs[1], DB=needs[2], BLOCK=block, num_warps=_warps(block), enable_fp_fusion=False,
        )  # fmt: skip
    return dx, None if dw is None else dw.sum(0), None if db is None else db.sum(0)


def _next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


class _Rows(torch.autograd.Function):
    """A row-wise technique by the kernels, with autograd: the backward one kernel from what the
    forward saved (a norm's input and per-row rule, a simplex map's output and finiteness). Only
    plain eager float32 tensors reach it (``_decisions.rows_serve``), so it is written in the
    classic form and needs no forward-mode or vmap rule. Where the backward is itself
    differentiated (second order), the formula's own derivative is taken instead: the kernels'
    statistics are constants to autograd, where the declaration's depend on the input."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, rowmap: RowMap
    ) -> torch.Tensor:
        y, stats = forward(rowmap, x, w, b)
        ctx.rowmap = rowmap
        # The inputs as given, not contiguous copies: a copy made here has no autograd history,
        # which the second order needs. The kernels' backward makes its own copies.
        ctx.save_for_backward(x, w, b, stats, y if rowmap.kind in SIMPLEX else None)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w, b, stats, y = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        # Second order, or autograd's batched cotangents (is_grads_batched), which the kernels
        # cannot read: the formula's own derivative.
        if torch.is_grad_enabled() or not has_memory(grad):
            return (*formula_vjp(ctx.rowmap.formula, (x, w, b), needs, grad), None)
        saved = x.contiguous() if y is None else y  # read by address arithmetic
        return (*backward(ctx.rowmap, grad, saved, stats, None if w is None else w.contiguous(), needs), None)


def formula_vjp(
    formula: Formula, inputs: tuple[torch.Tensor | None, ...], needs: tuple[bool, ...], grad: torch.Tensor
) -> tuple[torch.Tensor | None, ...]:
    """The vector-Jacobian product of ``formula`` at ``inputs``, with its own graph where grad
    mode is on (second order): the saved inputs are the caller's, so the result's derivative
    reaches them."""
    wanted = [t for t, need in zip(inputs, needs, strict=True) if need and t is not None]
    graph = torch.is_grad_enabled()
    with torch.enable_grad():
        out = formula(*inputs)
    found = iter(torch.autograd.grad(out, wanted, grad, create_graph=graph, allow_unused=True))
    return tuple(next(found) if need and t is not None else None for t, need in zip(inputs, needs, strict=True))


def apply(rowmap: RowMap, x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, grad: bool) -> torch.Tensor:
    """``rowmap`` of ``x`` by the kernels, through ``_Rows`` where autograd records the call."""
    if grad:
        return _Rows.apply(x, w, b, rowmap)
    return forward(rowmap, x, w, b)[0]
