"""Bad parameters and bad inputs get the same clear error in both frameworks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from cases import FRAMEWORKS, TRAIN_CASES, Case, params

import harness
from harness.build import record_of
from harness.sampling import input_shape


def _raised(fn) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


# What only one framework's code says: an error's fix is written in the idiom of the framework at hand.
IDIOM = {"torch": "torch.", "jax": "jnp."}


def _same_error_in_both(make, expected: type) -> str:
    """The same error type and words in both frameworks, up to the fix after the first '; ',
    which may only use the idiom of its own framework. Returns PyTorch's message."""
    errors = {fw: _raised(lambda fw=fw: make(fw)) for fw in FRAMEWORKS}
    kinds = {kind for kind, _ in errors.values()}
    assert kinds == {expected}, errors
    assert len({message.partition("; ")[0] for _, message in errors.values()}) == 1, errors
    for fw, (_, message) in errors.items():
        fix = message.partition("; ")[2]
        assert all(idiom not in fix for other, idiom in IDIOM.items() if other != fw), (fw, message)
        assert "\n" not in message, (fw, message)
    return errors["torch"][1]


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


def test_an_int_beyond_float_and_a_heads_sizes_get_builds_errors() -> None:
    """An int float cannot hold is a bad value (it raised a bare OverflowError), and a head's
    sizes and seed follow build's parameters: TypeError for a type, numpy integers accepted
    (a float in_features raised ValueError, np.int64 was refused)."""
    message = _same_error_in_both(lambda fw: harness.build("clamp", fw, lo=10**400), ValueError)
    assert "clamp: parameter 'lo' must be a finite real number" in message
    message = _same_error_in_both(lambda fw: harness.head("sigmoid", fw, 3.0, 4), TypeError)
    assert message.startswith("head: in_features must be an int, got 3.0")
    _same_error_in_both(lambda fw: harness.head("sigmoid", fw, 0, 4), ValueError)
    for framework in harness.FRAMEWORKS:
        record = record_of(harness.head("sigmoid", framework, np.int64(3), np.int32(4), seed=np.int64(1)))
        assert (record.in_features, record.out_features, record.seed) == (3, 4, 1)
        assert all(type(v) is int for v in (record.in_features, record.out_features, record.seed))


@pytest.mark.parametrize("name", [n for n in harness.names() if harness.get(n).invertible])
def test_inverses_take_floating_arrays_as_modules_do(name: str) -> None:
    """A Python float failed inside torch.log, an integer array gave integer arithmetic's NaN
    or zeros: both frameworks say what the inverse takes, in one line."""
    for framework in FRAMEWORKS:
        kind, message = _raised(lambda fw=framework: harness.inverse(name, fw)(0.25))
        assert kind is TypeError and message.startswith(f"{name}'s inverse takes a "), message
        assert f"got float; make one with {IDIOM[framework]}" in message, message
    ints = {"torch": lambda: harness.backend("torch").asarray(np.array([0, 1])), "jax": lambda: np.array([0, 1])}
    message = _same_error_in_both(lambda fw: harness.inverse(name, fw)(ints[fw]()), TypeError)
    assert "takes floating inputs, got int64" in message


def test_vmap_of_a_training_batch_norm_says_what_to_do() -> None:
    """torch.func.vmap cannot write per-example running statistics into unbatched buffers;
    ATen's own message for the in-place copy named neither batch_norm nor a way out."""
    import torch

    module = harness.build("batch_norm", "torch", num_features=4)
    with pytest.raises(RuntimeError, match=r"batch_norm in training mode updates its running statistics.*\.eval\(\)"):
        torch.func.vmap(module)(torch.randn(3, 5, 4))
    assert torch.func.vmap(module.eval())(torch.randn(3, 5, 4)).shape == (3, 5, 4)


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
    assert "x.to(torch.float32)" in message, message
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


NOT_ARRAYS = {
    "a list": (lambda fw: [[1.0, 2.0, 3.0]], {"torch": "torch.as_tensor(x)", "jax": "jnp.asarray(x)"}),
    "the other framework's array": (
        lambda fw: harness.backend("jax" if fw == "torch" else "torch").asarray(np.ones((2, 3), np.float32)),
        {"torch": "torch.from_dlpack(x)", "jax": "jnp.from_dlpack(x)"},
    ),
}


