"""Property tests (hypothesis): bounds, no NaN and monotonicity for any input a search can find."""

from __future__ import annotations

import numpy as np
import pytest
from cases import FRAMEWORKS, TRAIN_CASES, Case, params, run
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from harness.sampling import input_shape, round_to

# float32-representable values, infinities and the largest finite ones included, no NaN.
FLOATS32 = st.floats(allow_nan=False, width=32)
# Fewer examples than the profile's 60: the extremes (test_bounds) and a dense sweep of every
# representable step (test_numerics) are tested deterministically; the search adds mixes of them.
SEARCH = settings(max_examples=15)
MONOTONE_SEARCH = settings(max_examples=15)


def _shape(case: Case) -> tuple[int, ...]:
    return input_shape(case.spec(), case.resolved())


@pytest.mark.parametrize("case", params(TRAIN_CASES))
def test_any_input_stays_inside_bounds(case: Case) -> None:
    spec = case.spec()
    lo, hi = round_to(np.array(spec.bounds(**case.params())), "float32")
    modules = {fw: case.build(fw) for fw in FRAMEWORKS}

    @SEARCH
    @given(arrays(np.float64, _shape(case), elements=FLOATS32))
    def check(x: np.ndarray) -> None:
        for fw, module in modules.items():
            y, _ = run(fw, module, x, "float32")
            assert not np.isnan(y).any(), f"{fw}: NaN for {x[np.isnan(y)][:4]}"
            assert ((y >= lo) & (y <= hi)).all(), f"{fw}: outside [{lo}, {hi}]: {y[(y < lo) | (y > hi)][:4]}"

    check()


MONOTONE = [c for c in TRAIN_CASES if c.spec().monotone and not c.spec().reduction_axes(1, c.resolved())]


@pytest.mark.parametrize("case", params(MONOTONE))
def test_declared_monotone_techniques_never_decrease(case: Case) -> None:
    modules = {fw: case.build(fw) for fw in FRAMEWORKS}

    @MONOTONE_SEARCH
    @given(arrays(np.float64, (16,), elements=FLOATS32))
    def check(x: np.ndarray) -> None:
        x = np.sort(x)
        for fw, module in modules.items():
            y, _ = run(fw, module, x, "float32")
            # Compared pairwise, not by np.diff: equal infinities are not a decrease.
            down = y[1:] < y[:-1]
            assert not down.any(), f"{fw}: decreases between {x[:-1][down][:3]} and the next inputs"

    check()


def test_monotone_cases_exist() -> None:
    assert {"sigmoid", "tanh", "clamp", "smooth_clamp", "bounded_relu"} <= {c.name for c in MONOTONE}
