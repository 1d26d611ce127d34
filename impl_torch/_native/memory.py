"""Whether a tensor has memory behind it: the test the eager-only paths (the C and Triton kernels,
writes in place) make before reading or writing a tensor by address."""

from __future__ import annotations

import torch


def has_memory(x: torch.Tensor) -> bool:
    """Whether ``x`` has memory behind it that an op may read by address or write into in place:
    not a torch.func wrapper, nor a fake tensor (torch.export), nor the batched tensor that
    autograd's ``is_grads_batched`` (``jacobian(vectorize=True)``) hands a backward, whose batch
    dimension is hidden from its shape: an in-place op mixing it with a plain buffer fails."""
    try:
        return x.untyped_storage().data_ptr() != 0
    except RuntimeError:  # "Cannot access storage of TensorWrapper" (torch.func) and the like
        return False