@pytest.mark.parametrize("what", list(NOT_ARRAYS))
@pytest.mark.parametrize("name", ["clamp", "softmax", "layer_norm", "batch_norm"])
def test_inputs_that_are_not_arrays_say_what_was_passed_and_how_to_convert(name: str, what: str) -> None:
    make, fixes = NOT_ARRAYS[what]
    case = Case(name, {"num_features": 3} if harness.get(name).takes_num_features else {})
    for framework in FRAMEWORKS:
        kind, message = _raised(lambda fw=framework: case.build(fw)(make(fw)))
        assert kind is TypeError, (framework, kind, message)
        assert message.startswith(f"{name} takes a "), message
        assert fixes[framework] in message and "\n" not in message, message
    head = {fw: harness.head("clamp", fw, 3, 2) for fw in FRAMEWORKS}
    for framework in FRAMEWORKS:
        kind, message = _raised(lambda fw=framework: head[fw](make(fw)))
        assert kind is TypeError and fixes[framework] in message, message


def test_conversion_of_a_module_of_the_wrong_framework_says_which_way() -> None:
    for source, target in (("torch", "jax"), ("jax", "torch")):
        convert = getattr(harness, f"to_{target}")
        with pytest.raises(TypeError, match=f"it is a .* module already; harness.to_{source}\\(module\\)"):
            convert(harness.build("clamp", target))
        with pytest.raises(TypeError, match=r"got list; pass a module made by harness\.build"):
            convert([1.0])


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
        shape = input_shape(case.spec(), case.resolved(dtype))
        case.build(framework, dtype)(backend.from_numpy(np.zeros(shape), dtype))

    message = _same_error_in_both(call, ValueError)
    assert f"{name} on a {dtype} input" in message and "must" in message, message


@pytest.mark.parametrize("framework", harness.FRAMEWORKS)
def test_use_device_refuses_an_unknown_name_and_a_device_it_cannot_see(framework: str) -> None:
    backend = harness.backend(framework)
    before = backend.device()
    with pytest.raises(ValueError, match="takes 'cpu' or 'cuda', got 'gpu'"):
        backend.use_device("gpu")
    import jax
    import torch

    if torch.cuda.is_available() or any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("a GPU is here: use_device('cuda') would succeed")
    with pytest.raises(RuntimeError, match=r"use_device\('cuda'\): .* sees no"):
        backend.use_device("cuda")
    assert backend.device() == before


def test_float64_without_jax_x64_is_refused_not_computed_in_float32() -> None:
    """With JAX's x64 mode off (its default; this suite turns it on, so a new interpreter), a
    float64 JAX module, conversion or input would be float32 in silence (a warning at most):
    each is refused with the way to enable it, for every registered technique, and float32
    still works."""
    script = """
import sys, numpy as np, harness
from harness.sampling import input_shape, sample_input
found = []
def refused(what, fn):
    try:
        fn()
    except RuntimeError as e:
        if "jax_enable_x64" not in str(e) or "\\n" in str(e):
            found.append(f"{what}: {e}")
    else:
        found.append(f"{what}: not refused")
for name in harness.names():
    spec = harness.get(name)
    given = {"num_features": 4} if spec.takes_num_features else {}
    x = sample_input(spec, spec.resolve(given), input_shape(spec, spec.resolve(given)), np.random.default_rng(0))
    if spec.takes_num_features:
        refused(name + " build", lambda: harness.build(name, "jax", dtype="float64", **given))
        refused(name + " to_jax", lambda: harness.to_jax(harness.build(name, "torch", dtype="float64", **given)))
    else:
        refused(name + " call", lambda: harness.build(name, "jax")(x))
    harness.build(name, "jax", **given)(x.astype(np.float32))
    if spec.invertible:
        refused(name + " inverse", lambda: harness.inverse(name, "jax")(np.array([0.25])))
print("\\n".join(found) or "all refused")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "all refused", done.stdout
