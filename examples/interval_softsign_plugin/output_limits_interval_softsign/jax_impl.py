import jax
import jax.numpy as jnp

import harness


@harness.implements("interval_softsign", "jax")
def interval_softsign(x: jax.Array, *, lo: float, hi: float) -> jax.Array:
    # As the PyTorch side: float32 for the low precisions, the infinities' limit, one rounding.
    xc = x.astype(jnp.float32) if x.dtype in (jnp.float16, jnp.bfloat16) else x
    big = jnp.finfo(xc.dtype).max
    xf = jnp.clip(xc, -big, big)
    y = lo + (hi - lo) * (1.0 + xf / (1.0 + jnp.abs(xf))) / 2.0
    return jnp.clip(y, lo, hi).astype(x.dtype)
