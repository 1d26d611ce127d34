"""Bounded means bounded; NaN in gives NaN out exactly where it should; shapes and dtypes are kept."""

from __future__ import annotations

import numpy as np
import pytest
from cases import CASES, FRAMEWORKS, TRAIN_CASES, Case, params, run

import harness
from harness.sampling import extreme_values, input_shape, round_to, sample_input
from harness.tolerances import compare, tolerance, vjp_scale

DTYPES = ["float64", "float32", "float16", "bfloat16"]


def _extreme_input(case: Case, dtype: str, rng: np.random.Generator) -> np.ndarray:
    """Rows of extreme values (+-inf, +-max, +-tiny, +-0) mixed with kinks and random values,
    plus rows that are constant at each extreme (all +inf, all -max, ...)."""
    spec = case.spec()
    resolved = case.resolved(dtype)
    shape = input_shape(spec, resolved)
    extremes = extreme_values(dtype)
    kinks = [k.x for k in spec.kinks(**case.given)]
    pool = np.concatenate([extremes, kinks, sample_input(spec, resolved, (16,), rng)])
    x = rng.choice(pool, size=shape)
    # Constant groups along the last axis: the hardest rows for softmax and normalization.
    flat = x.reshape(-1, shape[-1])
    for i, value in enumerate(extremes[: flat.shape[0]]):
        flat[i] = value
    return flat.reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(CASES))
def test_outputs_stay_inside_bounds_at_extremes(case: Case, dtype: str, rng: np.random.Generator) -> None:
    """Inside the declared interval, free of NaN, and the same in both frameworks (within the
    value tolerance of the table: an output inside the bounds can still be wrong)."""
    spec = case.spec()
    lo, hi = round_to(np.array(spec.bounds(**case.params(dtype))), dtype)
    x = _extreme_input(case, dtype, rng)
    outs = []
    for framework in FRAMEWORKS:
        y, y_dtype = run(framework, case.build(framework, dtype), x, dtype)
        assert y_dtype == dtype, f"{framework} returned {y_dtype} for a {dtype} input"
        assert not np.isnan(y).any(), f"{framework}: NaN from non-NaN input at {np.argwhere(np.isnan(y))[:3].tolist()}"
        outside = (y < lo) | (y > hi)
        assert not outside.any(), f"{framework}: {y[outside][:5]} outside [{lo}, {hi}] for inputs {x[outside][:5]}"
        if spec.reference is not None and not spec.reduction_axes(x.ndim, case.resolved(dtype)):
            # Unbounded techniques too: an infinity only where the exact value rounds to one.
            exact = round_to(spec.reference(x, case.resolved(dtype)), dtype)
            wrong = np.isinf(y) & ~np.isinf(exact)
            assert not wrong.any(), f"{framework}: {y[wrong][:3]} for inputs {x[wrong][:3]}, exactly {exact[wrong][:3]}"
        outs.append(y)
    result = compare(*outs, tolerance(case.name, dtype, "value"))
    assert result.ok, f"frameworks differ by {result.max_rel:.3e} at {result.worst_index} {result.problem or ''}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", params(CASES))
def test_vjps_agree_at_extremes(case: Case, dtype: str, rng: np.random.Generator) -> None:
    """The input and parameter VJPs at the extreme inputs above agree across frameworks: the
    input VJP NaN exactly where the other is (an infinity's group passes zero, a NaN's passes
    NaN), the rest within the VJP tolerance of the table.

    Two exemptions, each a fact of floating point rather than of either side: entries within
    2^digits of the subnormal range in both frameworks (XLA:CPU flushes subnormal intermediates:
    harness/divergences.py), and a parameter VJP entry that is not finite in both (a sum over the
    batch that overflowed: whether it ends +-inf or NaN depends on the summation order)."""
    x = _extreme_input(case, dtype, rng)
    cotangent = rng.normal(size=x.shape)
    (_, dx_a, dp_a), (_, dx_b, dp_b) = (
        harness.backend(framework).vjp(case.build(framework, dtype), x, cotangent, dtype) for framework in FRAMEWORKS
    )
    info = np.finfo(dtype)
    near_subnormal = float(info.tiny) * 2.0 ** (info.nmant + 1)
    pairs = [("input", dx_a, dx_b), *((name, dp_a[name], dp_b[name]) for name in dp_a)]
    for name, a, b in pairs:
        special = np.isnan if name == "input" else lambda v: ~np.isfinite(v)
        np.testing.assert_array_equal(special(a), special(b), err_msg=f"{name} VJP: pattern of {special}")
        keep = ~special(a) & ~((np.abs(a) < near_subnormal) & (np.abs(b) < near_subnormal))
        result = compare(a[keep], b[keep], tolerance(case.name, dtype, "vjp"), vjp_scale(a[keep]))
        assert result.ok, f"{name} VJP: frameworks differ by {result.max_rel:.3e} ({result.problem or ''})"


