"""The C kernels (impl_torch/_native) that PyTorch's eager CPU float32 smooth_clamp, scaled_sigmoid,
scaled_tanh, soft_clip, leaky_clamp and softsign run, against the ATen formulas they replace: same special values,
same exact middle, bounded, independent of threads.

The generic tests run the kernel wherever it builds; ``nox -s tests`` also runs them with
OUTPUT_LIMITS_NATIVE=0, so the ATen formula keeps its float32 coverage.
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Any

import numpy as np
import pytest
import torch
from cases import Case

import harness
from harness import registry
from harness.squashes import smooth_clamp_parts
from harness.tolerances import compare, tolerance
from impl_torch import _common
from impl_torch import _native as native

pytestmark = pytest.mark.skipif(
    os.environ.get("OUTPUT_LIMITS_NATIVE") == "0" or native._compiler() is None,
    reason="native kernels off here (OUTPUT_LIMITS_NATIVE=0 or no C compiler): the ATen formula runs",
)

# The declared examples, and bounds whose rounded joins cross in float32 (lo + r rounds above
# hi - r): both formulas must then take hi - r, as torch.clamp does.
CROSSED = {"lo": -0.7043111818180136, "hi": 1.3043112414226117, "linear_fraction": 0.0}
# Bounds whose float32 rounding needs the final clamp (smooth_clamp_needs_guard): the kernel
# clamps only then, and without it -inf would come out an ulp below lo.
GUARDED = {"lo": 1.879621435201635, "hi": 6.356984467045865, "linear_fraction": 0.0}
SMOOTH_CLAMP = [
    Case("smooth_clamp", dict(given)) for given in [{}, *harness.get("smooth_clamp").examples, CROSSED, GUARDED]
]


def _r(p: dict[str, float]) -> float:
    return smooth_clamp_parts(p["lo"], p["hi"], p["linear_fraction"]).r  # the declaration's tail width


def _points(p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Every edge the formula has, in float32, and a spread of ordinary values."""
    r, big = _r(p), np.finfo(np.float32).max
    joins = np.array([p["lo"] + r, p["hi"] - r], dtype=np.float32)
    edges = np.concatenate(
        [
            joins,
            np.nextafter(joins, np.float32(np.inf)),
            np.nextafter(joins, np.float32(-np.inf)),
            np.array([p["lo"], p["hi"], 0.0, -0.0, 1e-30, -1e-30, big, -big, np.inf, -np.inf, np.nan], np.float32),
        ]
    )
    spread = rng.normal(p["lo"] + p["hi"], 3.0 * (p["hi"] - p["lo"]), size=4096).astype(np.float32) / 2
    return np.concatenate([edges, spread]).astype(np.float32)


def _aten(monkeypatch: pytest.MonkeyPatch) -> None:
    # Where native_elementwise asks, for the technique and for the module that skips it alike.
    monkeypatch.setattr(_common, "elementwise_serves", lambda x: False)


