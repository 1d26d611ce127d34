"""Gradients at every declared kink, and one ulp either side, equal the declaration in both frameworks."""

from __future__ import annotations

import numpy as np
import pytest
from cases import FRAMEWORKS, TRAIN_CASES, Case, params

import harness
from harness.sampling import round_to

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
    for kink in spec.kinks(**case.given):
        assert round_to(np.array([kink.x]), dtype)[0] == kink.x, f"kink {kink.x} is not representable in {dtype}"
        # One ulp away, but never a subnormal: XLA on CPU flushes those to zero (harness/divergences.py).
        step = max(abs(float(np.spacing(np.array(kink.x, dtype=dtype)))), float(np.finfo(dtype).tiny))
        points = np.array([kink.x - step, kink.x, kink.x + step])
        declared = np.array([kink.left, kink.at, kink.right])
        for framework in FRAMEWORKS:
            y, dx = _gradients(case, framework, points, dtype)
            # At the kink itself the declared value holds exactly; one ulp away, up to rounding.
            at = round_to(np.array([kink.at]), dtype)[0]
            assert dx[1] == at, f"{framework}: gradient at {kink.x} is {dx[1]}, declared {kink.at}"
            np.testing.assert_allclose(dx, declared, rtol=0, atol=1e-6, err_msg=f"{framework} near kink {kink.x}")
            np.testing.assert_allclose(y, spec.reference(points, resolved), rtol=1e-6, atol=1e-12)


def test_every_kinked_technique_is_tested() -> None:
    declared = {name for name in harness.names() if harness.get(name).kinks()}
    assert declared <= {c.name for c in KINKED}
