"""PyTorch and JAX agree in values and vector-Jacobian products, and match the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from cases import CASES, FRAMEWORKS, TRAIN_CASES, Case, params, randomize_state, run

import harness
from bench.checks import check
from bench.plan import BenchCase
from harness.sampling import input_shape, sample_cotangent, sample_input
from harness.tolerances import compare, tolerance, vjp_scale

DTYPES = ["float64", "float32", "float16", "bfloat16"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(CASES))
def test_values_and_vjps_agree(case: Case, dtype: str, rng: np.random.Generator, record_parity) -> None:
    spec = case.spec()
    resolved = case.resolved(dtype)
    shape = input_shape(spec, resolved)
    x = sample_input(spec, resolved, shape, rng)
    cotangent = sample_cotangent(shape, rng)
    modules = {fw: case.build(fw, dtype) for fw in FRAMEWORKS}
    if spec.takes_num_features:
        randomize_state(modules, rng)
    results = {fw: harness.backend(fw).vjp(modules[fw], x, cotangent, dtype) for fw in FRAMEWORKS}
    (y_a, dx_a, dp_a), (y_b, dx_b, dp_b) = (results[fw] for fw in FRAMEWORKS)
    assert sorted(dp_a) == sorted(dp_b), "parameter names differ between frameworks"
    checks = [("value", "output", y_a, y_b), ("vjp", "input", dx_a, dx_b)]
    checks += [("vjp", name, dp_a[name], dp_b[name]) for name in sorted(dp_a)]
    scale = vjp_scale(dx_a, *dp_a.values())
    failures = []
    for quantity, what, a, b in checks:
        result = compare(a, b, tolerance(case.name, dtype, quantity), scale if quantity == "vjp" else 0.0)
        record_parity(case.name, case.id, dtype, quantity, result)
        if not result.ok:
            where = f"at {result.worst_index} {result.problem or ''}"
            failures.append(f"{what} {quantity}: error {result.max_rel:.3e} > {result.rtol:.0e} {where}")
    assert not failures, "; ".join(failures)


REFERENCED = [c for c in TRAIN_CASES if c.spec().reference is not None]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", params(REFERENCED))
def test_matches_numpy_reference(
    case: Case, framework: str, dtype: str, rng: np.random.Generator, record_parity
) -> None:
    """Each implementation, fresh, against the declaration's independent float64 formula.

    In float32 the input is rounded first and the reference evaluated on the rounded values,
    so the comparison measures the implementation's arithmetic, not the input rounding.
    """
    spec = case.spec()
    resolved = case.resolved(dtype)
    x = sample_input(spec, resolved, input_shape(spec, resolved), rng)
    x = x.astype(dtype).astype(np.float64)
    y, _ = run(framework, case.build(framework, dtype), x, dtype)
    expected = spec.reference(x, resolved)
    result = compare(y, expected, tolerance(case.name, dtype, "value"))
    record_parity(case.name, f"{case.id}-{framework}-vs-numpy", dtype, "value", result)
    assert result.ok, f"{framework} vs numpy: error {result.max_rel:.3e} > {result.rtol:.0e} at {result.worst_index}"


DECLARED_VJPS = [c for c in TRAIN_CASES if c.spec().vjp_reference is not None]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", params(DECLARED_VJPS))
def test_declared_vjps_hold(case: Case, framework: str, rng: np.random.Generator) -> None:
    """Techniques whose gradient is declared rather than derived (straight-through estimators)."""
    spec = case.spec()
    resolved = case.resolved("float64")
    shape = input_shape(spec, resolved)
    x, cotangent = sample_input(spec, resolved, shape, rng), sample_cotangent(shape, rng)
    _, dx, _ = harness.backend(framework).vjp(case.build(framework, "float64"), x, cotangent, "float64")
    np.testing.assert_allclose(dx, spec.vjp_reference(x, cotangent, resolved), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", params(TRAIN_CASES))
def test_vjps_agree_far_from_the_origin(case: Case, dtype: str, rng: np.random.Generator) -> None:
    """Inputs of magnitude 1e3 to 1e9 only, where saturating gradients are tiny but not zero:
    with nothing of size 1 beside them, the table's tolerance applies to those tiny values."""
    spec = case.spec()
    resolved = case.resolved(dtype)
    shape = input_shape(spec, resolved)
    x = rng.choice([-1.0, 1.0], size=shape) * 10.0 ** rng.uniform(3, 9, size=shape)
    cotangent = sample_cotangent(shape, rng)
    modules = {fw: case.build(fw, dtype) for fw in FRAMEWORKS}
    (_, dx_a, _), (_, dx_b, _) = (harness.backend(fw).vjp(modules[fw], x, cotangent, dtype) for fw in FRAMEWORKS)
    result = compare(dx_a, dx_b, tolerance(case.name, dtype, "vjp"), vjp_scale(dx_a))
    assert result.ok, f"input VJPs differ by {result.max_rel:.3e} at {result.worst_index} {result.problem or ''}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", params(REFERENCED))
def test_vjps_match_finite_differences_of_the_reference(case: Case, framework: str, rng: np.random.Generator) -> None:
    """An error both frameworks shared would pass every comparison between them: each input VJP is
    also held to a central finite difference of the numpy reference along a random direction (the
    benchmark's own check, bench/checks.py), or to the declared VJP where there is one."""
    spec = case.spec()
    resolved = case.resolved("float64")
    shape = input_shape(spec, resolved)
    x, cotangent = sample_input(spec, resolved, shape, rng), sample_cotangent(shape, rng)
    _, dx, _ = harness.backend(framework).vjp(case.build(framework, "float64"), x, cotangent, "float64")
    check(BenchCase(case.name, x.size, "forward+backward", "cpu", framework, "eager"), dx, x, cotangent, resolved)
