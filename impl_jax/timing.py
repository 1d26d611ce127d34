"""Benchmark plumbing for JAX (mirrors ``impl_torch/timing.py``): devices, timed callables, sync."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from impl_jax.adapter import from_numpy


def bench_devices() -> tuple[str, ...]:
    """Devices this framework can benchmark on: "cpu", and "cuda" when a GPU is visible."""
    return ("cpu", "cuda") if any(d.platform == "gpu" for d in jax.devices()) else ("cpu",)


def _device(device: str) -> Any:
    return jax.devices("cpu" if device == "cpu" else "gpu")[0]


def device_name(device: str) -> str:
    return str(_device(device).device_kind)


def block(output: Any) -> None:
    """Wait until ``output`` is computed (JAX dispatches asynchronously, on CPU too)."""
    jax.block_until_ready(output)


def bench_callable(
    module: Any, x: np.ndarray, cotangent: np.ndarray, mode: str, style: str, device: str
) -> Callable[[], jax.Array]:
    """A zero-argument callable computing ``module`` on ``x`` (forward) or the input VJP with
    ``cotangent`` (forward+backward) under ``jax.jit`` (compiled on the first call), with inputs
    and parameters already on ``device``. Parameters are arguments, never baked-in constants."""
    if style != "jit":
        raise ValueError(f"JAX benchmarks run under jit, got style {style!r}")
    dev = _device(device)
    if isinstance(module, nnx.Module):
        graphdef, state = nnx.split(module)
        # The parameters travel as a flat list of arrays: jit flattens an nnx.State in Python on
        # every call, 3-5 us measured at 2^16 even for an empty one (a third of a clamp there),
        # which would time the harness's dispatch rather than the op, ours and flax's alike.
        leaves, treedef = jax.tree.flatten(jax.device_put(state, dev))
        state = leaves

        def apply(s: Any, xx: jax.Array) -> jax.Array:
            # copy=True: the module is rebuilt under the current trace (inside jax.vjp too), so a
            # training-mode BatchNorm may update its statistics there.
            return nnx.merge(graphdef, jax.tree.unflatten(treedef, s), copy=True)(xx)
    else:
        state = None

        def apply(s: Any, xx: jax.Array) -> jax.Array:
            return module(xx)

    xj = jax.device_put(from_numpy(x, "float32"), dev)
    cj = jax.device_put(from_numpy(cotangent, "float32"), dev)
    if mode == "forward":
        forward = jax.jit(apply)
        return lambda: forward(state, xj)

    @jax.jit
    def forward_backward(s: Any, xx: jax.Array, c: jax.Array) -> jax.Array:
        return jax.vjp(lambda v: apply(s, v), xx)[1](c)[0]

    return lambda: forward_backward(state, xj, cj)


def copy_callable(x: np.ndarray, device: str) -> Callable[[], jax.Array]:
    """A device copy of ``x`` into a fresh buffer."""
    xj = jax.device_put(from_numpy(x, "float32"), _device(device))
    copy = jax.jit(lambda v: v.copy())
    return lambda: copy(xj)


def native_kernels() -> dict[str, object]:
    """Which C kernels this side runs besides XLA's, for the benchmark record: none."""
    return {"on": False, "compiler": None, "flags": [], "note": "none: XLA compiles every technique itself"}
