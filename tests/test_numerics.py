"""Numerics at the edges of a group: constant groups at every finite magnitude, and infinities in
a batch's statistics."""

from __future__ import annotations

import numpy as np
import pytest
from cases import FRAMEWORKS, TRAIN_CASES, Case, params, run

import harness
from harness.numerics import finfo
from harness.sampling import input_shape, round_to
from harness.tolerances import compare, tolerance, vjp_scale

DTYPES = ["float64", "float32", "float16", "bfloat16"]
GROUPED = [c for c in TRAIN_CASES if c.spec().reduction_axes(2, c.resolved()) and c.spec().reference is not None]
STATEFUL = [c for c in TRAIN_CASES if c.spec().stateful]


def _magnitudes(dtype: str) -> np.ndarray:
    biggest = finfo(dtype)["max"]
    found = [1.0, 1e4, 1e9, 1e30, 1e300, biggest / 3, biggest]
    return np.array([m for m in found if m <= biggest])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(GROUPED))
def test_a_constant_group_takes_the_declared_value_at_every_magnitude(case: Case, dtype: str) -> None:
    """layer_norm and batch_norm give 0, rms_norm its sign, softmax the uniform row, and so on: a
    rounded mean of equal values must not leave a spread to normalize (it gave +-1 at 3e38)."""
    spec = case.spec()
    resolved = case.resolved(dtype)
    shape = input_shape(spec, resolved)
    axes = spec.reduction_axes(len(shape), resolved)
    group_shape = tuple(1 if a in axes else n for a, n in enumerate(shape))
    modules = {framework: case.build(framework, dtype) for framework in FRAMEWORKS}
    for magnitude in _magnitudes(dtype):
        # Every group constant, each at +-magnitude (the sign varies across groups).
        signs = np.where(np.arange(np.prod(group_shape)).reshape(group_shape) % 2 == 0, 1.0, -1.0)
        x = round_to(np.broadcast_to(signs * magnitude, shape), dtype)
        expected = spec.reference(x, resolved)
        for framework, module in modules.items():
            y, _ = run(framework, module, x, dtype)
            result = compare(y, round_to(expected, dtype), tolerance(case.name, dtype, "value"))
            assert result.ok, f"{framework} at {magnitude:.3g}: {y.reshape(-1)[:3]}, not {expected.reshape(-1)[:3]}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", params(STATEFUL))
def test_an_infinity_in_a_batch_leaves_its_channels_statistics_non_finite(case: Case, framework: str, rng) -> None:
    """As torch.nn.BatchNorm1d does: the running statistics of a channel that saw an infinity are
    not finite, never finite values computed from the rest that would hide it."""
    spec = case.spec()
    resolved = case.resolved("float32")
    x = rng.normal(size=input_shape(spec, resolved))
    channel = (slice(None),) * spec.feature_axis + (0,)
    x[channel][(0,) * (x.ndim - 1)] = np.inf
    module = case.build(framework, "float32")
    backend = harness.backend(framework)
    before = {name: value.copy() for name, value in backend.get_state(module).items()}  # may share memory
    run(framework, module, x, "float32")
    after = backend.get_state(module)
    moved = [name for name in after if not np.array_equal(after[name], before[name], equal_nan=True)]
    assert moved, "a training step changed no running statistic"
    for name in moved:
        assert not np.isfinite(after[name][0]), f"{name}[0] = {after[name][0]} after a batch holding an infinity"
        assert np.isfinite(after[name][1:]).all(), f"{name}: other channels became non-finite"


@pytest.mark.parametrize("case", params(GROUPED))
def test_a_constant_groups_gradient_matches_finite_differences(case: Case, rng) -> None:
    """Its value comes from the group's minimum, exactly, but its gradient must keep the centring
    term (a detached mean dropped it: layer_norm gave [316, 0, 0, 0] where ATen gives
    [237, -79, -79, -79])."""
    spec = case.spec()
    resolved = case.resolved("float64")
    shape = input_shape(spec, resolved)
    cotangent, direction = rng.normal(size=shape), rng.normal(size=shape)
    for level in (1.0, 3.0, -2.0):  # not 0: rms_norm, whose eps is 2e-16 there, is not linear in h
        x = np.full(shape, level)
        h = 1e-6
        above, below = spec.reference(x + h * direction, resolved), spec.reference(x - h * direction, resolved)
        slope = (np.vdot(cotangent, above) - np.vdot(cotangent, below)) / (2.0 * h)
        for framework in FRAMEWORKS:
            _, dx, _ = harness.backend(framework).vjp(case.build(framework, "float64"), x, cotangent, "float64")
            got = float(np.vdot(dx, direction))
            assert abs(got - slope) <= 1e-5 * max(1.0, abs(slope)), f"{framework} at {level}: {got} vs {slope}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", params(GROUPED))
