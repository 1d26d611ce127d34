"""JAX versions of the benchmark baselines declared in ``bench.plan.BASELINES``
(mirrors ``impl_torch/baselines.py``). Each builder takes the technique's resolved parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


def bounded_relu(*, lo: float, hi: float) -> Callable[[jax.Array], jax.Array]:
    return lambda x: jnp.clip(jax.nn.relu(x), lo, hi)


def smooth_clamp(*, lo: float, hi: float, linear_fraction: float) -> Callable[[jax.Array], jax.Array]:
    return lambda x: lo + (hi - lo) * jax.nn.sigmoid(x)


def clamp(*, lo: float, hi: float) -> Callable[[jax.Array], jax.Array]:
    return lambda x: jnp.clip(x, lo, hi)


def softmax(*, axis: int) -> Callable[[jax.Array], jax.Array]:
    return lambda x: jax.nn.softmax(x, axis=axis)


def layer_norm(*, num_features: int, eps: float, elementwise_affine: bool, dtype: str, seed: int) -> nnx.Module:
    # Flax's defaults differ (epsilon 1e-6, fast variance): set to PyTorch's meaning.
    return nnx.LayerNorm(
        num_features,
        epsilon=eps,
        use_bias=elementwise_affine,
        use_scale=elementwise_affine,
        use_fast_variance=False,
        rngs=nnx.Rngs(seed),
    )


BUILDERS: dict[str, Callable[..., Any]] = {
    "bounded_relu": bounded_relu,
    "smooth_clamp": smooth_clamp,
    "clamp": clamp,
    "softmax": softmax,
    "layer_norm": layer_norm,
}
