"""Heads (Linear then a technique) agree across frameworks; running statistics evolve identically."""

from __future__ import annotations

import numpy as np
import pytest
from cases import FRAMEWORKS, TRAIN_CASES, Case, params

import harness
from harness.sampling import sample_cotangent
from harness.tolerances import compare, head_tolerance, tolerance, vjp_scale

IN, OUT = 5, 8


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", harness.names())
def test_heads_with_one_seed_agree(name: str, dtype: str, rng: np.random.Generator, record_parity) -> None:
    heads = {fw: harness.head(name, fw, IN, OUT, seed=3, dtype=dtype) for fw in FRAMEWORKS}
    states = [harness.backend(fw).get_state(heads[fw]) for fw in FRAMEWORKS]
    assert sorted(states[0]) == sorted(states[1])
    for key in states[0]:
        np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=f"{key} differs at init")
    x = rng.normal(size=(6, IN)) * 2.0
    cotangent = sample_cotangent((6, OUT), rng)
    (y_a, dx_a, dp_a), (y_b, dx_b, dp_b) = (
        harness.backend(fw).vjp(heads[fw], x, cotangent, dtype) for fw in FRAMEWORKS
    )
    pairs = [("value", y_a, y_b), ("vjp", dx_a, dx_b), *(("vjp", dp_a[k], dp_b[k]) for k in sorted(dp_a))]
    scale = vjp_scale(dx_a, *dp_a.values())
    for quantity, a, b in pairs:
        result = compare(a, b, head_tolerance(name, dtype, quantity), scale if quantity == "vjp" else 0.0)
        record_parity(name, f"head-{name}", dtype, quantity, result)
        assert result.ok, f"{quantity}: {result.max_rel:.3e} > {result.rtol:.0e} {result.problem or ''}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_different_seed_gives_different_weights(framework: str) -> None:
    backend = harness.backend(framework)
    a = backend.get_state(harness.head("clamp", framework, IN, OUT, seed=0))
    b = backend.get_state(harness.head("clamp", framework, IN, OUT, seed=1))
    assert not np.array_equal(a["linear.weight"], b["linear.weight"])
    c = backend.get_state(harness.head("clamp", framework, IN, OUT, seed=0))
    np.testing.assert_array_equal(a["linear.weight"], c["linear.weight"])


STATEFUL = [c for c in TRAIN_CASES if c.spec().stateful]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", params(STATEFUL))
def test_training_steps_then_eval_agree(case: Case, dtype: str, rng: np.random.Generator, record_parity) -> None:
    """Several training steps on the same batches leave the same running statistics; eval agrees."""
    spec = case.spec()
    n = case.resolved(dtype)["num_features"]
    modules = {fw: case.build(fw, dtype) for fw in FRAMEWORKS}
    shape = [5, n, 3] if spec.feature_axis == 1 else [5, 3, n]
    for step in range(4):
        x = rng.normal(size=shape) * (step + 1) + step
        for fw in FRAMEWORKS:
            modules[fw](harness.backend(fw).from_numpy(x, dtype))
        states = [harness.backend(fw).get_state(modules[fw]) for fw in FRAMEWORKS]
        for key in states[0]:
            result = compare(states[0][key], states[1][key], tolerance(case.name, dtype, "value"))
            record_parity(case.name, f"{case.id}-state-{key}", dtype, "value", result)
            assert result.ok, f"step {step}: {key} differs by {result.max_rel:.3e}"
        assert not np.allclose(states[0]["running_mean"], 0.0), "training did not update the running mean"
    x = rng.normal(size=shape)
    outs = []
    for fw in FRAMEWORKS:
        modules[fw].eval()
        outs.append(harness.backend(fw).to_numpy(modules[fw](harness.backend(fw).from_numpy(x, dtype))))
    before = harness.backend(FRAMEWORKS[0]).get_state(modules[FRAMEWORKS[0]])
    result = compare(outs[0], outs[1], tolerance(case.name, dtype, "value"))
    assert result.ok, f"eval outputs differ by {result.max_rel:.3e}"
    after = harness.backend(FRAMEWORKS[0]).get_state(modules[FRAMEWORKS[0]])
    assert all(np.array_equal(before[k], after[k]) for k in before), "eval changed the state"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_set_state_names_the_first_mismatch(framework: str) -> None:
    backend = harness.backend(framework)
    module = harness.head("layer_norm", framework, IN, OUT)
    state = backend.get_state(module)
    with pytest.raises(KeyError, match=r"limit\.bias"):
        backend.set_state(module, {k: v for k, v in state.items() if k != "limit.bias"})
    with pytest.raises(ValueError, match=r"'linear.weight' has shape \(5, 8\), expected \(8, 5\)"):
        backend.set_state(module, {**state, "linear.weight": state["linear.weight"].T})


@pytest.mark.parametrize("case", params([c for c in TRAIN_CASES if not c.given and c.spec().takes_num_features]))
def test_reset_parameters_gives_a_meta_built_module_its_built_values(case: Case) -> None:
    """The meta-device workflow, as FSDP runs it: build without memory, ``to_empty``, then
    ``reset_parameters``. Every parameter and buffer takes the value it is built with, as in
    torch.nn's norms; the memory to_empty hands out is whatever it held (NaN here)."""
    import torch

    built = harness.build(case.name, "torch", **case.params("float32"))
    with torch.device("meta"):
        module = harness.build(case.name, "torch", **case.params("float32"))
    module.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in module.state_dict().values():
            tensor.fill_(float("nan"))
    module.reset_parameters()
    expected = built.state_dict()
    assert module.state_dict().keys() == expected.keys()
    for key, tensor in module.state_dict().items():
        torch.testing.assert_close(tensor, expected[key], rtol=0, atol=0, msg=key)
