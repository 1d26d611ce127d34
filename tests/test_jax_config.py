"""JAX's global settings that users turn on: the techniques work under them and compute the same.

A stricter NumPy (``jax_numpy_rank_promotion="raise"``, ``jax_numpy_dtype_promotion="strict"``)
is a common project setting, and ``jax_debug_nans`` with ``jax.disable_jit`` is how one hunts a
NaN. Guard code of ours that broadcasts by rank, or makes a NaN a finite input does not ask
for, would stop those users' programs where flax's own layers run.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import MODE_DEFAULTS, Case, params
from test_transforms import _draw

import harness


def _derivatives(case: Case, x: np.ndarray, c: np.ndarray, dtype: str) -> list[np.ndarray]:
    """Value, input VJP, parameter VJPs and JVP of a fresh float32 module on a ``dtype`` input."""
    backend = harness.backend("jax")
    y, dx, grads = backend.vjp(case.build("jax"), x, c, dtype)
    _, dy = backend.jvp(case.build("jax"), x, c, dtype)
    return [y, dx, *(grads[k] for k in sorted(grads)), dy]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", params(MODE_DEFAULTS))
def test_strict_numpy_promotion_computes_the_same(case: Case, dtype: str, rng) -> None:
    """Under rank promotion "raise" and strict dtype promotion, every technique in both modes
    gives the same values and derivatives (parameters' too) as under the defaults, for its own
    dtype's input and for a bfloat16 one (PyTorch's mixed precision). The norms' weights were
    broadcast by rank and raised."""
    import jax

    x, c, _ = _draw(case, "float32", rng)
    expected = _derivatives(case, x, c, dtype)
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        found = _derivatives(case, x, c, dtype)
    for a, b in zip(found, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", params(MODE_DEFAULTS))
def test_debug_nans_op_by_op_passes_finite_inputs(case: Case, rng) -> None:
    """With ``jax_debug_nans`` on and jit off, every operation's output is checked for NaN: a
    finite input's value, VJP and JVP run through, as flax's layers do. The clamps' derivative
    rule made a NaN constant for its NaN inputs' factor and stopped there."""
    import jax
    from flax import nnx

    x, c = (jax.numpy.asarray(a, "float32") for a in _draw(case, "float32", rng)[:2])
    graphdef, state = nnx.split(case.build("jax"))

    def call(v: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, state, copy=True)(v)

    with jax.debug_nans(True), jax.disable_jit():
        y, pullback = jax.vjp(call, x)
        dx = pullback(c)[0]
        _, dy = jax.jvp(call, (x,), (c,))
    assert all(np.isfinite(np.asarray(a)).all() for a in (y, dx, dy))