def test_a_group_holding_an_infinity_passes_zero_gradient(case: Case, dtype: str, rng) -> None:
    """Its value is its limit, a constant, so each of its entries gets zero gradient; the other
    groups keep finite ones. The fast paths' guards reject such a group, so this runs the rare
    side of each framework's guard."""
    spec = case.spec()
    resolved = case.resolved(dtype)
    shape = input_shape(spec, resolved)
    axes = spec.reduction_axes(len(shape), resolved)
    group = np.zeros(shape, bool)
    group[tuple(slice(None) if a in axes else 0 for a in range(len(shape)))] = True
    x, cotangent = rng.normal(size=shape), rng.normal(size=shape)
    entries = np.flatnonzero(group)
    # Away from the first entry, which guards may read; two of them, which share the limit's mass
    # (a single one gets a zero gradient from the usual formula too).
    x.flat[entries[[len(entries) // 3, len(entries) // 2]]] = np.inf
    for framework in FRAMEWORKS:
        y, dx, _ = harness.backend(framework).vjp(case.build(framework, dtype), x, cotangent, dtype)
        assert not np.isnan(y).any(), f"{framework}: the limit is not NaN"
        np.testing.assert_array_equal(dx[group], 0.0, err_msg=f"{framework}: the group holding an infinity")
        assert np.isfinite(dx[~group]).all(), f"{framework}: the other groups"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_running_statistics_of_large_channels_are_finite_and_right(framework: str, dtype: str, rng) -> None:
    """Finite channels at large magnitudes keep finite running statistics: scaled back one factor
    at a time (scale * scale overflowed past 2^64 in float32, giving inf, and 0 * inf = NaN for a
    constant channel). Against the float64 formula; torch.nn.BatchNorm1d itself gives inf for a
    constant float32 channel at 3e38 (its sum overflows)."""
    # A constant channel near the dtype's largest value, and one whose variance is still finite.
    constant, spread = (3e300, 1e150) if dtype == "float64" else (3e38, 1e20)
    x = rng.normal(size=(6, 3))
    x[:, 0] = constant
    x[:, 1] = spread * (1.0 + 1e-3 * rng.normal(size=6))
    x = round_to(x, dtype)
    module = harness.build("batch_norm", framework, num_features=3, dtype=dtype)
    run(framework, module, x, dtype)
    state = harness.backend(framework).get_state(module)
    momentum = harness.get("batch_norm").resolve(num_features=3)["momentum"]
    expected = {
        "running_mean": momentum * np.mean(x, axis=0),
        "running_var": (1 - momentum) + momentum * np.var(x / spread, axis=0, ddof=1) * spread**2,
    }
    for name, want in expected.items():
        assert np.isfinite(state[name]).all(), f"{name} = {state[name]}"
        np.testing.assert_allclose(state[name], want, rtol=1e-5, err_msg=name)


MONOTONE = [c for c in TRAIN_CASES if c.spec().monotone and not c.spec().reduction_axes(1, c.resolved())]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(MONOTONE))
def test_declared_monotone_techniques_never_decrease_on_a_dense_sweep(case: Case, dtype: str) -> None:
    """Every representable step of a dense sweep across the bounds, the kinks and the tails: a
    decrease of one ulp breaks the declaration as much as a large one (hypothesis samples 16
    points at a time and rarely lands on one). Known divergences exempt what a framework's own
    primitive breaks, with their evidence."""
    from harness.divergences import DIVERGENCES

    exempt = {pair for divergence in DIVERGENCES for pair in divergence.exempt}
    spec = case.spec()
    points = [abs(b) for b in spec.bounds(**case.given) if np.isfinite(b)] + [
        abs(k.x) for k in spec.kinks(**case.given)
    ]
    span = 4.0 * max([2.0, *points])
    x = np.unique(round_to(np.linspace(-span, span, 40001), dtype))
    for framework in FRAMEWORKS:
        if (case.name, framework) in exempt:
            continue
        y, _ = run(framework, case.build(framework, dtype), x, dtype)
        down = np.flatnonzero(y[1:] < y[:-1])
        assert not down.size, f"{framework}: decreases {down.size} times, first after x = {x[down[0]]!r}"


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_layer_norms_fast_path_takes_the_formula_exactly_on_the_rows_its_guard_rejects(dtype: str, rng) -> None:
    """PyTorch's eager CPU layer_norm runs ATen's fused op and redoes the rows its guard rejects
    with the prescaled formula: those rows (constant, infinite, NaN, overflowing) equal the
    formula bit for bit, values and input gradients, and the others agree with it to tolerance."""
    import torch

    from impl_torch import norms
    from impl_torch._decisions import rows_serve

    if rows_serve(torch.ones(1, dtype=getattr(torch, dtype))):
        pytest.skip("the Triton row kernels take eager CPU float32 here (OUTPUT_LIMITS_TRITON_CPU=1)")
    big = finfo(dtype)["max"] / 4
    rows = [rng.normal(size=16), np.full(16, 1e9), np.full(16, -3.0), np.r_[np.inf, np.zeros(15)],
            np.r_[np.nan, np.ones(15)], np.r_[big, -big, rng.normal(size=14)], rng.normal(size=16) * 1e3]  # fmt: skip
    x = round_to(np.stack(rows), dtype)
    backend = harness.backend("torch")
    weight, bias = (backend.from_numpy(rng.uniform(0.5, 2.0, 16), dtype) for _ in range(2))
    cotangent = backend.from_numpy(rng.normal(size=x.shape), dtype)
    rejected, kept = [1, 2, 3, 4, 5], [0, 6]

    def run(fn, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        xt = backend.from_numpy(x[rows], dtype).requires_grad_(True)
        y = fn(xt, weight, bias, eps=1e-5)
        (dx,) = torch.autograd.grad(y, xt, cotangent[rows])
        return backend.to_numpy(y), backend.to_numpy(dx)

    formula = lambda *a, eps: norms._layer_norm_formula(*a, eps)  # noqa: E731
    y_fast, dx_fast = run(norms.layer_norm, list(range(len(rows))))
    # The rejected rows go through the formula together, as the fast path sends them: a row's
    # float32 sums may round apart with its place in memory, and a bfloat16 result with them.
    y_formula, dx_formula = run(formula, rejected)
    np.testing.assert_array_equal(y_fast[rejected], y_formula)
    np.testing.assert_array_equal(dx_fast[rejected], dx_formula)
    y_formula, dx_formula = run(formula, kept)
    for quantity, a, b in (("value", y_fast[kept], y_formula), ("vjp", dx_fast[kept], dx_formula)):
        result = compare(a, b, tolerance("layer_norm", dtype, quantity))
        assert result.ok, f"{quantity}: {result.max_rel:.3e} between ATen and the formula"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_norm_and_batch_norm_guards_in_c_and_numpy_decide_alike(dtype: str, rng) -> None:
    """The C guard (_native.row_guard) counts exactly the rows the numpy guard rejects, on
    statistics at and one ulp either side of the trust limit, at and around the low bound of
    rstd, and at every special value."""
    import torch

    from impl_torch import _native, norms

    if not _native.available():
        pytest.skip("native kernels off here: the numpy guard decides alone")
    eps = 1e-5
    k, floor, low = norms._trust_rule(getattr(torch, dtype), eps)
    m = np.concatenate([rng.normal(size=200), rng.normal(size=200) * 1e4, [0.0, np.inf, -np.inf, np.nan, 1.0, 1e30]])
    limit = 1.0 / np.sqrt(np.maximum(k * m * m, floor) + eps)
    cases = [limit, np.nextafter(limit, 0), np.nextafter(limit, np.inf), limit * rng.uniform(0.5, 2.0, m.size)]
    cases += [np.zeros_like(m), np.full_like(m, np.nan), np.full_like(m, np.inf)]
    cases += [np.full_like(m, low), np.full_like(m, np.nextafter(low, 1.0)), low * rng.uniform(0.5, 2.0, m.size)]
    counts = []
    for r in cases:
        mean, rstd = (torch.from_numpy(np.asarray(a, dtype=dtype)) for a in (m, r))
        counts.append(int((~norms._trusted_rows(mean, rstd, eps)).sum()))
        assert norms._untrusted_count(mean, rstd, eps) == counts[-1]
    assert any(0 < c < m.size for c in counts)  # rows on both sides of the limit


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_guards_in_c_and_numpy_decide_alike(dtype: str, rng, monkeypatch) -> None:
    """The C guard (_native.nan_in_first) and the numpy one see a NaN exactly where it sits on a
    first entry along the axis, for every axis of a 3-D output, negative axes included."""
    import torch

    from impl_torch import _native, simplex

    if not _native.available():
        pytest.skip("native kernels off here: the numpy guard decides alone")
    shape = (3, 4, 5)
    seen = {"c": [], "numpy": []}
    for axis in (0, 1, 2, -1, -3):
        for _ in range(20):
            y = rng.uniform(size=shape)
            index = tuple(int(rng.integers(0, n)) for n in shape)
            y[index] = np.nan
            expected = index[axis] == 0
            t = torch.from_numpy(y.astype(dtype))
            assert simplex._has_nan_row(t, axis) == expected
            seen["c"].append(expected)
            with monkeypatch.context() as patch:
                patch.setattr(_native, "available", lambda: False)
                assert simplex._has_nan_row(t, axis) == expected
    assert any(seen["c"]) and not all(seen["c"])  # both answers came up
    assert not simplex._has_nan_row(torch.ones(shape, dtype=getattr(torch, dtype)), 1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rms_norms_fused_op_is_the_composite_bit_for_bit(dtype: str, rng) -> None:
    """ATen's _fused_rms_norm (taken where this torch has it) gives the composite formula's output
    and rstd bit for bit on the CPU, with and without weight: the fast path is that formula."""
    import torch

    from impl_torch import norms

    if norms._FUSED_RMS_NORM is None:
        pytest.skip("this torch has no aten._fused_rms_norm: the composite runs")
    x = torch.from_numpy(rng.normal(size=(8, 1024)) * 3.0).to(getattr(torch, dtype))
    eps = float(torch.finfo(x.dtype).eps)
    for w in (None, torch.from_numpy(rng.uniform(0.5, 2.0, 1024)).to(x.dtype)):
        y, rstd = norms._FUSED_RMS_NORM(x, [1024], w, eps)
        expected_rstd = torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)
        expected = x * expected_rstd if w is None else (x * expected_rstd) * w
        assert torch.equal(rstd, expected_rstd) and torch.equal(y, expected)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_rms_norms_derivative_at_rows_far_below_a_tiny_eps_stays_finite(framework: str, rng, request) -> None:
    """eps 1e-30 and rows of about 2^-60 (rstd about 2^50), a cotangent of about 2^40: the input
    VJP (about 2^90) is finite in float32 and the float64 one within the table's tolerance. JAX's
    plain derivative factors rstd^3 out of its reduction, so its rows are those with rstd within
    2^+-15.5 (impl_jax.norms._rms_plain_range); these take the prescaled formula."""
    if framework == "torch":
        import torch

        from impl_torch._decisions import rows_serve

        if not rows_serve(torch.ones(1)):  # the Triton row kernels write their derivative out
            request.applymarker(
                pytest.mark.xfail(
                    strict=True,
                    reason="autograd of ATen's composite reduces x * dy times rstd^3, which overflows for rows "
                    "far below a tiny eps (rstd about 2^50 here): a known gap of the PyTorch side",
                )
            )
    backend = harness.backend(framework)
    x = rng.normal(size=(4, 256)) * 2.0**-60
    cotangent = rng.normal(size=(4, 256)) * 2.0**40
    grads = {}
    for dtype in ("float32", "float64"):
        module = harness.build("rms_norm", framework, num_features=256, eps=1e-30, elementwise_affine=True, dtype=dtype)
        grads[dtype] = backend.vjp(module, round_to(x, dtype), round_to(cotangent, dtype), dtype)[1]
    assert np.isfinite(grads["float32"]).all(), "the float32 VJP overflowed"
    result = compare(
        grads["float32"], grads["float64"], tolerance("rms_norm", "float32", "vjp"), vjp_scale(grads["float64"])
    )
    assert result.ok, f"off by {result.max_rel:.3e} at {result.worst_index}"
