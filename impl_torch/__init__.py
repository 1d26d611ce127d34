"""PyTorch implementations. Mirrors ``impl_jax`` file for file and name for name."""

from impl_torch import functional  # noqa: F401  (registers the built-in techniques)
from impl_torch.adapter import asarray, dtype_name, from_numpy, get_state, set_state, to_numpy, vjp
from impl_torch.modules import make_head, make_module

__all__ = [
    "asarray",
    "dtype_name",
    "from_numpy",
    "get_state",
    "make_head",
    "make_module",
    "set_state",
    "to_numpy",
    "vjp",
]
