"""The elementwise C kernels as a ``torch.library`` op, for torch.compile on the CPU.

Why: for smooth_clamp, the code inductor generates from the ATen formula (a clamp, a sigmoid and
four more vector operations) costs 1.5-1.6 sigmoids at 2^22 float32 elements, where the C kernel
costs about one (README, speed targets). Through this op a compiled graph runs the kernel as an
extern call; what that gives up is inductor fusing the technique into the ops around it, so a
technique takes the op only where it measured faster than inductor's own code.

The op names its kernel by technique name and parameters, never by address or a per-process
number: inductor caches compiled graphs across processes, and an address would name another
kernel there. The kernel is made here at the first call with those values.

A bare ``Library`` op, not ``torch.library.custom_op``: that one's Python layers (its autograd
wrapper, a dynamo-disable frame) cost 15 us a call eagerly and about 50 compiled (measured at
2^16 elements, where the kernel takes 45). So the op has no autograd formula or batching rule of
its own: a custom Function calls it and states the derivative
(``_common.compiled_elementwise``), which dynamo traces into the graph, and only compiled graphs
without torch.func transforms or forward-mode AD call it (``_decisions.compiled_kernel_serves``;
there dynamo differentiates a Function's forward as written, and this op has no rule for that).
torch.export keeps to the ATen formula.
"""

from __future__ import annotations

import functools

import torch

from impl_torch import _native

_LIBRARY = torch.library.Library("output_limits", "DEF")
_LIBRARY.define("elementwise(Tensor x, str name, float[] params, bool derivative) -> (Tensor, Tensor)")


@functools.lru_cache(maxsize=256)
def _kernel(name: str, params: tuple[float, ...]) -> _native.Elementwise:
    return _native.elementwise(name, params)


def _elementwise(
    x: torch.Tensor, name: str, params: list[float], derivative: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.contiguous()
    y = torch.empty_like(x)
    d = torch.empty_like(x) if derivative else x.new_empty((0,))
    if x.numel():
        _kernel(name, tuple(params))(
            x.data_ptr(), y.data_ptr(), d.data_ptr() if derivative else None, x.numel(), torch.get_num_threads()
        )
    return y, d


_LIBRARY.impl("elementwise", _elementwise, "CPU")


@torch.library.register_fake("output_limits::elementwise", lib=_LIBRARY)
def _(x: torch.Tensor, name: str, params: list[float], derivative: bool) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    return y, x.new_empty(x.shape if derivative else (0,))


# grad * d with the input x as a third operand it does not read. A backward that reads no input
# is cut off from the inputs' graph, where AOT autograd's refusal of double backward sits: with
# create_graph=True the engine would skip it and drop this term from a second derivative without
# an error (measured: the Hessian of smooth_clamp(x) + x^3 came out as 6x's alone).
_LIBRARY.define("times(Tensor grad, Tensor d, Tensor x) -> Tensor")
_LIBRARY.impl("times", lambda grad, d, x: grad * d, "CPU")
torch.library.register_fake("output_limits::times", lambda grad, d, x: grad * d, lib=_LIBRARY)


def times(grad: torch.Tensor, d: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``grad * d``, tied to ``x`` (the input whose derivative ``d`` is) in the graph."""
    return torch.ops.output_limits.times(grad, d, x)


def elementwise(x: torch.Tensor, name: str, params: list[float], derivative: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, dy/dx) of kernel ``name`` of ``_native.ELEMENTWISE`` with ``params`` on float32
    CPU ``x``, both fresh and contiguous; dy/dx is empty unless ``derivative``."""
    return torch.ops.output_limits.elementwise(x, name, params, derivative)
