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


DIVERGENCES: tuple[Divergence, ...] = (
    Divergence(
        name="subnormals-flushed-by-xla-cpu",
        what="XLA on CPU flushes subnormal inputs and results to zero; PyTorch keeps them.",
        evidence="jax.nn.relu(1e-40) is 0 with gradient 0 in float32; torch.relu keeps 1e-40 with gradient 1. "
        "clamp(x, 0, 1) at x = 5e-324 (float64) has gradient 0 in JAX, 1 in PyTorch.",
        handling="Kink tests step to the smallest normal number beside a kink at 0 instead of the next "
        "(subnormal) float; random inputs are normal numbers. Bounds tests include the smallest normal.",
    ),
)
