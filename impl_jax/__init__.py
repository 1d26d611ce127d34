"""JAX/Flax implementations. Mirrors ``impl_torch`` file for file and name for name.

This package's public names are the adapter every test and benchmark uses; importing it
registers the built-in techniques (``functional``, ``modules``).
"""

from impl_jax import baselines, extended, functional, inverses
from impl_jax.adapter import (
    asarray,
    dtype_name,
    from_numpy,
    get_state,
    is_training,
    set_state,
    set_training,
    to_numpy,
    vjp,
)
from impl_jax.modules import make_head, make_module
from impl_jax.timing import bench_callable, bench_devices, block, copy_callable, device_name

__all__ = [
    "asarray",
    "baselines",
    "bench_callable",
    "bench_devices",
    "block",
    "copy_callable",
    "device_name",
    "dtype_name",
    "extended",
    "from_numpy",
    "functional",
    "get_state",
    "inverses",
    "is_training",
    "make_head",
    "make_module",
    "set_state",
    "set_training",
    "to_numpy",
    "vjp",
]
