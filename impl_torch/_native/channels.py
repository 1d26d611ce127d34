"""Triton kernels for PyTorch's eager CUDA batch_norm in training mode: four kernels forward (one
of them per block of channels only), two backward, with every rule of the declaration inside them
(``channel_kernels.py``).

Why: on CUDA the CPU's guarded path (ATen's fused batch norm, then a host-side look at its
per-channel statistics) would synchronize the device at every call, so the branch-free formula
ran there, at about ten times nn.BatchNorm1d (bench/results/cuda-h200-2026-12-04). Here the
statistics pass also finds the largest magnitude, the infinities and NaN of each channel, so the
rules cost arithmetic: three reads of the input and one write forward (ATen's two reads: the
declared variance is two-pass, about the mean), two reads of the input and the cotangent and one
write backward, as ATen's. Each program takes one band of rows for one block of channels, in
tiles contiguous along the channels for a (batch, channels) input (strided for the inner axes of
a larger one); the next kernel combines the bands' partial results.

Served where ``_decisions.rows_serve`` says, with at least two values per channel; the formula
runs everywhere else, and where a backward is itself differentiated (second order).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from impl_torch._native import fused
from impl_torch._native.memory import has_memory
from impl_torch._native.rows import formula_vjp

Formula = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@functools.cache
def _kernels() -> Any:
    # Imported at first use: importing Triton costs a second (see fused._kernel).
    from impl_torch._native import channel_kernels

    return channel_kernels


def _programs(device: torch.device) -> int:
    """How many programs a kernel spreads over: two per streaming multiprocessor on a GPU, a few
    in the interpreter (its programs run one by one)."""
    return 2 * fused.multiprocessors(device) or 4


# The kernels address their per-band results ((7, bands, c) floats) and per-channel rules in 32
# bits: at most MAX_BANDS bands of at most MAX_CHANNELS channels keep 7 * bands * c below 2^31.
# More channels take the formula (``serves``).
MAX_BANDS = 256
MAX_CHANNELS = 1 << 20


def serves(x: torch.Tensor) -> bool:
    """Whether the kernels take ``x`` (channels on axis 1), with
    ``_decisions.norm_kernels_take``: at least two values per channel, at most MAX_CHANNELS."""
    return x.ndim >= 2 and x.numel() > x.shape[1] and x.shape[1] <= MAX_CHANNELS


def _plan(m: int, c: int, device: torch.device) -> tuple[tuple[int, int], dict[str, int], int, int]:
    """(grid, tile sizes, bands, rows per band) for an (m, c) input: tiles of 4096 elements,
    up to 64 channels wide, bands enough to fill the device (at most MAX_BANDS)."""
    block_c = min(64, 1 << max(c - 1, 0).bit_length())
    block_r = 4096 // block_c
    blocks = -(-c // block_c)
    bands = max(1, min(-(-_programs(device) // blocks), -(-m // block_r), MAX_BANDS))
    band = -(-m // bands)
    band = -(-band // block_r) * block_r  # whole tiles per band
    bands = -(-m // band)
    return (blocks, bands), {"BLOCK_R": block_r, "BLOCK_C": block_c}, bands, band


def _layout(x: torch.Tensor) -> tuple[int, int, int]:
    """(m, c, inner): an (n, c, *rest) input read as m = n * inner rows of c channels."""
    c = x.shape[1]
    inner = x.numel() // (x.shape[0] * c)
    return x.shape[0] * inner, c, inner


def forward(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, momentum: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(output, new running statistics as a (2, c) tensor, the channels' rule as a (4, c) one)
    of batch_norm in training mode on the float32 (n, c, *rest) ``x``, with at least two values
    per channel."""
    kernels = _kernels()
    x, w, b, mean, var = (t.contiguous() for t in (x, w, b, mean, var))  # read by address
    m, c, inner = _layout(x)
    grid, tiles, bands, band = _plan(m, c, x.device)
    part, channel, squares = x.new_empty(7, bands, c), x.new_empty(4, c), x.new_empty(bands, c)
    y, rule, new = torch.empty_like(x), x.new_empty(4, c), x.new_empty(2, c)
    with fused.on_device_of(x):
        kernels.statistics[grid](x, part, m, c, inner, bands, band, **tiles, enable_fp_fusion=False)
        kernels.finish[grid[:1]](part, channel, m, c, bands, BLOCK_C=tiles["BLOCK_C"], enable_fp_fusion=False)
        kernels.spread[grid](x, channel, squares, m, c, inner, bands, band, **tiles, enable_fp_fusion=False)
        kernels.normalize[grid](x, w, b, y, channel, squares, rule, mean, var, new, m, c, inner, bands, band, eps,
                                1.0 - momentum, momentum, m / (m - 1), **tiles, enable_fp_fusion=False)  # fmt: skip
    return y, new, rule


def backward(
    grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor, rule: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias) of ``forward`` from its input and rule."""
    kernels = _kernels()
    x, w = x.contiguous(), w.contiguous()  # read by address
    m, c, inner = _layout(x)
    grid, tiles, bands, band = _plan(m, c, x.device)
    g = grad.contiguous()
    part, dx, dw, db = x.new_empty(2, bands, c), torch.empty_like(x), x.new_empty(c), x.new_empty(c)
    with fused.on_device_of(x):
        kernels.gradient_sums[grid](x, g, rule, part, m, c, inner, bands, band, **tiles, enable_fp_fusion=False)
        kernels.gradient[grid](x, g, w, rule, part, dx, dw, db, m, c, inner, bands, band, **tiles,
                               enable_fp_fusion=False)  # fmt: skip
    return dx, dw, db


class Settings(NamedTuple):
    """batch_norm's parameters beside its tensors: momentum (the new batch's weight), eps, and
    ``formula(x, weight, bias)``, the output by the formula, which the second order
    differentiates."""

    momentum: float
    eps: float
    formula: Formula


class _Channels(torch.autograd.Function):
    """batch_norm in training mode by the kernels, with autograd; (output, new running mean, new
    running variance), the last two not differentiable. Only plain eager float32 tensors reach
    it (``_decisions.norm_kernels_take``), so it takes the classic form; a backward that is itself
    differentiated takes the formula's derivative, as rows._Rows does."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
        settings: Settings,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        # The inputs are saved as given: a contiguous copy made here would have no autograd
        # history, which the second order needs (forward and backward make their own).
        y, new, rule = forward(x, w, b, mean, var, settings.momentum, settings.eps)
        ctx.formula = settings.formula
        new_mean, new_var = new.unbind(0)
        ctx.mark_non_differentiable(new_mean, new_var)
        ctx.save_for_backward(x, w, b, rule)
        return y, new_mean, new_var

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        x, w, b, rule = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        if torch.is_grad_enabled() or not has_memory(grad):  # as rows._Rows.backward
            grads = formula_vjp(ctx.formula, (x, w, b), needs, grad)
        else:
            parts = backward(grad, x, w, rule)
            grads = tuple(g if need else None for g, need in zip(parts, needs, strict=True))
        return (*grads, None, None, None)


def apply(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, settings: Settings,
    grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(output, new running mean, new running variance) by the kernels, through ``_Channels``
    where autograd records the call."""
    if grad:
        return _Channels.apply(x, w, b, mean, var, settings)
    y, new, _ = forward(x, w, b, mean, var, settings.momentum, settings.eps)
    return y, new[0], new[1]
