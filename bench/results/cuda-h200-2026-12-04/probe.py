"""Host cost per call of the eager CUDA elementwise path, and the Triton kernel's own speed."""

import time, torch, harness
from impl_torch._native import fused, fused_kernels
import triton


def per_call(fn, n_calls):
    fn()
    torch.cuda.synchronize()
    best = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n_calls):
            fn()
        torch.cuda.synchronize()
        best.append((time.perf_counter() - t) / n_calls * 1e6)
    return sorted(best)[2]


for log2 in (10, 24):
    n = 1 << log2
    calls = 2000 if log2 == 10 else 200
    x = torch.randn(n, device="cuda") * 4
    y = torch.empty_like(x)
    sc = harness.build("smooth_clamp", "torch")
    ss = harness.build("scaled_sigmoid", "torch")
    from impl_torch.squashes import _smooth_clamp_native

    name, params = "smooth_clamp", (-1.0, 1.0, -0.5, 0.5, 0.5, 4.0)
    p = (*params, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)[:6]
    grid = (triton.cdiv(n, 1024),)

    def raw():
        fused_kernels.elementwise[grid](x, y, y, n, *p, KIND=0, DERIVATIVE=False, BLOCK=1024, enable_fp_fusion=False)

    xg = x.clone().requires_grad_(True)
    g = torch.ones_like(x)

    def fb_ours():
        torch.autograd.grad(sc(xg), xg, g)

    def fb_sig():
        torch.autograd.grad(torch.sigmoid(xg), xg, g)

    rows = {
        "torch.sigmoid": lambda: torch.sigmoid(x),
        "torch.clamp": lambda: torch.clamp(x, -1, 1),
        "smooth_clamp module": lambda: sc(x),
        "scaled_sigmoid module": lambda: ss(x),
        "fused.run": lambda: fused.run(name, params, x, y, None),
        "raw triton launch": raw,
        "fwd+bwd sigmoid": fb_sig,
        "fwd+bwd smooth_clamp module": fb_ours,
    }
    for k, f in rows.items():
        print(f"2^{log2} {k}: {per_call(f, calls):.1f} us/call", flush=True)
