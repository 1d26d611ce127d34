"""JAX clamps (declared in ``harness/clamps.py``; mirrors ``impl_torch/clamps.py``)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from harness import implements
from impl_jax._common import at_nan, clamp_inside, clamp_straight_through, upcast


@implements("clamp", "jax")
def clamp(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    return clamp_inside(x, lo, hi)


@implements("hardtanh", "jax")
def hardtanh(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    return clamp_inside(x, lo, hi)


@implements("relu6", "jax")
def relu6(x: jax.Array) -> jax.Array:
    return clamp_inside(x, 0.0, 6.0)


@implements("bounded_relu", "jax")
def bounded_relu(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    # clamp(relu(x), lo, hi) == clamp(x, max(lo, 0), hi): one pass instead of two.
    return clamp_inside(x, max(lo, 0.0), hi)


@jax.custom_jvp
def _hardsigmoid(x: jax.Array) -> jax.Array:
    """relu6(x + 3) / 6 with gradient 1/6 strictly inside (-3, 3), 0 elsewhere (bounds included)."""
    return (jnp.clip(upcast(x) + 3.0, 0.0, 6.0) / 6.0).astype(x.dtype)


@_hardsigmoid.defjvp
def _hardsigmoid_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    return _hardsigmoid(x), at_nan(x, jnp.where((x <= -3.0) | (x >= 3.0), jnp.zeros_like(t), t / 6.0))


@implements("hardsigmoid", "jax")
def hardsigmoid(x: jax.Array) -> jax.Array:
    return _hardsigmoid(x)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _leaky_clamp(x: jax.Array, lo: float, hi: float, slope: float) -> jax.Array:
    """m + slope (x - m), m = clip(x, lo, hi); gradient 1 strictly inside, slope elsewhere."""
    # In float32 for float16/bfloat16: x - m can overflow those although the output cannot.
    xc = upcast(x)
    m = jnp.clip(xc, lo, hi)
    return ((xc - m) * slope + m).astype(x.dtype)


@_leaky_clamp.defjvp
def _leaky_clamp_jvp(
    lo: float, hi: float, slope: float, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    # As PyTorch's side: t strictly inside, slope * t where x <= lo or x >= hi, NaN at a NaN x.
    xc = upcast(x)  # compared in float32 for low precision, as in clamp_inside
    inside = jnp.where((xc <= lo) | (xc >= hi), jnp.zeros_like(t), t)
    return _leaky_clamp(x, lo, hi, slope), at_nan(x, inside * (1.0 - slope) + t * slope)


@implements("leaky_clamp", "jax")
def leaky_clamp(x: jax.Array, *, lo: float, hi: float, slope: float) -> jax.Array:
    return _leaky_clamp(x, lo, hi, slope)


@implements("ste_clamp", "jax")
def ste_clamp(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    return clamp_straight_through(x, lo, hi)
