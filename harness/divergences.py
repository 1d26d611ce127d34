"""Known divergences between the frameworks that cannot be fixed from Python.

Each entry says what differs, the evidence, and which tests avoid it and how. Nothing else is
excluded from any test.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Divergence:
    """One framework difference that no implementation choice can remove."""

    name: str
    what: str
    evidence: str
    handling: str
    # (technique, framework) pairs a generic test exempts from the property this breaks.
    exempt: tuple[tuple[str, str], ...] = ()


DIVERGENCES: tuple[Divergence, ...] = (
    Divergence(
        name="subnormals-flushed-by-xla-cpu",
        what="XLA on CPU flushes subnormal inputs and results to zero; PyTorch keeps them.",
        evidence="jax.nn.relu(1e-40) is 0 with gradient 0 in float32; torch.relu keeps 1e-40 with gradient 1. "
        "clamp(x, 0, 1) at x = 5e-324 (float64) has gradient 0 in JAX, 1 in PyTorch.",
        handling="Kink tests step to the smallest normal number beside a kink at 0 instead of the next "
        "(subnormal) float; random inputs are normal numbers. Bounds tests include the smallest normal.",
    ),
    Divergence(
        name="tanh-and-erf-not-monotone-on-xla-cpu",
        what="XLA's tanh and erf on CPU are not monotone at ulp level; ATen's are.",
        evidence="A sweep of 200001 float32 points over [-8, 8]: jnp.tanh decreases 27238 times (first near "
        "-7.9987), jax.lax.erf 8952 times (near -3.8326, the example plugin's erf_squash); torch.tanh and "
        "torch.special.erf never. smooth_clamp's JAX tails take exp instead (this project's base-2 exp in "
        "float32, impl_jax/_common.py, monotone over every argument; XLA's in float64).",
        handling="The dense monotone sweep (tests/test_numerics.py) exempts JAX's tanh and erf_squash; "
        "tests/test_conventions.py checks that XLA's tanh still decreases somewhere, so the exemption goes "
        "when it does not.",
        exempt=(("tanh", "jax"), ("erf_squash", "jax")),
    ),
    Divergence(
        name="max-drops-nan-on-xla-cpu",
        what="XLA's max reduction on CPU, vectorized, can drop a NaN; ATen's amax propagates it.",
        evidence="jax 0.10.2, float32 rows of normal values with one NaN: jnp.max along rows of 8 and 100 gives "
        "NaN, along rows of 1024 and 4096 the largest other value (eagerly and under jit); along rows of 2^17, "
        "-inf for a row whose NaN is last and for an all-NaN row.",
        handling="No technique relies on a row maximum to spread NaN: where JAX's side reads a maximum or minimum "
        "to pick a limit (the softmaxes' and sparsemax's infinite rows, the norms' prescaling) it tells NaN rows by "
        "any(isnan) of their own, else an all-NaN row passed for an all -inf one; sums spread NaN themselves "
        "(tests/test_bounds.py, groups of 2^17; tests/test_sparsemax_threshold.py, rows of 1024).",
    ),
)
