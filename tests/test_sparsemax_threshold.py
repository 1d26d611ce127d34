"""sparsemax's linear-time threshold (Michelot's iteration in JAX and PyTorch's C kernel, the
bracket-and-gather path of PyTorch's other dtypes) equals the sort-based rule on every path.

The generic parity tests run sparsemax on small rows, which PyTorch sorts whole; these rows are
long enough for each fast path, and span supports of one value to most of the row.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import FRAMEWORKS, run

import harness
from harness.tolerances import compare, tolerance

# Spreads from most of the row in the support (0.01) to one value (1000), and lengths below and
# above the length PyTorch sorts whole.
SPREADS = (0.01, 0.3, 2.0, 1000.0)
LENGTHS = (7, 100, 1024)


def _rows(n: int, rng: np.random.Generator) -> np.ndarray:
    rows = np.concatenate([rng.normal(size=(6, n)) * s for s in SPREADS])
    rows[1, : min(5, n)] = rows[1].max()  # ties at the top
    rows[2, 0] = -np.inf  # an entry at the limit, in a row that stays finite otherwise
    rows[3, n // 2] = np.inf  # a row at its limit
    rows[4, 1] = np.nan  # a NaN row
    return rows


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_fast_threshold_equals_the_sorted_rule(framework: str, n: int, dtype: str) -> None:
    spec = harness.get("sparsemax")
    rows = _rows(n, np.random.default_rng(n)).astype(dtype).astype(np.float64)
    y, _ = run(framework, harness.build("sparsemax", framework), rows, dtype)
    result = compare(y, spec.reference(rows, {"axis": -1}), tolerance("sparsemax", dtype, "value"))
    assert result.ok, f"error {result.max_rel:.3e} > {result.rtol:.0e} at {result.worst_index} {result.problem or ''}"
    # And along a leading axis: the same rows, transposed.
    module = harness.build("sparsemax", framework, axis=0)
    y, _ = run(framework, module, np.ascontiguousarray(rows.T), dtype)
    assert compare(y.T, spec.reference(rows, {"axis": -1}), tolerance("sparsemax", dtype, "value")).ok


@pytest.mark.parametrize("steps", [None, 1], ids=["iteration", "sorted-fallback"])
def test_the_compiled_threshold_equals_the_sorted_rule(steps: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torch.compile (CPU): Michelot's unrolled steps where every row stopped within them,
    the sort-based rule where a row did not (forced here by unrolling one step: rows of 1024 with
    normal spreads stop within 2 to 8); both against the float64 reference, infinities and NaN
    rows included."""
    pytest.importorskip("torch")
    import torch
    import torch._dynamo

    from impl_torch import simplex

    if steps is not None:
        monkeypatch.setattr(simplex, "_COMPILED_STEPS", steps)
    rng = np.random.default_rng(5)
    rows = np.concatenate([rng.normal(size=(4, 1024)) * s for s in SPREADS]).astype(np.float32)
    rows[1, 3], rows[2, 0], rows[3, 7] = np.inf, -np.inf, np.nan
    z, _ = simplex._limit_shift(torch.from_numpy(rows), -1)
    finite = z[~torch.isnan(z).any(dim=-1)].numpy().astype(np.float64)
    assert (_michelot_steps(finite) > simplex._COMPILED_STEPS) == (steps is not None)  # the path intended
    torch._dynamo.reset()
    with torch.no_grad():
        y = torch.compile(harness.build("sparsemax", "torch"))(torch.from_numpy(rows)).numpy()
    torch._dynamo.reset()
    expected = harness.get("sparsemax").reference(rows.astype(np.float64), {"axis": -1})
    result = compare(y, expected, tolerance("sparsemax", "float32", "value"))
    assert result.ok, f"error {result.max_rel:.3e} at {result.worst_index} {result.problem or ''}"


def _michelot_steps(z: np.ndarray) -> int:
    """The most steps any row takes from the lower bound until it stops rising (float64)."""
    t = np.maximum((z.sum(axis=-1, keepdims=True) - 1.0) / z.shape[-1], -1.0)
    for steps in range(z.shape[-1] + 1):
        above = z > t
        count = np.maximum(above.sum(axis=-1, keepdims=True), 1)
        following = (np.where(above, z, 0.0).sum(axis=-1, keepdims=True) - 1.0) / count
        if not (following > t).any():
            return steps
        t = np.where(following > t, following, t)
    return steps


@pytest.mark.parametrize("unrolled", [0, 1, 8], ids=["looped", "one-step", "eight-steps"])
@pytest.mark.parametrize("n", LENGTHS)
def test_the_accelerators_threshold_equals_the_sorted_rule(n: int, unrolled: int, monkeypatch) -> None:
    """JAX off the CPU: every row at once, the first steps unrolled before the loop (chosen when
    the program is lowered for a GPU, so called directly here), against the float64 reference;
    rows that need more steps than were unrolled (spread 0.01) finish in the loop."""
    import jax
    import jax.numpy as jnp

    from impl_jax import simplex

    monkeypatch.setattr(simplex, "_UNROLLED_STEPS", unrolled)
    rows = _rows(n, np.random.default_rng(n + 1)).astype(np.float32)
    z, top = simplex._limit_shift(jnp.asarray(rows), -1)
    tau = jax.jit(simplex._whole_threshold)(z)
    y = np.where(np.isnan(np.asarray(top)), np.nan, np.maximum(np.asarray(z) - np.asarray(tau), 0.0))
    expected = harness.get("sparsemax").reference(rows.astype(np.float64), {"axis": -1})
    result = compare(y, expected, tolerance("sparsemax", "float32", "value"))
    assert result.ok, f"error {result.max_rel:.3e} at {result.worst_index} {result.problem or ''}"
    if unrolled == 1 and n > 7:  # the loop did take over
        assert _michelot_steps(np.asarray(z)[np.isfinite(rows).all(axis=-1)].astype(np.float64)) > 1
    # The same steps as the CPU's blocks, so the same bits.
    np.testing.assert_array_equal(np.asarray(tau), np.asarray(jax.jit(simplex._blocked_threshold)(z)))


def test_jax_lowers_the_threshold_for_the_platform() -> None:
    """On the CPU a loop over blocks of rows around each block's iteration (two loops); for a
    GPU one loop over every row, after the unrolled steps. (With OUTPUT_LIMITS_JAX_FORMS=accelerator
    the CPU takes the GPU's form too.)"""
    import jax
    import jax.numpy as jnp

    from impl_jax._common import CPU_FORMS

    module = harness.build("sparsemax", "jax")
    x = jnp.ones((512, 1024), jnp.float32)
    loops = {
        platform: jax.jit(module).trace(x).lower(lowering_platforms=(platform,)).as_text().count("stablehlo.while")
        for platform in ("cpu", "cuda")
    }
    assert loops == {"cpu": 2 if "cpu" in CPU_FORMS else 1, "cuda": 1}, loops
