"""Small Triton kernels that let tests call the kernels' helpers one by one (Triton's
interpreter in the Triton pass of ``nox -s tests``, a GPU under ``pytest --device cuda``). A
module of its own, imported where such a test runs: the main pass has no Triton installed."""

import triton
import triton.language as tl

from impl_torch._native.fused_kernels import divide


@triton.jit
def quotients(a_ptr, b_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """out = divide(a, b), elementwise, one program."""
    offsets = tl.arange(0, BLOCK)
    inside = offsets < n
    a = tl.load(a_ptr + offsets, mask=inside, other=0.0)
    b = tl.load(b_ptr + offsets, mask=inside, other=1.0)
    tl.store(out_ptr + offsets, divide(a, b), mask=inside)
