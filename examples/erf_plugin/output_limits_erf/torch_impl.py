import torch

import harness


@harness.implements("erf_squash", "torch")
def erf_squash(x: torch.Tensor) -> torch.Tensor:
    return torch.special.erf(x)


@harness.implements_inverse("erf_squash", "torch")
def erf_squash_inverse(y: torch.Tensor) -> torch.Tensor:
    return torch.special.erfinv(y)