def _nan_input(case: Case, dtype: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An input holding a few NaNs, and where the outputs must be NaN: each NaN's group, along
    the reduced axes (the NaN alone for an elementwise technique). Rows of 64 for elementwise
    techniques, so that vectorized loops meet a NaN, not only their scalar tails (ATen's
    hardtanh_backward treated it differently in the two)."""
    spec, resolved = case.spec(), case.resolved(dtype)
    shape = (4, 64) if spec.feature_axis is None else input_shape(spec, resolved)
    x = round_to(sample_input(spec, resolved, shape, rng), dtype)
    reduced = spec.reduction_axes(x.ndim, resolved)
    expected = np.zeros(x.shape, dtype=bool)
    for _ in range(3):
        index = tuple(int(rng.integers(n)) for n in x.shape)
        x[index] = np.nan
        group = tuple(slice(None) if axis in reduced else i for axis, i in enumerate(index))
        expected[group] = True
    return x, expected


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", params(TRAIN_CASES))
def test_nan_spreads_exactly_along_reduced_axes(case: Case, dtype: str, rng: np.random.Generator) -> None:
    x, expected = _nan_input(case, dtype, rng)
    for framework in FRAMEWORKS:
        y, _ = run(framework, case.build(framework, dtype), x, dtype)
        np.testing.assert_array_equal(np.isnan(y), expected, err_msg=f"{framework}: NaN pattern")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", params(TRAIN_CASES))
def test_nan_spreads_through_first_derivatives_as_through_values(
    case: Case, dtype: str, rng: np.random.Generator
) -> None:
    """The declaration's rule (TechniqueSpec, reduction_axes): a NaN input's input VJP (finite
    cotangent) and JVP (finite tangent) are NaN in its group and nowhere else, in both
    frameworks, but where ``vjp_reference`` declares a derivative that does not depend on the
    input. The JVP for stateless techniques: torch.func's jvp refuses a training batch norm's
    in-place update of its running statistics, and in evaluation mode the map is affine. Rows of
    64 for the piecewise techniques: ATen's hardtanh_backward gave 0 at a NaN in its vector lanes
    and the cotangent in its scalar tail, and their rules now take neither."""
    spec = case.spec()
    x, expected = _nan_input(case, dtype, rng)
    direction = round_to(rng.normal(size=x.shape), dtype)
    if spec.vjp_reference is not None:
        expected = np.isnan(spec.vjp_reference(x, direction, case.resolved(dtype)))
    for framework in FRAMEWORKS:
        backend = harness.backend(framework)
        _, dx, _ = backend.vjp(case.build(framework, dtype), x, direction, dtype)
        np.testing.assert_array_equal(np.isnan(dx), expected, err_msg=f"{framework}: NaN pattern of the VJP")
        if not spec.stateful:
            _, dy = backend.jvp(case.build(framework, dtype), x, direction, dtype)
            np.testing.assert_array_equal(np.isnan(dy), expected, err_msg=f"{framework}: NaN pattern of the JVP")
    if not spec.stateful:
        # PyTorch's JVP by double backward (the VJP's VJP in the cotangent: the rules' own
        # derivative, which a select of x would have made a piece's again).
        import torch

        module, (xt, tt) = (
            case.build("torch", dtype),
            (harness.backend("torch").from_numpy(a, dtype) for a in (x, direction)),
        )
        _, dy = torch.autograd.functional.jvp(module, xt, tt)
        np.testing.assert_array_equal(
            np.isnan(dy.double().numpy()), expected, err_msg="torch: NaN pattern of the double-backward JVP"
        )


# Groups long enough for XLA:CPU's vectorized max to drop a NaN, or to give -inf for a row
# holding one (harness/divergences.py, max-drops-nan-on-xla-cpu).
LONG = 2**17


def _long_groups(case: Case, rng: np.random.Generator) -> tuple[dict, np.ndarray, np.ndarray]:
    """(parameters, input, which outputs must be NaN): four groups of LONG values along the
    reduced axes, the first all NaN, the next two with one NaN (early, last), the fourth with a
    NaN and a +inf; a fifth group stays clean."""
    spec = case.spec()
    width = LONG if spec.feature_axis == -1 else 5
    given = {**case.params(), **({"num_features": width} if spec.takes_num_features else {})}
    reduced = spec.reduction_axes(2, spec.resolve(given))
    assert len(reduced) == 1, "a long group along one of two axes"
    x = sample_input(spec, spec.resolve(given), (5, LONG), rng)
    x[0] = np.nan
    x[1, 5] = np.nan
    x[2, -1] = np.nan
    x[3, [7, LONG // 2]] = [np.inf, np.nan]
    expected = np.zeros(x.shape, dtype=bool)
    expected[:4] = True
    if reduced[0] == 0:  # groups along axis 0 (batch_norm's channels)
        x, expected = x.T.copy(), expected.T.copy()
    return given, x, expected


@pytest.mark.parametrize(
    "case", params([c for c in TRAIN_CASES if not c.given and c.spec().reduction_axes(2, c.resolved())])
)
def test_nan_spreads_through_long_groups(case: Case, rng: np.random.Generator) -> None:
    """A NaN anywhere in a group of 2^17 values makes the whole group NaN, value and input VJP,
    whatever the framework's max reduction does with it."""
    given, x, expected = _long_groups(case, rng)
    cotangent = rng.normal(size=x.shape)
    for framework in FRAMEWORKS:
        backend = harness.backend(framework)
        y, dx, _ = backend.vjp(harness.build(case.name, framework, **given), x, cotangent, "float32")
        np.testing.assert_array_equal(np.isnan(y), expected, err_msg=f"{framework}: NaN pattern of the value")
        np.testing.assert_array_equal(np.isnan(dx), expected, err_msg=f"{framework}: NaN pattern of the VJP")


def _shapes(case: Case) -> list[tuple[int, ...]]:
    spec = case.spec()
    resolved = case.resolved()
    rank5 = input_shape(spec, resolved, "rank5")
    if spec.feature_axis is None:
        candidates = [(), (0,), (3, 0), (0, 4), rank5]
    else:
        base = list(input_shape(spec, resolved))
        candidates = [tuple(0 if i == 0 else n for i, n in enumerate(base)), rank5]
    return [s for s in candidates if len(s) >= spec.min_rank]


def _shapes_and_dtypes(case: Case) -> list[tuple[tuple[int, ...], str]]:
    """Every shape in float32, and every dtype on an empty and a rank-5 shape: a shape's handling
    does not depend on the dtype past those (each pair compiles anew in JAX, so not all pairs)."""
    shapes = _shapes(case)
    empty = [s for s in shapes if 0 in s][:1]
    both = [*empty, shapes[-1]]
    # float16 takes bfloat16's path (float32 inside, one rounding), so bfloat16 speaks for both.
    pairs = [(s, "float32") for s in shapes] + [(s, d) for s in both for d in ("float64", "bfloat16")]
    return list(dict.fromkeys(pairs))


@pytest.mark.parametrize("case", params([c for c in CASES if not c.given]))  # shapes do not depend on parameters
def test_shapes_and_dtypes_are_kept(case: Case, rng: np.random.Generator) -> None:
    for shape, dtype in _shapes_and_dtypes(case):
        x = rng.normal(size=shape)
        outs = {}
        for framework in FRAMEWORKS:
            module = case.build(framework, dtype)
            module.eval()  # empty batches are only valid for statistics already gathered
            outs[framework], y_dtype = run(framework, module, x, dtype)
            assert outs[framework].shape == shape, f"{framework}: shape {outs[framework].shape} for input {shape}"
            assert y_dtype == dtype, f"{framework}: dtype {y_dtype} for a {dtype} input"
        result = compare(*outs.values(), tolerance(case.name, dtype, "value"))
        assert result.ok, f"{shape} {dtype}: frameworks differ by {result.max_rel:.3e} at {result.worst_index}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_smooth_clamp_stays_inside_when_its_rounded_joins_cross(framework: str) -> None:
    # No linear middle: lo + r and hi - r are the same point, yet in float64 lo + r rounds above
    # hi - r for these bounds (as for about one pair in seven drawn from N(0, 1)). The clamp to
    # [lo + r, hi - r] then gives hi - r everywhere, and the lower tail ended one ulp below lo.
    given = {"lo": -0.03965989212261483, "hi": 0.12418768038692765, "linear_fraction": 0.0}
    case = Case("smooth_clamp", given)
    x = np.array([-np.inf, -1e308, -1.0, -0.04, 0.0, 0.2, 1.0, np.inf])
    y, _ = run(framework, case.build(framework, "float64"), x, "float64")
    assert ((y >= given["lo"]) & (y <= given["hi"])).all(), y


_REDUCING = [c for c in TRAIN_CASES if not c.given and c.spec().reduction_axes(2, c.resolved())]


@pytest.mark.parametrize(
    ("case", "framework"),
    [pytest.param(c, f, id=f"{c.id}-{f}") for c in _REDUCING for f in FRAMEWORKS],
)
def test_a_group_that_held_an_infinity_passes_zero_whatever_the_cotangent(case: Case, framework: str) -> None:
    """The declarations' "a group holding an infinity takes its limit and passes zero gradient":
    exactly zero, for an infinite and a NaN cotangent in that group too; the other groups'
    input VJP stays finite."""
    spec, resolved = case.spec(), case.resolved("float32")
    x = sample_input(spec, resolved, input_shape(spec, resolved), np.random.default_rng(0))
    reduced = spec.reduction_axes(x.ndim, resolved)
    group = np.zeros(x.shape, dtype=bool)
    group[tuple(slice(None) if a in reduced else 0 for a in range(x.ndim))] = True
    cells = np.argwhere(group)
    assert len(cells) >= 3, "the group is too small to hold an infinity and two special cotangents"
    x[tuple(cells[0])] = np.inf
    cotangent = np.random.default_rng(1).normal(size=x.shape)
    cotangent[tuple(cells[1])], cotangent[tuple(cells[2])] = np.inf, np.nan
    _, dx, _ = harness.backend(framework).vjp(case.build(framework, "float32"), x, cotangent, "float32")
    np.testing.assert_array_equal(dx[group], 0.0, err_msg=f"{framework}: the limit group's input VJP")
    assert np.isfinite(dx[~group]).all(), f"{framework}: a group without an infinity got a non-finite VJP"
