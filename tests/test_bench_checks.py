"""The benchmark's output check (bench/checks.py) passes a correct result and stops a wrong one,
for every registered technique, so no broken implementation can post a time."""

from __future__ import annotations

import numpy as np
import pytest

import harness
from bench import plan as benchplan
from bench.checks import check

N = 2**18
TECHNIQUES = [pytest.param(name, id=name) for name in harness.names()]


@pytest.mark.parametrize("mode", benchplan.MODES)
@pytest.mark.parametrize("name", TECHNIQUES)
def test_check_passes_a_correct_result_and_stops_one_missing_one_percent(name: str, mode: str) -> None:
    x, cot, resolved = benchplan.inputs(name, N)
    backend = harness.backend("torch")
    module = harness.build(name, "torch", **resolved)
    y, dx, _ = backend.vjp(module, x, cot, "float32")
    out = y if mode == "forward" else dx
    case = benchplan.BenchCase(name, N, mode, "cpu", "torch", "eager")
    check(case, out, x, cot, resolved)
    # 1% of the entries zeroed, drawn among those that are not zero already (a saturated
    # clamp's gradient is mostly zeros).
    broken = out.copy().reshape(-1)
    nonzero = np.flatnonzero(broken)
    broken[np.random.default_rng(0).choice(nonzero, max(1, nonzero.size // 100), replace=False)] = 0.0
    with pytest.raises(AssertionError):
        check(case, broken.reshape(out.shape), x, cot, resolved)
