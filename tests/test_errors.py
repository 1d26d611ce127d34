"""Bad parameters and bad inputs get the same clear error in both frameworks."""

from __future__ import annotations

import numpy as np
import pytest
from cases import FRAMEWORKS, TRAIN_CASES, Case, params

import harness


def _raised(fn) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


def _same_error_in_both(make, expected: type) -> str:
    errors = {fw: _raised(lambda fw=fw: make(fw)) for fw in FRAMEWORKS}
    kinds = {kind for kind, _ in errors.values()}
    messages = {message for _, message in errors.values()}
    assert kinds == {expected}, errors
    assert len(messages) == 1, errors
    return messages.pop()


def _bad_values(name: str) -> list[tuple[dict, type]]:
    """Registry-driven: each declared reject, wrong types per parameter kind, an unknown name."""
    spec = harness.get(name)
    base = {"num_features": 4} if spec.takes_num_features else {}
    cases: list[tuple[dict, type]] = [({**base, **r}, ValueError) for r in spec.rejects]
    cases.append(({**base, "no_such_parameter": 1}, TypeError))
    for p in spec.params:
        wrong = {"float": "1.0", "optional_float": "1.0", "int": 2.5, "bool": 1, "str": 3}[p.kind]
        cases.append(({**base, p.name: wrong}, TypeError))
    if spec.takes_num_features:
        cases.append(({}, TypeError))  # num_features missing
    return cases


@pytest.mark.parametrize("name", harness.names())
def test_bad_parameters_are_rejected_identically(name: str) -> None:
    for given, expected in _bad_values(name):
        message = _same_error_in_both(lambda fw, given=given: harness.build(name, fw, **given), expected)
        assert name in message, message


def test_reject_messages_say_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"lo must be < hi, got lo=2\.0, hi=1\.0"):
        harness.build("clamp", "torch", lo=2.0, hi=1.0)
    with pytest.raises(ValueError, match=r"eps.*must be a finite number > 0"):
        harness.build("layer_norm", "jax", num_features=3, eps=0.0)
    with pytest.raises(ValueError, match=r"momentum.*must be in \[0, 1\]"):
        harness.build("batch_norm", "jax", num_features=3, momentum=1.5)
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) low; allowed: lo, hi"):
        harness.build("clamp", "jax", low=0.0)


def test_unknown_names_suggest_the_closest() -> None:
    with pytest.raises(LookupError, match="sigmoid"):
        harness.get("sigmiod")
    with pytest.raises(harness.UnknownTechniqueError, match="layer_norm"):
        harness.build("layernorm", "torch", num_features=3)
    with pytest.raises(ValueError, match="allowed: 'torch', 'jax'"):
        harness.build("clamp", "tensorflow")


def _input(case: Case, framework: str, x: np.ndarray):
    return case.build(framework)(harness.backend(framework).asarray(x))


@pytest.mark.parametrize("case", params(TRAIN_CASES))
def test_bad_inputs_are_rejected_identically(case: Case) -> None:
    spec = case.spec()
    resolved = case.resolved()
    shape = (2, resolved.get("num_features", 3), 3)
    message = _same_error_in_both(lambda fw: _input(case, fw, np.ones(shape, dtype=np.int32)), TypeError)
    assert "floating-point" in message or "dtype" in message
    if spec.min_rank > 0:
        _same_error_in_both(lambda fw: _input(case, fw, np.ones((), dtype=np.float32)), ValueError)
    if "axis" in resolved:
        bad = Case(case.name, {**case.given, "axis": 5})
        message = _same_error_in_both(lambda fw: _input(bad, fw, np.ones((2, 3), dtype=np.float32)), ValueError)
        assert "allowed: -2 to 1" in message
    if spec.feature_axis is not None:
        wrong = [2] * spec.min_rank
        wrong[spec.feature_axis] = resolved["num_features"] + 1
        message = _same_error_in_both(lambda fw: _input(case, fw, np.ones(wrong, dtype=np.float32)), ValueError)
        assert "num_features" in message
        x64 = np.ones(shape[: spec.min_rank] if spec.feature_axis == 1 else (2, resolved["num_features"]))
        message = _same_error_in_both(lambda fw: _input(case, fw, x64), TypeError)
        assert "float32 parameters, which take float32, float16 or bfloat16 inputs" in message, message
        assert "dtype='float64'" in message, message


def test_batch_norm_training_needs_more_than_one_value_per_channel() -> None:
    case = Case("batch_norm", {})
    message = _same_error_in_both(lambda fw: _input(case, fw, np.ones((1, 8), dtype=np.float32)), ValueError)
    assert "more than one value per channel" in message


DTYPE_REJECTS = [
    pytest.param(name, given, dtype, id=f"{name}-{dtype}-{i}")
    for name in harness.names()
    for i, (given, dtype) in enumerate(harness.get(name).dtype_rejects)
]


@pytest.mark.parametrize(("name", "given", "dtype"), DTYPE_REJECTS)
def test_parameters_an_input_dtype_cannot_hold_are_rejected_at_the_call(name: str, given: dict, dtype: str) -> None:
    # Valid parameters in general, so the module builds; this dtype cannot hold them.
    case = Case(name, given)

    def call(framework: str) -> None:
        backend = harness.backend(framework)
        case.build(framework, dtype)(backend.from_numpy(np.zeros((2, 3)), dtype))

    message = _same_error_in_both(call, ValueError)
    assert f"{name} on a {dtype} input" in message and "must" in message, message
