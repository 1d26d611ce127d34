"""Gradients at every declared kink, and one ulp either side, equal the declaration in both frameworks."""

from __future__ import annotations

import numpy as np
import pytest
from cases import FRAMEWORKS, TRAIN_CASES, Case, around_kinks, params

import harness
from harness.sampling import machine_epsilon, round_to
from harness.tolerances import compare, tolerance, vjp_scale

KINKED = [c for c in TRAIN_CASES if c.spec().kinks(**c.given)]


def _gradients(case: Case, framework: str, points: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    # Elementwise techniques: a unit cotangent gives each point's own derivative.
    y, dx, _ = harness.backend(framework).vjp(case.build(framework, dtype), points, np.ones_like(points), dtype)
    return y, dx


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", params(KINKED))
def test_gradient_at_and_beside_each_kink(case: Case, dtype: str) -> None:
    spec = case.spec()
    resolved = case.resolved(dtype)
    kinks = spec.kinks(**case.given)
    for kink in kinks:
        assert round_to(np.array([kink.x]), dtype)[0] == kink.x, f"kink {kink.x} is not representable in {dtype}"
    points = around_kinks(kinks, dtype)
    declared = np.array([[k.left, k.at, k.right] for k in kinks])
    at = round_to(np.array([k.at for k in kinks]), dtype)
    for framework in FRAMEWORKS:
        y, dx = _gradients(case, framework, points, dtype)
        dx = dx.reshape(-1, 3)
        # At each kink the declared value holds exactly; one ulp away, up to rounding.
        assert (dx[:, 1] == at).all(), f"{framework}: gradients {dx[:, 1]} at the kinks {points[1::3]}, declared {at}"
        np.testing.assert_allclose(dx, declared, rtol=0, atol=1e-6, err_msg=f"{framework} near the kinks")
        np.testing.assert_allclose(y, spec.reference(points, resolved), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", params(KINKED))
def test_low_precision_gradients_around_each_kink_agree(case: Case, dtype: str) -> None:
    """A kink that float16 or bfloat16 cannot hold falls between two inputs: both frameworks
    decide which side each input is on by the same float32 comparison, so the VJPs agree."""
    kinks = [k.x for k in case.spec().kinks(**case.given)]
    eps = machine_epsilon(dtype)
    offsets = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    points = round_to(np.concatenate([k + offsets * eps * max(abs(k), 1.0) for k in kinks]), dtype)
    (_, dx_a), (_, dx_b) = (_gradients(case, framework, points, dtype) for framework in FRAMEWORKS)
    # The table's tolerance absorbs last-bit differences of smooth pieces; a 0 against a 1 fails.
    result = compare(dx_a, dx_b, tolerance(case.name, dtype, "vjp"), vjp_scale(dx_a))
    assert result.ok, f"gradients differ at input {points[result.worst_index]}: {dx_a} vs {dx_b}"