def _kernel_and_aten(
    case: Case, x: torch.Tensor, g: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> tuple[np.ndarray, ...]:
    """(output, VJP) of ``case`` on ``x`` with the kernel, then with the ATen formula, as numpy."""
    module = case.build("torch", "float32")
    outs = []
    for aten in (False, True):
        if aten:
            _aten(monkeypatch)
        xr = x.detach().clone().requires_grad_(True)
        y = module(xr)
        (dx,) = torch.autograd.grad(y, xr, g)
        outs += [y.detach().numpy(), dx.numpy()]
    return tuple(outs)


# The squashes.c kernels, on each technique's defaults and declared examples.
ELEMENTWISE = [
    Case(name, dict(given))
    for name in ("scaled_sigmoid", "scaled_tanh", "soft_clip", "leaky_clamp", "softsign")
    for given in [{}, *harness.get(name).examples]
]


@pytest.mark.parametrize("case", ELEMENTWISE, ids=lambda c: f"{c.name}-{c.given}")
def test_elementwise_kernels_match_the_aten_formulas(
    case: Case, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = case.resolved("float32")
    big = np.finfo(np.float32).max
    lo, hi = (p["lo"], p["hi"]) if "lo" in p else (-1.0, 1.0)  # softsign's range, and its edges
    bounds = np.array([lo, hi], dtype=np.float32)
    edges = [bounds, np.nextafter(bounds, np.float32(np.inf)), np.nextafter(bounds, np.float32(-np.inf))]
    specials = np.array([0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0, big, -big, np.inf, -np.inf, np.nan], np.float32)
    spread = rng.normal((lo + hi) / 2, 2.0 * (hi - lo), size=4096).astype(np.float32)
    x = torch.from_numpy(np.concatenate([*edges, specials, spread]).astype(np.float32))
    g = torch.from_numpy(rng.normal(size=x.shape[0]).astype(np.float32))
    yn, dn, ya, da = _kernel_and_aten(case, x, g, monkeypatch)
    xs, gs = x.numpy(), g.numpy()
    np.testing.assert_array_equal(np.isnan(yn), np.isnan(xs))
    nan = np.isnan(xs)
    # NaN at a NaN x in the derivative too, the kernel's and the ATen formula's (the declaration's
    # rule; leaky_clamp's comparisons alone would give 1 there, ATen's hardtanh_backward 0 or g).
    np.testing.assert_array_equal(np.isnan(dn), nan)
    np.testing.assert_array_equal(np.isnan(da), nan)
    np.testing.assert_array_equal(yn[np.isinf(xs)], ya[np.isinf(xs)])
    np.testing.assert_array_equal(dn[np.isinf(xs)], da[np.isinf(xs)])
    if case.name == "softsign":  # the ATen formula's operations in its order: the same bits
        np.testing.assert_array_equal(yn, ya)  # (the VJP multiplies g by 1 / t / t: rounded apart)
    if case.name != "leaky_clamp":  # the one whose range is the reals
        finite = ~np.isnan(yn)
        assert ((yn[finite] >= np.float32(lo)) & (yn[finite] <= np.float32(hi))).all()
    else:  # the declared gradient, exactly: 1 strictly inside, the slope at the bounds and beyond
        inside = (xs > np.float32(lo)) & (xs < np.float32(hi))
        np.testing.assert_array_equal(dn[inside], gs[inside])
        outside = (xs <= np.float32(lo)) | (xs >= np.float32(hi))
        np.testing.assert_array_equal(dn[outside], np.float32(p["slope"]) * gs[outside])
    for quantity, a, b in (("value", yn, ya), ("vjp", dn, da)):
        result = compare(a, b, tolerance(case.name, "float32", quantity))
        assert result.ok, f"{quantity}: kernel and ATen differ by {result.max_rel:.3e} at {result.worst_index}"


@pytest.mark.parametrize("name", native.ELEMENTWISE)
def test_elementwise_kernels_do_not_depend_on_threads(name: str, rng: np.random.Generator) -> None:
    x = torch.from_numpy(rng.normal(scale=2.0, size=(1 << 18) + 3).astype(np.float32))
    kernel = native.elementwise(name, (-1.0, 2.0, -0.5, 1.25, 0.75, 3.0))
    results = []
    for threads in (1, 3):
        y, d = torch.empty_like(x), torch.empty_like(x)
        kernel(x.data_ptr(), y.data_ptr(), d.data_ptr(), x.numel(), threads)
        alone = torch.empty_like(x)  # the output without the derivative: the same values
        kernel(x.data_ptr(), alone.data_ptr(), None, x.numel(), threads)
        assert torch.equal(alone, y)
        results.append((y, d))
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_kernel_builds_where_a_c_compiler_is() -> None:
    build = native.build()
    assert build.library is not None, build.note
    assert build.record()["on"] and build.flags


@pytest.mark.parametrize("case", SMOOTH_CLAMP, ids=lambda c: str(c.given))
def test_kernel_matches_the_aten_formula(case: Case, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    p = case.resolved("float32")
    lo, hi, r = p["lo"], p["hi"], _r(p)
    x = torch.from_numpy(_points(p, rng))
    g = torch.from_numpy(rng.normal(size=x.shape[0]).astype(np.float32))
    yn, dx_native, ya, dx_aten = _kernel_and_aten(case, x, g, monkeypatch)
    xs = x.numpy()
    np.testing.assert_array_equal(np.isnan(yn), np.isnan(xs))
    np.testing.assert_array_equal(np.isnan(dx_native), np.isnan(xs))
    finite = ~np.isnan(yn)
    assert ((yn[finite] >= np.float32(lo)) & (yn[finite] <= np.float32(hi))).all()
    middle = (xs >= np.float32(lo + r)) & (xs <= np.float32(hi - r))
    np.testing.assert_array_equal(yn[middle], xs[middle])  # the linear middle is exact
    np.testing.assert_array_equal(dx_native[middle], g.numpy()[middle])
    np.testing.assert_array_equal(yn[np.isinf(xs)], ya[np.isinf(xs)])
    for quantity, a, b in (("value", yn, ya), ("vjp", dx_native, dx_aten)):
        result = compare(a, b, tolerance("smooth_clamp", "float32", quantity))
        assert result.ok, f"{quantity}: kernel and ATen differ by {result.max_rel:.3e} at {result.worst_index}"


def test_a_strided_input_gives_the_contiguous_result(rng: np.random.Generator) -> None:
    # A strided view goes through a contiguous copy and gives the same elements and shape, with
    # and without the derivative (autograd recording the call).
    module = harness.build("smooth_clamp", "torch")
    strided = torch.from_numpy(rng.normal(scale=2.0, size=(64, 64)).astype(np.float32)).t()
    for grad in (False, True):
        given = strided.detach().requires_grad_(grad)
        y = module(given)
        expected = module(given.detach().contiguous())
        assert y.shape == strided.shape and torch.equal(y.detach(), expected)
        if grad:
            (dx,) = torch.autograd.grad(y, given, torch.ones_like(y))
            assert dx.shape == strided.shape


@pytest.mark.parametrize("case", SMOOTH_CLAMP, ids=lambda c: str(c.given))
def test_kernel_matches_the_declaration_deep_into_the_tails(case: Case, rng: np.random.Generator) -> None:
    """Elementwise against the float64 closed form, out to 60 r past each join, where the
    gradient falls through the subnormals to 0: the parity tolerances, norm-wise, cannot see it."""
    p = case.resolved("float32")
    lo, hi, r = p["lo"], p["hi"], _r(p)
    reach = r * np.geomspace(1e-6, 60.0, 2000)
    x32 = np.concatenate([(hi - r) + reach, (lo + r) - reach, rng.uniform(lo, hi, 200)]).astype(np.float32)
    g32 = rng.uniform(0.5, 2.0, x32.shape).astype(np.float32)
    x = torch.from_numpy(x32).requires_grad_(True)
    y = case.build("torch", "float32")(x)
    (dx,) = torch.autograd.grad(y, x, torch.from_numpy(g32))

    x64, g64 = x32.astype(np.float64), g32.astype(np.float64)
    b_lo, b_hi = float(np.float32(lo + r)), float(np.float32(hi - r))
    m = np.minimum(np.maximum(x64, b_lo), b_hi)
    e = x64 - m
    s = 1.0 / (1.0 + np.exp(2.0 * np.abs(e) / r))
    # e is rounded once in float32, and the gradient's relative error grows with 2|e|/r times that.
    rel = 8 * 2.0**-24 * (1.0 + 2.0 * np.abs(e) / r)
    want_dx = g64 * 4.0 * s * (1.0 - s)
    err_dx = np.abs(dx.numpy().astype(np.float64) - want_dx)
    # Below 2^-126, s itself carries an absolute error of half a subnormal, times 4 g after.
    bad = err_dx > rel * want_dx + 2.0**-149 * (1.0 + 4.0 * g64)
    assert not bad.any(), f"gradient {dx.numpy()[bad][:3]} where {want_dx[bad][:3]} at x = {x32[bad][:3]}"
    want_y = harness.get("smooth_clamp").reference(x64, p)
    # The tail adds a term of size r to the join: rounding is relative to the larger of the two.
    ulps = np.abs(y.detach().numpy().astype(np.float64) - want_y) / np.spacing(
        np.maximum(np.abs(want_y), np.abs(m)).astype(np.float32)
    )
    assert ulps.max() <= 4.0, f"forward off by {ulps.max():.2f} ulp at x = {x32[ulps.argmax()]!r}"


def test_transforms_and_tracing_use_the_aten_formula(rng: np.random.Generator) -> None:
    """torch.func and vmap wrap tensors without storage, fake tensors have none, and
    torch.jit.trace records no op the kernel performs: each must take the ATen formula."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    module = SMOOTH_CLAMP[0].build("torch", "float32")
    x = torch.from_numpy(rng.normal(scale=2.0, size=4096).astype(np.float32))
    g = torch.from_numpy(rng.normal(size=4096).astype(np.float32))
    y, pullback = torch.func.vjp(module, x)
    xr = x.clone().requires_grad_(True)
    (dx,) = torch.autograd.grad(module(xr), xr, g)
    assert compare(y.numpy(), module(x).numpy(), tolerance("smooth_clamp", "float32", "value")).ok
    assert compare(pullback(g)[0].numpy(), dx.numpy(), tolerance("smooth_clamp", "float32", "vjp")).ok
    traced = torch.jit.trace(module, x)
    assert compare(traced(-x).numpy(), module(-x).numpy(), tolerance("smooth_clamp", "float32", "value")).ok
    with FakeTensorMode():
        assert module(torch.empty(7, 3)).shape == (7, 3)


def test_an_unusable_compiler_turns_the_kernel_off_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc --flag")
    with pytest.warns(RuntimeWarning, match="the ATen formula runs"):
        build = native.build.__wrapped__()
    assert build.library is None and not build.record()["on"]
    assert "FileNotFoundError" in build.note


def _kernel_techniques() -> list[str]:
    """Every registered technique, plugins' too, whose PyTorch side starts with a one-pass kernel."""
    return [n for n in harness.names() if hasattr(registry.implementation(n, "torch"), "kernel")]


def _output_and_vjp(call: Any, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xr = x.clone().requires_grad_(True)
    y = call(xr)
    return y.detach(), torch.autograd.grad(y, xr, g)[0]


@pytest.mark.parametrize("name", _kernel_techniques())
def test_a_module_runs_the_bound_kernel_as_the_technique_does(name: str, rng: np.random.Generator) -> None:
    """modules.Limit binds the technique's kernel and runs it without calling the technique:
    the same output and VJP, bit for bit, as the technique called as a function; the kernel made
    once and then taken from the module's binding, also after pickling (left out, bound again)."""
    module = harness.build(name, "torch")
    function = functools.partial(registry.implementation(name, "torch"), **module.params)
    x = torch.from_numpy(rng.normal(scale=3.0, size=999).astype(np.float32))
    g = torch.from_numpy(rng.normal(size=999).astype(np.float32))
    want = _output_and_vjp(function, x, g)
    for call in (module, pickle.loads(pickle.dumps(module))):
        for got, expected in zip(_output_and_vjp(call, x, g), want, strict=True):
            assert torch.equal(got, expected)
        assert torch.equal(call(x), want[0])  # without autograd: the values op
        made = call._kernel.cache_info()
        assert (made.misses, made.hits) == (1, 1), f"the module's bound kernel was not what ran: {made}"


def test_a_technique_called_with_wrong_parameters_says_so_in_its_own_name() -> None:
    """Where the kernel serves the input, a missing or unknown parameter raises the technique's
    own TypeError, as where it does not (float64), not one of the kernel's lookup."""
    leaky_clamp = registry.implementation("leaky_clamp", "torch")
    for params in ({"lo": -1.0, "hi": 1.0}, {"lo": -1.0, "hi": 1.0, "slope": 0.1, "tilt": 2.0}):
        errors = []
        for dtype in (torch.float32, torch.float64):
            with pytest.raises(TypeError) as raised:
                leaky_clamp(torch.ones(4, dtype=dtype), **params)
            errors.append(str(raised.value))
        assert errors[0] == errors[1] and errors[0].startswith("leaky_clamp()"), errors
