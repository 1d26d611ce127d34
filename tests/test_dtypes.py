"""Dtype moves, mixed precision and autocast follow each framework's conventions.

PyTorch: ``.double()``, ``.half()``, ``.bfloat16()``, ``.to(dtype)`` and ``.float()`` make a
module (built or head) one built with that dtype: the same state, outputs, record and
conversion. Both frameworks: float32 parameters take float16 and bfloat16 inputs as
``torch.nn.LayerNorm`` does (computed in float32, returned in the input's dtype), and refuse
every other mix with one error. ``torch.autocast`` runs a technique in float32 exactly where its
declaration (``autocast_float32``) says so, as ATen's policy runs the framework's own op.
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from cases import FRAMEWORKS, TRAIN_CASES, Case, params, run

import harness
from harness.build import record_of
from harness.numerics import module_input_dtypes
from harness.sampling import input_shape, round_to, sample_input
from harness.tolerances import compare, tolerance
from impl_torch.adapter import FRAMEWORK_DTYPES

DEFAULTS = [c for c in TRAIN_CASES if not c.given]
STATEFUL = [c for c in DEFAULTS if c.spec().takes_num_features]
# Up, down, and there and back: .half() shares .bfloat16()'s path (_apply), as .to(dtype) does.
# And a load that puts float64 tensors in place (assign=True keeps their dtype), which no _apply
# sees. Each named for the dtype it ends in, and how.
MOVES = {
    "float64": lambda m: m.double(),
    "bfloat16": lambda m: m.bfloat16(),
    "float32": lambda m: m.half().to(torch.float32),
    "float64-assigned": lambda m: m.load_state_dict({k: v.double() for k, v in m.state_dict().items()}, assign=True),
}
TORCH = harness.backend("torch")
IN_FEATURES = 3


def _head(case: Case, framework: str, dtype: str):
    return harness.head(case.name, framework, IN_FEATURES, 8, dtype=dtype, **case.given)


def _moved_and_built(case: Case, move: str, make, rng: np.random.Generator):
    """A float32 module (with random state) moved by ``move``, and one built in the dtype it
    moved to that holds the moved one's state."""
    moved = make(case, "torch", "float32")
    TORCH.set_state(moved, {k: rng.uniform(0.5, 2.0, v.shape) for k, v in TORCH.get_state(moved).items()})
    MOVES[move](moved)
    built = make(case, "torch", move.split("-")[0])
    TORCH.set_state(built, TORCH.get_state(moved))
    return moved, built


def _x(case: Case, shape_of, dtype: str, rng: np.random.Generator) -> np.ndarray:
    spec, resolved = case.spec(), case.resolved(dtype)
    return round_to(sample_input(spec, resolved, shape_of(spec, resolved), rng), dtype)


def _head_shape(spec, resolved) -> tuple[int, ...]:
    return (5, IN_FEATURES)


MAKERS = {
    "build": (lambda case, fw, dtype: case.build(fw, dtype), input_shape),
    "head": (_head, _head_shape),
}


# Every head; built modules of the techniques with tensors to move (a stateless one takes any
# float input and holds nothing).
MOVABLE = [
    pytest.param(case, kind, id=f"{case.id}-{kind}")
    for case in DEFAULTS
    for kind in MAKERS
    if kind == "head" or case.spec().takes_num_features
]


@pytest.mark.parametrize("move", list(MOVES))
@pytest.mark.parametrize(("case", "kind"), MOVABLE)
def test_a_moved_module_is_one_built_in_that_dtype(case: Case, kind: str, move: str, rng) -> None:
    make, shape_of = MAKERS[kind]
    moved, built = _moved_and_built(case, move, make, rng)
    dtype = move.split("-")[0]
    assert record_of(moved) == record_of(built)
    assert {k: v.dtype for k, v in moved.state_dict().items()} == {k: v.dtype for k, v in built.state_dict().items()}
    x = _x(case, shape_of, dtype, rng)
    for training in (True, False) if case.spec().stateful else (None,):
        TORCH.set_training(moved, training)
        TORCH.set_training(built, training)
        a, dtype_a = run("torch", moved, x, dtype)
        b, dtype_b = run("torch", built, x, dtype)
        assert dtype_a == dtype_b == dtype
        np.testing.assert_array_equal(a, b)
        for name, value in TORCH.get_state(moved).items():  # running statistics updated alike
            np.testing.assert_array_equal(value, TORCH.get_state(built)[name], err_msg=name)
    # Conversion and pickling rebuild it as moved.
    assert record_of(pickle.loads(pickle.dumps(moved))) == record_of(built)
    twin = harness.to_jax(moved)
    assert record_of(twin) == record_of(built)
    jax_state = harness.backend("jax").get_state(twin)
    for name, value in TORCH.get_state(moved).items():
        np.testing.assert_array_equal(jax_state[name], value, err_msg=name)


