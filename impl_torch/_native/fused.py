"""Triton kernels for PyTorch's eager CUDA path: the elementwise composites of ``squashes.c`` in
one launch each, where their ATen formulas take two to ten (a launch and a trip to memory each).
Whether Triton runs here at all (``status``) is decided here for ``rows.py``'s kernels too.

Each kernel follows its C twin term by term (read the comments there): the output, and on request
the derivative dy/dx beside it, so that the backward is one multiplication. NaN propagates, an
infinity takes the formula's limit, and every bounded output is clamped to its bounds last (a
GPU's exp and division may round differently from the CPU's, and here the clamp is free). The
declarations are in ``harness/squashes.py`` and ``harness/clamps.py``.

Off (the ATen formula runs) where Triton is not installed (PyTorch's CUDA wheels ship it; CPU
wheels do not) or ``OUTPUT_LIMITS_TRITON=0`` or ``OUTPUT_LIMITS_NATIVE=0`` is set. Tests run these
kernels without a GPU in Triton's interpreter: ``TRITON_INTERPRET=1`` with
``OUTPUT_LIMITS_TRITON_CPU=1``, which routes eager CPU float32 here instead of the C kernels
(``impl_torch/_decisions.py``, ``triton_serves``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, NamedTuple

import torch

from impl_torch._native import ELEMENTWISE

_BLOCK = 1024


@functools.cache
def status() -> tuple[bool, str]:
    """(on, why): whether the kernels can run here, once per process."""
    if os.environ.get("OUTPUT_LIMITS_NATIVE", "1") == "0" or os.environ.get("OUTPUT_LIMITS_TRITON", "1") == "0":
        return False, "off: OUTPUT_LIMITS_TRITON=0 or OUTPUT_LIMITS_NATIVE=0; the ATen formula runs"
    try:
        _kernel()
    except ImportError as error:
        return False, f"off: Triton is not installed ({error}); the ATen formula runs"
    return True, "on: Triton kernels for the elementwise composites (fused.py) and the norms and simplex maps (rows.py)"


def available() -> bool:
    return status()[0]


@functools.cache
def _kernel() -> Any:
    """The Triton kernel (``fused_kernels.py``), imported at first use: importing Triton costs a
    second, and TRITON_INTERPRET is read when a kernel is defined."""
    from impl_torch._native import fused_kernels

    return fused_kernels.elementwise


@functools.cache
def multiprocessors(device: torch.device) -> int:
    """The streaming multiprocessors of a CUDA ``device``, 0 for any other (Triton's
    interpreter runs programs one by one): how many programs fill it."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 0


_SAME_DEVICE = contextlib.nullcontext()


def on_device_of(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """The context a launch for ``x`` runs in: Triton launches on the current device, not the
    tensor's, so that device's context where they differ, and none where they agree (the common
    call: entering torch.cuda.device took part of the 8 us between a bare Triton launch and
    ``run`` on the H200 host, bench/results/cuda-h200-2026-12-04)."""
    # get_device(): an int (-1 on the CPU), where x.device builds an object.
    index = x.get_device()
    if index < 0 or index == torch.cuda.current_device():
        return _SAME_DEVICE
    return torch.cuda.device(index)


class Launch(NamedTuple):
    """What ``run`` passes for one technique with its parameters: the kernel's KIND (the index of
    the technique in ``_native.ELEMENTWISE``) and its six float parameters, padded. Made once per
    technique and parameters (``launch``, kept by ``_common.NativeKernel``): derived at every call
    they cost about 1 us of the host time that decides a 2^24-element call on a GPU."""

    kind: int
    params: tuple[float, float, float, float, float, float]


def launch(name: str, params: tuple[float, ...]) -> Launch:
    """The Launch of technique ``name`` (of ``_native.ELEMENTWISE``) with ``params``."""
    return Launch(ELEMENTWISE.index(name), (*(float(v) for v in params), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)[:6])


def run(what: Launch, x: torch.Tensor, y: torch.Tensor, d: torch.Tensor | None) -> None:
    """Write the technique of ``what`` of the contiguous float32 ``x`` to ``y``, and its
    derivative dy/dx to ``d`` unless it is None."""
    kernel = _kernel()
    n = x.numel()
    # enable_fp_fusion=False: each product rounds before the sum that uses it, as in ATen's
    # passes and the C kernels (-ffp-contract=off; contracted, soft_clip(-inf) lands above lo
    # instead of on it).
    with on_device_of(x):
        kernel[(-(-n // _BLOCK),)](x, y, y if d is None else d, n, *what.params, KIND=what.kind,
                                   DERIVATIVE=d is not None, BLOCK=_BLOCK, enable_fp_fusion=False)  # fmt: skip
