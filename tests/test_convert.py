"""Trained modules move between PyTorch and JAX with every value and their mode; PyTorch
checkpoints load safely, and a mismatch names its first difference."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import harness
from harness.tolerances import compare, head_tolerance

IN, OUT = 5, 8


def _train(module, framework: str, rng: np.random.Generator, steps: int = 3, dtype: str = "float64") -> None:
    """A few SGD steps through the adapters (running statistics update as in any training call)."""
    backend = harness.backend(framework)
    for _ in range(steps):
        x, cotangent = rng.normal(size=(6, IN)), rng.normal(size=(6, OUT))
        _, _, grads = backend.vjp(module, x, cotangent, dtype)
        state = backend.get_state(module)
        backend.set_state(module, {k: v - 0.1 * grads[k] if k in grads else v for k, v in state.items()})


def _outputs(module, framework: str, x: np.ndarray) -> np.ndarray:
    backend = harness.backend(framework)
    return backend.to_numpy(module(backend.from_numpy(x, "float64")))


@pytest.mark.parametrize("name", harness.names())
def test_a_trained_head_moves_to_jax_and_back(name: str, rng: np.random.Generator) -> None:
    original = harness.head(name, "torch", IN, OUT, seed=2, dtype="float64")
    _train(original, "torch", rng)
    original.eval()
    moved = harness.to_jax(original)
    back = harness.to_torch(moved)
    x = rng.normal(size=(4, IN))
    expected = _outputs(original, "torch", x)
    for framework, module in (("jax", moved), ("torch", back)):
        if harness.get(name).stateful:
            assert harness.backend(framework).is_training(module) is False, f"{framework}: eval mode was lost"
        result = compare(_outputs(module, framework, x), expected, head_tolerance(name, "float64", "value"))
        assert result.ok, f"{framework}: outputs differ by {result.max_rel:.2e}"
    final = harness.backend("torch").get_state(back)
    for key, value in harness.backend("torch").get_state(original).items():
        np.testing.assert_array_equal(final[key], value, err_msg=key)


def test_conversion_refuses_modules_it_did_not_build() -> None:
    with pytest.raises(TypeError, match=r"harness\.build or harness\.head"):
        harness.to_jax(torch.nn.Linear(2, 2))


def test_torch_checkpoint_loads_into_either_framework(tmp_path: Path, rng: np.random.Generator) -> None:
    source = harness.head("batch_norm", "torch", IN, OUT, seed=4, dtype="float64")
    _train(source, "torch", rng)
    path = tmp_path / "head.pt"
    torch.save(source.state_dict(), path)
    x = rng.normal(size=(3, IN))
    source.eval()
    for framework in harness.FRAMEWORKS:
        target = harness.head("batch_norm", framework, IN, OUT, seed=0, dtype="float64")
        harness.load_torch_checkpoint(target, path, framework)
        harness.backend(framework).set_training(target, False)
        np.testing.assert_allclose(_outputs(target, framework, x), _outputs(source, "torch", x), rtol=1e-12)


def test_checkpoint_mismatches_name_the_first_difference(tmp_path: Path) -> None:
    module = harness.head("layer_norm", "torch", IN, OUT)
    state = module.state_dict()
    missing = tmp_path / "missing.pt"
    torch.save({k: v for k, v in state.items() if k != "limit.weight"}, missing)
    with pytest.raises(KeyError, match=r"state is missing 'limit\.weight'"):
        harness.load_torch_checkpoint(harness.head("layer_norm", "jax", IN, OUT), missing, "jax")
    wrong = tmp_path / "wrong.pt"
    torch.save({**state, "linear.weight": torch.zeros(IN, OUT)}, wrong)
    with pytest.raises(ValueError, match=r"'linear.weight' has shape \(5, 8\), expected \(8, 5\)"):
        harness.load_torch_checkpoint(module, wrong, "torch")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
@pytest.mark.parametrize("framework", harness.FRAMEWORKS)
def test_saved_checkpoints_keep_the_module_dtype(tmp_path: Path, framework: str, dtype: str, rng) -> None:
    """A head's checkpoint holds its own dtype, as torch.save(head.state_dict()) does (a float16
    head was written as float32, which an assigning load then made a float32 head), and loads
    back into a fresh head of that dtype with its values."""
    source = harness.head("batch_norm", framework, IN, OUT, seed=3, dtype=dtype)
    _train(source, framework, rng, dtype=dtype)
    path = tmp_path / "head.pt"
    harness.save_torch_checkpoint(source, path, framework)
    saved = torch.load(path, weights_only=True)
    assert {t.dtype for t in saved.values()} == {getattr(torch, dtype)}
    target = harness.head("batch_norm", framework, IN, OUT, seed=0, dtype=dtype)
    harness.load_torch_checkpoint(target, path, framework)
    for key, value in harness.backend(framework).get_state(target).items():
        np.testing.assert_array_equal(value, harness.backend(framework).get_state(source)[key], err_msg=key)


@pytest.mark.parametrize("framework", harness.FRAMEWORKS)
def test_checkpoint_functions_name_a_framework_mix_up_and_refuse_complex_values(tmp_path: Path, framework: str) -> None:
    other = next(f for f in harness.FRAMEWORKS if f != framework)
    module = harness.head("layer_norm", framework, IN, OUT)
    path = tmp_path / "head.pt"
    for call in (harness.save_torch_checkpoint, harness.load_torch_checkpoint):
        with pytest.raises(TypeError, match=f"with framework='{other}'; pass framework='{framework}'"):
            call(module, path, other)
    state = harness.head("layer_norm", "torch", IN, OUT).state_dict()
    torch.save({**state, "limit.bias": state["limit.bias"].to(torch.complex64)}, path)
    with pytest.raises(TypeError, match=r"limit\.bias holds torch\.complex64 values"):
        harness.load_torch_checkpoint(module, path, framework)


class _Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_checkpoints_are_never_unpickled_freely(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"linear_weight": _Payload()}, f)
    with pytest.raises(pickle.UnpicklingError):
        harness.load_torch_checkpoint(harness.head("clamp", "torch", IN, OUT), path, "torch")
