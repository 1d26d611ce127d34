"""PyTorch and JAX agree in values and vector-Jacobian products, and match the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from cases import CASES, FRAMEWORKS, TRAIN_CASES, Case, params, randomize_state, run

import harness
from bench.checks import check
from bench.plan import BenchCase
from harness.sampling import input_shape, machine_epsilon, round_to, sample_cotangent, sample_input, spread
from harness.tolerances import compare, tolerance, vjp_scale

DTYPES = ["float64", "float32", "float16", "bfloat16"]
# Every case in float64 and float32; float16 and bfloat16 on each technique's defaults (and its
# eval mode). Low precision is computed in float32 and rounded once, whatever the parameters, so
# the declared examples add parameter choices the float32 runs cover, and no rounding path.
PARITY_RUNS = [
    pytest.param(case, dtype, id=f"{case.id}-{dtype}")
    for case in CASES
    for dtype in DTYPES
    if dtype in ("float64", "float32") or not case.given
]


@pytest.mark.parametrize(("case", "dtype"), PARITY_RUNS)
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


# Candidate magnitudes for elementwise techniques, and the smallest declared gradient the
# comparison uses: far below 1, far above float32's smallest normal (XLA flushes subnormals).
FAR_MAGNITUDES = 10.0 ** np.linspace(0.0, 9.0, 721)
SMALLEST_SLOPE = 1e-10


def _central_difference(spec: harness.TechniqueSpec, params: dict, x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """d/dh f(x + h v) of the float64 reference, step 1e-3 |x|; NaN where the rounding of the
    reference (eps |f| / h) could hide it."""
    h = 1e-3 * np.abs(x).max(initial=1.0) if spec.reduction_axes(x.ndim, params) else 1e-3 * np.abs(x)
    with np.errstate(all="ignore"):  # log_softmax's reference is -inf far down its rows
        above, below = spec.reference(x + h * v, params), spec.reference(x - h * v, params)
        slope = (above - below) / (2.0 * h)
    # Keep four digits above the noise of a difference of two rounded values.
    noise = 1e4 * np.finfo(np.float64).eps * np.maximum(np.abs(above), np.abs(below)) / h
    return np.where(np.abs(slope) > noise, slope, np.nan)


def _far_elementwise(spec: harness.TechniqueSpec, params: dict, dtype: str, shape: tuple[int, ...], rng):
    """Inputs beyond every kink and finite bound (|x| >= the sampling spread, up to 1e9) where the
    declared derivative is at least SMALLEST_SLOPE: its declared VJP where it has one, else the
    reference's, at outputs 16 ulps of the interval or more off the bounds in ``dtype`` (a gradient
    declared y (1 - y) or 1 - y^2 is 0 in that dtype once y rounds onto its bound, and the two
    frameworks' sigmoids and tanhs round a few ulps apart). None where there are none."""
    x = np.concatenate([-FAR_MAGNITUDES, FAR_MAGNITUDES])
    x = round_to(x[np.abs(x) >= spread(spec, params)], dtype)
    if spec.vjp_reference is not None:
        slopes = spec.vjp_reference(x, np.ones_like(x), params)
    else:
        slopes = _central_difference(spec, params, x, np.ones_like(x))
        lo, hi = spec.bounds(**params)
        margin = 16 * machine_epsilon(dtype) * (hi - lo) if np.isfinite(hi - lo) else 0.0
        y = spec.reference(x, params)
        slopes = np.where((y >= lo + margin) & (y <= hi - margin), slopes, 0.0)
    usable = x[np.abs(np.nan_to_num(slopes)) >= SMALLEST_SLOPE]
    return rng.choice(usable, size=shape) if usable.size else None


def _far_groups(spec: harness.TechniqueSpec, params: dict, shape: tuple[int, ...], rng) -> np.ndarray:
    """Groups (rows, channels) far from the origin in one of two ways, the first whose declared
    gradient moves every group: magnitudes of 1e3 to 1e9 within each group (the norms: scale
    invariant, and their gradients tiny), else each group offset by +-1e3 to 1e5 with spreads
    below 1 (the simplex maps: shift invariant, so x - max stays exact; two or more entries of
    every sparsemax row then lie in its support)."""
    axes = spec.reduction_axes(len(shape), params)
    scaled = rng.choice([-1.0, 1.0], size=shape) * 10.0 ** rng.uniform(3, 9, size=shape)
    slopes = _central_difference(spec, params, scaled, rng.normal(size=shape))
    if (np.abs(np.nan_to_num(slopes)).max(axis=axes) >= SMALLEST_SLOPE * np.abs(scaled).max(axis=axes) ** -1).all():
        return scaled
    offset_shape = tuple(1 if a in axes else n for a, n in enumerate(shape))
    offsets = rng.choice([-1.0, 1.0], size=offset_shape) * 10.0 ** rng.uniform(3, 5, size=offset_shape)
    return offsets + rng.uniform(-0.25, 0.25, size=shape)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", params(TRAIN_CASES))
def test_vjps_agree_far_from_the_origin(case: Case, dtype: str, rng: np.random.Generator) -> None:
    """Inputs far from the origin where the declared gradient is not zero: the saturating tails of
    elementwise techniques, out to where that gradient falls to 1e-10 (so nothing of size 1 beside
    the tiny values), and groups at large offsets for the row-wise ones. Both frameworks must give
    non-zero gradients there, and agree."""
    spec = case.spec()
    resolved = case.resolved(dtype)
    shape = input_shape(spec, resolved)
    rowwise = bool(spec.reduction_axes(len(shape), resolved))
    x = _far_groups(spec, resolved, shape, rng) if rowwise else _far_elementwise(spec, resolved, dtype, shape, rng)
    if x is None:
        far = spread(spec, resolved)
        pytest.skip(
            f"no input beyond |x| = {far:g} where {case.name}'s declared {dtype} gradient is >= {SMALLEST_SLOPE:g}"
        )
    x = x.astype(dtype).astype(np.float64)
    cotangent = sample_cotangent(shape, rng)
    modules = {fw: case.build(fw, dtype) for fw in FRAMEWORKS}
    (_, dx_a, _), (_, dx_b, _) = (harness.backend(fw).vjp(modules[fw], x, cotangent, dtype) for fw in FRAMEWORKS)
    for framework, dx in zip(FRAMEWORKS, (dx_a, dx_b), strict=True):
        # Elementwise: the declared slope is non-zero at every input. Row-wise: at least two
        # entries of each group move its output (softmax, norms: all; sparsemax: its support).
        moving = dx != 0
        if rowwise:
            axes = spec.reduction_axes(len(shape), resolved)
            assert (moving.sum(axis=axes) >= 2).all(), f"{framework}: a group with a zero gradient at {x.shape}"
        else:
            assert moving.all(), f"{framework}: zero gradient at x = {x[~moving][:4]}, where it is declared non-zero"
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
