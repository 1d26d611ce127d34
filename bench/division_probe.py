"""The Triton kernel of ``bench.gpu_probe``'s division check, in a module of its own (Triton
resolves a kernel's helpers among its module's globals, and the probe imports Triton only where
it runs): out = a / b by div.rn as written, or through ``fused_kernels.divide`` (GUARD), which
keeps zero dividends out of it. tests/test_fused.py checks ``divide`` with it too."""

import triton
import triton.language as tl

from impl_torch._native.fused_kernels import divide


@triton.jit
def quotients(a_ptr, b_ptr, out_ptr, n, GUARD: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    a = tl.load(a_ptr + offsets, mask=inside, other=1.0)
    b = tl.load(b_ptr + offsets, mask=inside, other=1.0)
    q = divide(a, b) if GUARD else tl.math.div_rn(a, b)
    tl.store(out_ptr + offsets, q, mask=inside)
