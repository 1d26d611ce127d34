"""Invertible techniques expose their inverse in both frameworks: round trips, infinities at
the bounds, NaN outside, agreement with the numpy inverse."""

from __future__ import annotations

import numpy as np
import pytest
from cases import FRAMEWORKS, TRAIN_CASES, Case, params, run

import harness
from harness.tolerances import compare, tolerance

INVERTIBLE = [c for c in TRAIN_CASES if c.spec().invertible]


def _inverse(case: Case, framework: str, y: np.ndarray) -> np.ndarray:
    backend = harness.backend(framework)
    fn = harness.inverse(case.name, framework, **case.given)
    return backend.to_numpy(fn(backend.from_numpy(y, "float64")))


@pytest.mark.parametrize("case", params(INVERTIBLE))
def test_round_trip_inside_the_range(case: Case) -> None:
    # Into the tails, but only where the output keeps 1e-6 of the range from either bound:
    # closer, the inverse is too ill-conditioned for 1e-8 (and at the bound it is an infinity).
    spec = case.spec()
    lo, hi = spec.bounds(**case.given)
    x = np.concatenate([np.linspace(-3.0, 3.0, 41), np.linspace(lo - (hi - lo), hi + (hi - lo), 41)])
    y = spec.reference(x, case.resolved("float64"))
    x = x[np.minimum(y - lo, hi - y) > 1e-6 * (hi - lo)]
    assert x.size > 20, "too few well-conditioned points"
    for framework in FRAMEWORKS:
        y, _ = run(framework, case.build(framework, "float64"), x, "float64")
        np.testing.assert_allclose(_inverse(case, framework, y), x, rtol=1e-8, atol=1e-8, err_msg=framework)


@pytest.mark.parametrize("case", params(INVERTIBLE))
def test_bounds_map_to_infinities_and_outside_to_nan(case: Case) -> None:
    lo, hi = case.spec().bounds(**case.given)
    width = hi - lo
    y = np.array([lo, hi, lo - 0.25 * width, hi + 0.25 * width, np.nan])
    for framework in FRAMEWORKS:
        got = _inverse(case, framework, y)
        np.testing.assert_array_equal(got[:2], [-np.inf, np.inf], err_msg=f"{framework}: bounds")
        assert np.isnan(got[2:]).all(), f"{framework}: outside the range gave {got[2:]}"


@pytest.mark.parametrize("case", params(INVERTIBLE))
def test_inverses_agree_with_each_other_and_with_numpy(case: Case, record_parity) -> None:
    spec = case.spec()
    lo, hi = spec.bounds(**case.given)
    y = lo + (hi - lo) * np.linspace(0.02, 0.98, 33)
    expected = spec.inverse_reference(y, case.resolved())
    for framework in FRAMEWORKS:
        result = compare(_inverse(case, framework, y), expected, tolerance(case.name, "float64", "value"))
        record_parity(case.name, f"{case.id}-inverse-{framework}-vs-numpy", "float64", "value", result)
        assert result.ok, f"{framework}: inverse differs from numpy by {result.max_rel:.2e} at {result.worst_index}"


def test_a_head_bias_can_be_set_for_a_chosen_initial_output() -> None:
    # The use case: with zero Linear weights, the head outputs f(bias); inverse(target) sets it.
    target = 0.8
    for framework in FRAMEWORKS:
        backend = harness.backend(framework)
        module = harness.head("scaled_sigmoid", framework, 3, 2, dtype="float64", lo=0.0, hi=2.0)
        bias = backend.to_numpy(
            harness.inverse("scaled_sigmoid", framework, lo=0.0, hi=2.0)(
                backend.from_numpy(np.full(2, target), "float64")
            )
        )
        backend.set_state(module, {"linear.weight": np.zeros((2, 3)), "linear.bias": bias})
        out = backend.to_numpy(module(backend.from_numpy(np.ones((1, 3)), "float64")))
        np.testing.assert_allclose(out, target, rtol=1e-12, err_msg=framework)


def test_non_invertible_techniques_say_which_are() -> None:
    with pytest.raises(ValueError, match=r"not invertible; invertible techniques: .*sigmoid"):
        harness.inverse("clamp", "torch")
