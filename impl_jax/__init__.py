"""JAX/Flax implementations. Mirrors ``impl_torch`` file for file and name for name.

One module per family (``clamps``, ``squashes``, ``simplex``, ``norms``: the same names as in
``harness``), each with its implementations, inverses and module classes; importing this package
registers them all. Its other public names are the adapter every test and benchmark uses.
"""

from impl_jax import baselines, clamps, norms, simplex, squashes
from impl_jax.adapter import (
    asarray,
    check_floats,
    device,
    dtype_name,
    from_numpy,
    get_state,
    is_training,
    jacobians,
    jvp,
    per_sample_gradients,
    place,
    second_order,
    set_state,
    set_training,
    to_numpy,
    use_device,
    vjp,
    vmapped,
)
from impl_jax.modules import make_head, make_module
from impl_jax.timing import bench_callable, bench_devices, block, copy_callable, device_name, native_kernels

__all__ = [
    "asarray",
    "baselines",
    "bench_callable",
    "bench_devices",
    "block",
    "check_floats",
    "clamps",
    "copy_callable",
    "device",
    "device_name",
    "dtype_name",
    "from_numpy",
    "get_state",
    "is_training",
    "jacobians",
    "jvp",
    "make_head",
    "make_module",
    "native_kernels",
    "norms",
    "per_sample_gradients",
    "place",
    "second_order",
    "set_state",
    "set_training",
    "simplex",
    "squashes",
    "to_numpy",
    "use_device",
    "vjp",
    "vmapped",
]
