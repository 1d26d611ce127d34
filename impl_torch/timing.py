"""Benchmark plumbing for PyTorch (mirrors ``impl_jax/timing.py``): devices, timed callables, sync."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from impl_torch import _native
from impl_torch._native import fused
from impl_torch._native import node as _node
from impl_torch.adapter import from_numpy


def bench_devices() -> tuple[str, ...]:
    """Devices this framework can benchmark on: "cpu", and "cuda" when a GPU is visible."""
    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def block(output: Any) -> None:
    """Wait until ``output`` is computed (PyTorch on CPU is synchronous)."""
    if isinstance(output, torch.Tensor) and output.is_cuda:
        torch.cuda.synchronize(output.device)


def bench_callable(
    module: Any, x: np.ndarray, cotangent: np.ndarray, mode: str, style: str, device: str
) -> Callable[[], torch.Tensor]:
    """A zero-argument callable computing ``module`` on ``x`` (forward) or the input VJP with
    ``cotangent`` (forward+backward), with inputs already on ``device``. ``style`` is "eager" or
    "compile" (``torch.compile``; compiled on the first call)."""
    if isinstance(module, torch.nn.Module):
        # The row times the input VJP only, as jax.vjp with respect to x does on the JAX side.
        # Eager autograd.grad would skip parameter gradients anyway; a torch.compile'd backward
        # computes them whenever parameters require grad (12-18% more work for LayerNorm).
        module = module.to(device).requires_grad_(False)
    fn = torch.compile(module) if style == "compile" else module
    xt = from_numpy(x, "float32").to(device)
    ct = from_numpy(cotangent, "float32").to(device)
    if mode == "forward":

        def forward() -> torch.Tensor:
            with torch.no_grad():
                return fn(xt)

        return forward

    def forward_backward() -> torch.Tensor:
        # A fresh leaf per call and autograd.grad (not .backward): nothing accumulates across calls.
        leaf = xt.detach().requires_grad_(True)
        return torch.autograd.grad(fn(leaf), leaf, ct)[0]

    return forward_backward


def copy_callable(x: np.ndarray, device: str) -> Callable[[], torch.Tensor]:
    """A device copy of ``x`` into a fresh buffer: the bandwidth reference of the report."""
    xt = from_numpy(x, "float32").to(device)
    return xt.clone


def native_kernels() -> dict[str, object]:
    """Which kernels this side's eager path runs here, for the benchmark record: on the CPU the
    float32 C kernels (``_native``) or the ATen formula and why, and their autograd node
    (``_node``: C++, or a Python Function and why); on CUDA the Triton kernels or why not."""
    record = _native.build().record()
    if record["on"]:
        record["autograd_node"] = _node.node().note
    record["cuda_kernels"] = fused.status()[1]  # eager CUDA's elementwise composites (Triton)
    return record