# Those with two tensors or more (a built rms_norm holds its weight alone).
MIXABLE = [p for p in MOVABLE if len(MAKERS[p.values[1]][0](p.values[0], "torch", "float32").state_dict()) > 1]


@pytest.mark.parametrize(("case", "kind"), MIXABLE)
def test_an_assigning_load_of_tensors_of_two_dtypes_is_refused(case: Case, kind: str) -> None:
    module = MAKERS[kind][0](case, "torch", "float32")
    state = module.state_dict()
    first = next(iter(state))
    mixed = {k: v.double() if k == first else v for k, v in state.items()}
    with pytest.raises(TypeError, match=r"holds tensors of one dtype, got float32, float64 from load_state_dict"):
        module.load_state_dict(mixed, assign=True)


def test_an_assigning_load_moves_a_heads_norm_without_tensors_and_a_refused_one_loads_nothing() -> None:
    """A head's limit holding no tensors (layer_norm without affine) still knows its dtype, and
    moves with the head; a refused load leaves every tensor as it was."""
    head = harness.head("layer_norm", "torch", IN_FEATURES, 8, dtype="float32", elementwise_affine=False)
    head.load_state_dict({k: v.double() for k, v in head.state_dict().items()}, assign=True)
    assert record_of(head) == record_of(harness.head("layer_norm", "torch", IN_FEATURES, 8, dtype="float64",
                                                     elementwise_affine=False))  # fmt: skip
    assert head(torch.ones(2, IN_FEATURES, dtype=torch.float64)).dtype == torch.float64
    norm = harness.build("layer_norm", "torch", num_features=4)
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    with pytest.raises(TypeError, match="holds tensors of one dtype"):
        norm.load_state_dict({"weight": torch.zeros(4, dtype=torch.float64), "bias": torch.zeros(4)}, assign=True)
    for name, value in norm.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, before[name]), name


def test_a_move_to_a_dtype_no_technique_takes_raises_at_the_move() -> None:
    with pytest.raises(TypeError, match=r"holds float16, bfloat16, float32, float64 parameters, got float8_e4m3fn"):
        harness.build("layer_norm", "torch", num_features=3).to(torch.float8_e4m3fn)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", params(STATEFUL))
def test_float32_modules_take_low_precision_inputs_alike_in_both_frameworks(case: Case, dtype: str, rng) -> None:
    """Computed in float32 and rounded once: the float32 module's output on the same values,
    rounded to the input's dtype, in both frameworks (flax's own layers would return float32
    here, torch.nn's the input's dtype: we follow PyTorch in both). Within the dtype's value
    tolerance, not bit for bit: ATen's fused mixed-precision kernel accumulates in another order
    than its float32 one, and an output near a rounding boundary may round the other way."""
    spec, resolved = case.spec(), case.resolved()
    x = round_to(sample_input(spec, resolved, input_shape(spec, resolved), rng), dtype)
    for framework in FRAMEWORKS:
        module = case.build(framework, "float32")
        low, low_dtype = run(framework, module, x, dtype)
        wide, _ = run(framework, case.build(framework, "float32"), x, "float32")
        assert low_dtype == dtype
        result = compare(low, round_to(wide, dtype), tolerance(case.name, dtype, "value"))
        assert result.ok, f"{framework}: {result.max_rel:.3e} from the rounded float32 output at {result.worst_index}"


