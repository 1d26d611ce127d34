"""JAX versions of the benchmark baselines declared in ``bench.plan.BASELINES`` (the seed's code)
and ``bench.plan.BUILTINS`` (JAX's or flax's own op of the same meaning); mirrors
``impl_torch/baselines.py``. Each builder takes the technique's resolved parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from harness.squashes import soft_clip_shrink


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


# --- JAX's and flax's own ops of the same meaning (bench.plan.BUILTINS) --------------------


def _clip(*, lo: float, hi: float, **_: Any) -> Callable[[jax.Array], jax.Array]:
    return lambda x: jnp.clip(x, lo, hi)


def _one_sigmoid(**_: Any) -> Callable[[jax.Array], jax.Array]:
    return jax.nn.sigmoid


def _soft_clip(*, lo: float, hi: float, hinge_softness: float) -> Callable[[jax.Array], jax.Array]:
    c, shrink = hinge_softness, soft_clip_shrink(lo, hi, hinge_softness)
    return lambda x: hi - c * jax.nn.softplus(((hi - lo) - c * jax.nn.softplus((x - lo) / c)) / c) * shrink


def _rms_norm(*, num_features: int, eps: float | None, elementwise_affine: bool, dtype: str, seed: int) -> nnx.Module:
    # PyTorch's eps None is the compute dtype's epsilon; flax wants a number.
    epsilon = float(jnp.finfo(jnp.float32).eps) if eps is None else eps
    return nnx.RMSNorm(num_features, epsilon=epsilon, use_scale=elementwise_affine, rngs=nnx.Rngs(seed))


def _batch_norm(*, num_features: int, eps: float, momentum: float, dtype: str, seed: int) -> nnx.Module:
    # flax's momentum weights the old statistics: PyTorch's 0.1 is flax's 0.9. Its default fast
    # variance, mean(x^2) - mean(x)^2, cancels where PyTorch's (and ours) does not: set to the
    # exact one, as for LayerNorm.
    return nnx.BatchNorm(
        num_features,
        momentum=1.0 - momentum,
        epsilon=eps,
        use_running_average=False,
        use_fast_variance=False,
        rngs=nnx.Rngs(seed),
    )


BUILTINS: dict[str, Callable[..., Any]] = {
    "sigmoid": lambda: jax.nn.sigmoid,
    "tanh": lambda: jnp.tanh,
    "clamp": _clip,
    "hardtanh": _clip,
    "relu6": lambda: jax.nn.relu6,
    "hardsigmoid": lambda: jax.nn.hard_sigmoid,
    "softsign": lambda: jax.nn.soft_sign,
    "bounded_relu": _clip,
    "ste_clamp": _clip,
    "leaky_clamp": _clip,
    "smooth_clamp": _one_sigmoid,
    "scaled_sigmoid": _one_sigmoid,
    "scaled_tanh": _one_sigmoid,
    "soft_clip": _soft_clip,
    "softmax": lambda *, axis: lambda x: jax.nn.softmax(x, axis=axis),
    "log_softmax": lambda *, axis: lambda x: jax.nn.log_softmax(x, axis=axis),
    "sparsemax": lambda *, axis: lambda x: jax.nn.softmax(x, axis=axis),
    "layer_norm": layer_norm,
    "rms_norm": _rms_norm,
    "batch_norm": _batch_norm,
}


def bare(name: str, **params: Any) -> Any:
    """JAX's own op of the same meaning as ``name``: the built-in itself. Under jit a module
    call costs nothing at run time, so the built-ins need no module around them (unlike
    PyTorch's, impl_torch/baselines.py)."""
    return BUILTINS[name](**params)
