"""Numerics at the edges of a group: constant groups at every finite magnitude, and infinities in
a batch's statistics."""

from __future__ import annotations

import numpy as np
import pytest
from cases import FRAMEWORKS, TRAIN_CASES, Case, params, run

import harness
from harness.numerics import finfo
from harness.sampling import input_shape, round_to
from harness.tolerances import compare, tolerance

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