# The torch.nn layer each built-in norm follows for mixed dtypes (RMSNorm takes every mix; ours
# take one rule for every norm, the stricter LayerNorm/BatchNorm1d one).
TORCH_NN = {
    "layer_norm": lambda dtype: torch.nn.LayerNorm(8, dtype=dtype),
    "batch_norm": lambda dtype: torch.nn.BatchNorm1d(8, dtype=dtype),
}


@pytest.mark.parametrize("name", sorted(TORCH_NN))
def test_the_mixes_taken_are_those_torch_nn_takes(name: str) -> None:
    for param_dtype in harness.DTYPES:
        for input_dtype in harness.DTYPES:
            x = torch.ones(4, 8, dtype=FRAMEWORK_DTYPES[input_dtype])
            try:
                theirs = TORCH.dtype_name(TORCH_NN[name](FRAMEWORK_DTYPES[param_dtype])(x))
            except RuntimeError:
                theirs = None
            assert (input_dtype in module_input_dtypes(param_dtype)) == (theirs is not None), (param_dtype, input_dtype)
            ours = harness.build(name, "torch", num_features=8, dtype=param_dtype)
            if theirs is None:
                with pytest.raises(TypeError, match=f"{param_dtype} parameters, which take"):
                    ours(x)
            else:
                assert TORCH.dtype_name(ours(x)) == theirs


def _autocast_reference(head, x: torch.Tensor, compute: torch.dtype) -> torch.Tensor:
    """What autocast gives, spelled out: the Linear in bfloat16, the technique on its output
    cast to ``compute``, without autocast."""
    linear = head.linear
    z = torch.nn.functional.linear(x.bfloat16(), linear.weight.bfloat16(), linear.bias.bfloat16())
    return head.limit(z.to(compute))


@pytest.mark.parametrize("declared", ["as declared", "float32 on cpu"])
@pytest.mark.parametrize("case", params(DEFAULTS))
def test_autocast_runs_a_technique_in_float32_exactly_where_declared(case: Case, declared: str, rng) -> None:
    """CPU bfloat16 autocast of a float32 head: the Linear runs in bfloat16, the technique in the
    dtype its declaration names for this device. The second run declares the CPU for it, to see
    the float32 path work (the built-ins declare it for CUDA only, as ATen does)."""
    head = _head(case, "torch", "float32")
    if declared != "as declared":
        spec = replace(case.spec(), autocast_float32=frozenset({"cpu"}))
        head.limit._input.spec = spec  # the module's declaration, held by its input check
    in_float32 = "cpu" in head.limit._input.spec.autocast_float32
    x = TORCH.from_numpy(_x(case, _head_shape, "float32", rng), "float32")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = head(x)
    expected = _autocast_reference(head, x, torch.float32 if in_float32 else torch.bfloat16)
    assert y.dtype == (torch.float32 if in_float32 else torch.bfloat16)
    torch.testing.assert_close(y, expected, rtol=0, atol=0, equal_nan=True)


# ATen's own op for each built-in that has one: its autocast policy is what ours declares.
ATEN_OPS = {
    "layer_norm": "aten::layer_norm",
    "rms_norm": "aten::rms_norm",
    "batch_norm": "aten::batch_norm",
    "softmax": "aten::softmax.int",
    "log_softmax": "aten::log_softmax.int",
    "sigmoid": "aten::sigmoid",
    "tanh": "aten::tanh",
    "hardtanh": "aten::hardtanh",
    "hardsigmoid": "aten::hardsigmoid",
    "relu6": "aten::relu6",
    "softsign": "aten::softsign",
    "clamp": "aten::clamp",
}


@pytest.mark.parametrize(("name", "op"), sorted(ATEN_OPS.items()))
def test_declared_autocast_follows_atens_policy_for_its_own_op(name: str, op: str) -> None:
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
    for device, key in (("cuda", "AutocastCUDA"), ("cpu", "AutocastCPU")):
        declared = device in harness.get(name).autocast_float32
        try:
            registered = has_kernel(op, key)
        except RuntimeError:  # composite ops without a schema of that name (relu6, softsign)
            registered = False
        assert declared == registered, f"{name} on {device}: declared {declared}, ATen has a kernel: {registered}"
