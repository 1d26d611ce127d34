import torch

import harness


@harness.implements("interval_softsign", "torch")
def interval_softsign(x: torch.Tensor, *, lo: float, hi: float) -> torch.Tensor:
    # float32 for float16 and bfloat16, rounded once at the end, as the JAX side does.
    xc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    # +-inf -> +-the largest finite value, whose softsign rounds to +-1 (the limit), not inf / inf.
    # Selects, not torch.clamp: its backward gives 0 at a NaN, where the declared derivative is NaN.
    big = torch.finfo(xc.dtype).max
    xf = torch.where(torch.isinf(xc), torch.sign(xc) * big, xc)
    y = lo + (hi - lo) * (1.0 + xf / (1.0 + xf.abs())) / 2.0
    # Rounding of lo + (hi - lo) can step an ulp past hi: clamped last, where it changes nothing else.
    return torch.where(y > hi, hi, torch.where(y < lo, lo, y)).to(x.dtype)
