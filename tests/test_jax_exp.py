"""impl_jax/_common.py's exp2 over every float32 argument it serves: the JAX smooth_clamp tails
rest on it being monotone and within EXP2_ULPS of 2^v. Both compiled forms: jitted (XLA fuses
multiplies and adds into FMAs and reassociates constants) and op by op (each operation rounded
on its own, as under ``jax.disable_jit``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from impl_jax._common import EXP2_LIMIT, EXP2_ULPS, exp2_clipped  # noqa: E402

CHUNK = 1 << 24
TOP = int(np.float32(EXP2_LIMIT).view(np.uint32))  # the bits of 30.0: [0, 30] is bits 0..TOP


def _op_by_op(v: jax.Array) -> jax.Array:
    with jax.disable_jit():
        return exp2_clipped(v)


FORMS: dict[str, Callable[[jax.Array], jax.Array]] = {"jit": jax.jit(exp2_clipped), "op-by-op": _op_by_op}


@jax.jit
def _bits(start: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(start + jnp.arange(CHUNK, dtype=jnp.uint32), jnp.float32)


@jax.jit
def _ends_and_steps(y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    steps = y[1:] - y[:-1]
    return y[0], y[-1], jnp.min(steps), jnp.max(steps)


@pytest.mark.parametrize("form", FORMS)
def test_exp2_is_monotone_over_every_float32_argument(form: str) -> None:
    """2^v never decreases as v grows (on the negative side, never increases as |v| grows),
    across every float32 in [-30, 30] and across the chunks' seams: a step of one ulp the wrong
    way would break smooth_clamp's declared monotonicity."""
    for first, increasing in ((0, True), (0x80000000, False)):
        previous = None
        for start in range(first, first + TOP + 1, CHUNK):
            head, tail, low, high = (float(v) for v in _ends_and_steps(FORMS[form](_bits(jnp.uint32(start)))))
            assert not (low < 0 if increasing else high > 0), f"turns at bits {start:#x}..{start + CHUNK - 1:#x}"
            if previous is not None:
                assert (head >= previous) if increasing else (head <= previous), f"turns at bits {start:#x}"
            previous = tail


@pytest.mark.parametrize("form", FORMS)
def test_exp2_is_within_its_ulps_and_exact_where_it_must_be(form: str) -> None:
    """Within EXP2_ULPS of 2^v (float64) on a stride through every binade of [-30, 30]; exactly
    1 at 0 (smooth_clamp's middle rests on it) and exactly 2^n at the integers; the clip's
    values at the infinities and the largest finite arguments."""
    exp2 = FORMS[form]
    bits = np.concatenate([np.arange(0, TOP + 1, 97, dtype=np.uint32)] * 2)
    bits[bits.size // 2 :] |= np.uint32(0x80000000)
    v = bits.view(np.float32)
    got = np.asarray(exp2(jnp.asarray(v))).astype(np.float64)
    want = np.exp2(v.astype(np.float64))
    ulps = np.abs(got - want) / np.spacing(want.astype(np.float32)).astype(np.float64)
    assert ulps.max() <= EXP2_ULPS, f"{ulps.max():.2f} ulps at v = {v[np.argmax(ulps)]!r}"
    n = np.arange(-30, 31, dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(exp2(jnp.asarray(n))), np.exp2(n))
    edges = np.array([np.inf, -np.inf, 3.4028235e38, -3.4028235e38, 0.0, -0.0], np.float32)
    np.testing.assert_array_equal(
        np.asarray(exp2(jnp.asarray(edges))), np.exp2(np.array([30, -30, 30, -30, 0, 0], np.float32))
    )
