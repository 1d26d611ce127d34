"""torch.compile'd modules give eager's values and input VJPs, for every registered technique.

Each is compiled first under autograd, as a training step compiles it. That path is where
torch 2.11 returned dx = 0, without an error, for custom Functions whose forward wrote in place
or returned an alias (impl_torch._decisions.may_write_in_place); eager tests never reach it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch._dynamo
from cases import TRAIN_CASES, Case
from torch._dynamo.utils import counters
from torch.autograd import forward_ad

import harness
from bench import plan as benchplan
from harness.sampling import input_shape
from harness.tolerances import COMPILED, compare, vjp_scale
from impl_torch._decisions import COMPILED_KERNEL_MIN, COMPILED_KERNELS, COMPILED_MEND_MIN
from impl_torch._native import mend as _mend
from impl_torch.adapter import FRAMEWORK_DTYPES


def _compiled_kernel_techniques() -> list[str]:
    return [name for name in COMPILED_KERNELS if name in harness.names()]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # Every technique's Limit shares one forward: without a reset its recompiles would add up to
    # dynamo's limit, past which it runs eagerly and this test would compare eager with eager.
    # The graph-break counters are reset with it, for the test to read its own.
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield
    torch._dynamo.reset()


def _assert_matches(compiled: np.ndarray, eager: np.ndarray, what: str, scale: float = 0.0) -> None:
    """``compiled`` equals ``eager`` within COMPILED (norm-wise at ``scale``: vjp_scale for a
    derivative, 0 for a value)."""
    result = compare(compiled, eager, COMPILED, scale)
    assert result.ok, f"{what} differs from eager by {result.max_rel:.2e} ({result.problem or ''})"


@pytest.mark.parametrize("name", harness.names())
def test_compiled_module_matches_eager(name: str) -> None:
    # As many elements as make a compiled graph call the C kernels where a technique does
    # (impl_torch._decisions.COMPILED_KERNEL_MIN); the tests below, on fewer, take inductor's code.
    x, cot, params = benchplan.inputs(name, COMPILED_KERNEL_MIN)
    backend = harness.backend("torch")
    results = {}
    for style in ("eager", "compile"):
        # A fresh module per mode, forward+backward first: the bench builds them the same way.
        runs = {
            mode: backend.bench_callable(harness.build(name, "torch", **params), x, cot, mode, style, "cpu")
            for mode in ("forward+backward", "forward")
        }
        results[style] = {mode: backend.to_numpy(run()) for mode, run in runs.items()}
    # A graph break would run the code around it eagerly, and compare eager with eager there.
    assert not counters["graph_break"], f"torch.compile breaks the graph: {next(iter(counters['graph_break']))}"
    eager, compiled = results["eager"], results["compile"]
    assert np.abs(eager["forward+backward"]).max() > 0, "the eager VJP is zero: the case tests nothing"
    for mode in ("forward", "forward+backward"):
        scale = vjp_scale(eager[mode]) if mode != "forward" else 0.0
        _assert_matches(compiled[mode], eager[mode], f"torch.compile {mode}", scale)


def _with_several_parameter_sets() -> list[str]:
    return [name for name in harness.names() if sum(c.name == name for c in TRAIN_CASES) > 1]


@pytest.mark.parametrize("name", _with_several_parameter_sets())
def test_modules_of_other_parameters_compile_after_the_first(name: str) -> None:
    """Modules of one technique with each declared parameter set, compiled one after another
    without a reset, as a model holding several compiles them. They share Module.forward's
    code, so dynamo recompiles it, and then makes a float parameter
    symbolic (automatic dynamic), which a choice by parameter value cannot take: torch 2.11
    raised here for scaled_sigmoid, scaled_tanh and smooth_clamp, and 2.13 broke the graph, until
    the module passed its parameters as constants (impl_torch.modules._constant_parameters)."""
    rng, backend = np.random.default_rng(0), harness.backend("torch")
    for case in (c for c in TRAIN_CASES if c.name == name):
        spec, resolved = case.spec(), case.resolved("float32")
        shape = input_shape(spec, resolved)
        # Through the adapter: on the GPU under pytest --device cuda, where torch 2.11 raised.
        x = backend.from_numpy(rng.normal(size=shape) * 4.0, "float32").requires_grad_(True)
        cot = backend.from_numpy(rng.normal(size=shape), "float32")
        outputs = {}
        for style in ("eager", "compile"):
            module = case.build("torch")
            call = torch.compile(module) if style == "compile" else module
            y = call(x)
            (dx,) = torch.autograd.grad(y, x, cot)
            outputs[style] = (backend.to_numpy(y), backend.to_numpy(dx))
        (y_e, dx_e), (y_c, dx_c) = outputs["eager"], outputs["compile"]
        _assert_matches(y_c, y_e, f"{case.id}: torch.compile value")
        _assert_matches(dx_c, dx_e, f"{case.id}: torch.compile input VJP", vjp_scale(dx_e))
    assert not counters["graph_break"], f"torch.compile breaks the graph: {next(iter(counters['graph_break']))}"


@pytest.mark.parametrize("name", harness.names())
def test_compiled_second_order_is_refused_or_right(name: str) -> None:
    """A second derivative through a compiled module, beside a term of its own (x^3 here):
    AOT autograd refuses double backward; where it does not, the result is eager's. Never the
    other term's alone: a compiled backward that reads no input (a saved derivative times the
    cotangent) is cut off from the graph, and the engine would skip it without an error."""
    x, _, params = benchplan.inputs(name, COMPILED_KERNEL_MIN)
    xt = torch.from_numpy(x).float()
    module = harness.build(name, "torch", **params)
    results = []
    for fn in (torch.compile(module), module):
        leaf = xt.clone().requires_grad_(True)
        (first,) = torch.autograd.grad((fn(leaf) + leaf**3).sum(), leaf, create_graph=True)
        try:
            (second,) = torch.autograd.grad(first.sum(), leaf)
        except RuntimeError as error:
            assert fn is not module and "double backward" in str(error), error
            return
        results.append(second.numpy())
    _assert_matches(results[0], results[1], "compiled second derivative", vjp_scale(results[1]))


def _runs_kernel_op(name: str, mode: str, log2: int) -> bool:
    """Whether a compiled module of ``name`` on 2^log2 elements calls a C kernel's op in ``mode``."""
    from impl_torch._native import compiled

    x, cot, params = benchplan.inputs(name, 2**log2)
    module = harness.build(name, "torch", **params)
    run = harness.backend("torch").bench_callable(module, x, cot, mode, "compile", "cpu")
    run()
    before = compiled._kernel.cache_info()
    run()
    after = compiled._kernel.cache_info()
    return after.hits + after.misses > before.hits + before.misses


@pytest.mark.parametrize("name", harness.names())
def test_compiled_kernel_op_runs_where_declared(name: str) -> None:
    """A compiled module calls its C kernel's op exactly from the elements
    _decisions.COMPILED_KERNELS names for it in each mode, checked at COMPILED_KERNEL_MIN and at
    each declared minimum and the size below it (so the tests above at COMPILED_KERNEL_MIN
    elements test the op where it runs there, and inductor's code elsewhere)."""
    from impl_torch import _native

    if not _native.available():
        pytest.skip("the C kernels did not build here (or OUTPUT_LIMITS_NATIVE=0)")
    declared = COMPILED_KERNELS.get(name, {})
    for mode in ("forward", "forward+backward"):
        least = declared.get(mode)
        sizes = {COMPILED_KERNEL_MIN.bit_length() - 1}
        if least is not None:
            sizes |= {least.bit_length() - 1, least.bit_length() - 2}
        for log2 in sorted(sizes):
            expected = least is not None and 2**log2 >= least
            ran = _runs_kernel_op(name, mode, log2)
            assert ran == expected, f"{mode} at 2^{log2}: the graph ran the C kernel: {ran}, declared {expected}"


def test_compiled_kernel_techniques_are_registered() -> None:
    assert set(COMPILED_KERNELS) <= set(harness.names()), "a name in _decisions.COMPILED_KERNELS is no technique"


# Compiled vmap(grad) raises a dynamo error for these (README, "Derivative modes and
# transforms"): their ATen formula's custom Functions, traced as written, have no vmap rule there.
# An error, not a wrong gradient; the test notices when it stops raising.
_COMPILED_VMAP_RAISES = {"soft_clip"}


@pytest.mark.parametrize("name", _compiled_kernel_techniques())
def test_compiled_torch_func_gradient_matches_eager(name: str) -> None:
    """torch.func.vmap of torch.func.grad, and forward-mode AD, compiled whole, give eager's
    derivatives for the techniques whose compiled graph calls their C kernel, at a size where
    it would: dynamo differentiates a custom Function's forward as written there, so the
    kernel's op, which has no derivative rule, must not run (it did, and smooth_clamp's gradient
    came out wrong without an error). Other techniques: README, "Derivative modes and
    transforms"."""
    x, cot, params = benchplan.inputs(name, 2 * COMPILED_KERNEL_MIN)  # rows of that size
    module = harness.build(name, "torch", **params)
    xt, ct = (torch.from_numpy(a).float() for a in (x, cot))
    rows, cts = xt.reshape(2, -1), ct.reshape(2, -1)
    per_row = torch.func.vmap(torch.func.grad(lambda v, c: (module(v) * c).sum()))

    def tangent(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with forward_ad.dual_level():
            return forward_ad.unpack_dual(module(forward_ad.make_dual(v, t))).tangent

    for what, fn, args in (("vmap(grad)", per_row, (rows, cts)), ("forward_ad", tangent, (xt, ct))):
        eager = fn(*args).detach().numpy()
        if what == "vmap(grad)" and name in _COMPILED_VMAP_RAISES:
            with pytest.raises(torch._dynamo.exc.InternalTorchDynamoError, match="does not have vmap support"):
                torch.compile(fn)(*args)
            continue
        compiled = torch.compile(fn)(*args)
        assert compiled is not None, f"compiled {what} lost the derivative"
        compiled = compiled.detach().numpy()
        _assert_matches(compiled, eager, f"compiled {what}", vjp_scale(eager))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("affine", [True, False], ids=["weight", "no-weight"])
def test_compiled_rms_norm_mends_exactly_the_rejected_rows(dtype: str, affine: bool, monkeypatch) -> None:
    """Without autograd, at COMPILED_MEND_MIN elements, compiled rms_norm computes its fast output
    first and its op (impl_torch/_native/mend.py) rewrites exactly the rows eager's guard rejects
    (on ATen's rstd), by the formula, leaving the others as they were: rows holding an infinity
    or a NaN, of the largest finite values, so large that rstd is below trusted_rstd_low, or
    just so; a zero row, one just inside the low bound and the rest pass. An input without such
    rows is left untouched, and the op writes into the kernel's own output (no clone in the
    generated code). Compiled whole, 2-D float32 and 3-D bfloat16 (in float32, mixed precision),
    the values within COMPILED of eager's (NaN where it has it)."""
    from torch._inductor.utils import run_and_get_code

    from impl_torch import norms

    x, _, params = benchplan.inputs("rms_norm", COMPILED_MEND_MIN)
    params = {**params, "elementwise_affine": affine}
    clean = torch.from_numpy(x).float().reshape(-1, x.shape[-1]).to(getattr(torch, dtype))
    extreme = clean.clone()
    extreme[0, 3] = math.inf
    extreme[1, :2] = torch.tensor([-math.inf, math.inf])
    extreme[2, 5] = math.nan
    extreme[3] = torch.finfo(extreme.dtype).max * torch.sign(extreme[3])
    extreme[4] *= 2.0**50  # finite squares in float32, but rstd below trusted_rstd_low
    extreme[5] = 0.0
    extreme[6] = 1.01 * 2.0**31  # rstd about 2^-31 / 1.01: just below the low bound
    extreme[7] = 0.99 * 2.0**31  # just above it
    if dtype != "float32":
        clean, extreme = (t.reshape(2, -1, t.shape[-1]) for t in (clean, extreme))
    rejected = []
    mender = _mend._MENDERS["rms_norm"]

    def spy(y, x, weight, bias, stats, eps) -> None:
        before = y.clone()
        mender(y, x, weight, bias, stats, eps)
        # The rows eager's rule rejects on ATen's own rstd, not on the op's.
        bad = ~norms._rms_norm_trusted(norms._native_rms_norm(x, None, eps)[1]).squeeze(-1)
        rejected.append(bad.reshape(-1).nonzero().reshape(-1).tolist())
        assert torch.equal(y[~bad], before[~bad]), "the op changed rows the guard accepts"
        formula = norms._rms_norm_formula(x[bad], weight, eps)[0].to(y.dtype)
        torch.testing.assert_close(y[bad], formula, rtol=0, atol=0, equal_nan=True)

    monkeypatch.setitem(_mend._MENDERS, "rms_norm", spy)
    for given in (clean, extreme):
        module = harness.build("rms_norm", "torch", **params)
        with torch.no_grad():
            eager = module(given).float().numpy()
            compiled, code = run_and_get_code(torch.compile(module, fullgraph=True), given)
        assert "output_limits.mend_" in code[0] and "clone" not in code[0], code[0]
        compiled = compiled.float().numpy()
        np.testing.assert_array_equal(np.isnan(compiled), np.isnan(eager), err_msg="NaN pattern")
        keep = ~np.isnan(eager)
        _assert_matches(compiled[keep], eager[keep], "torch.compile's value")
    assert rejected == [[], [0, 1, 2, 3, 4, 6]], f"rows the guard rejected, per call: {rejected}"
    assert np.isfinite(eager.reshape(-1, x.shape[-1])[5:]).all(), "the case tests less than it says"


def test_compiled_rms_norm_mend_takes_a_second_batch_size(monkeypatch) -> None:
    """The same path compiled with dynamic shapes (``dynamic=True``, as dynamo's automatic
    dynamic makes them after a second batch size), where a module's eps is symbolic and reaches
    the op as a float argument (a torch.cond branch could not close over it:
    test_a_compiled_module_takes_a_second_batch_size): compiled whole, an infinite row mended,
    at two batch sizes of at least COMPILED_MEND_MIN elements, the op run at each."""
    calls = []
    mender = _mend._MENDERS["rms_norm"]
    monkeypatch.setitem(_mend._MENDERS, "rms_norm", lambda *args: (calls.append(1), mender(*args)))
    module = harness.build("rms_norm", "torch", num_features=1024, eps=1e-6)
    compiled = torch.compile(module, dynamic=True, fullgraph=True)
    for rows in (COMPILED_MEND_MIN // 1024, COMPILED_MEND_MIN // 512 + 8):
        x = torch.randn(rows, 1024)
        x[0, 0] = math.inf
        with torch.no_grad():
            results = [fn(x).numpy() for fn in (compiled, module)]
        assert np.isfinite(results[1]).all() and (results[1][0, 1:] == 0).all(), "the case tests less"
        assert compare(*results, COMPILED).ok
    assert len(calls) == 2, f"the op ran {len(calls)} times in 2 compiled calls"


@pytest.mark.parametrize("name", harness.names())
def test_compiling_after_a_vmap_of_the_compiled_module_matches_eager(name: str) -> None:
    """torch.compile under vmap makes dynamo skip the frames that decide a path, for good, and
    a later compile then traces their callees alone: the eager-only kernels' buffer addresses
    went stale there, and six elementwise techniques gave NaN or garbage without an error. After
    such a vmap, a compiled module on a strided input must give eager's output and VJP."""
    x, cot, params = benchplan.inputs(name, 2**12)
    module = harness.build(name, "torch", **params)
    if name == "batch_norm":
        module.eval()  # training mode mutates its statistics, which vmap refuses (README)
    xt, ct = (torch.from_numpy(a).float() for a in (x, cot))
    torch.func.vmap(torch.compile(module))(torch.stack([xt, xt]))
    strided = torch.stack([xt, xt], dim=-1)[..., 0]
    results = []
    for fn in (torch.compile(module), module):
        with torch.no_grad():
            value = fn(strided)
        leaf = strided.detach().requires_grad_(True)
        (vjp,) = torch.autograd.grad(fn(leaf), leaf, ct)
        results.append([value.numpy(), vjp.numpy()])
    for what, compiled, eager in zip(("value", "input VJP"), *results, strict=True):
        _assert_matches(compiled, eager, f"{what} after vmap(compile)", vjp_scale(eager) if what != "value" else 0.0)


GUARDED = {  # parameters whose float32 rounding needs the final clamp (the declarations say so)
    "smooth_clamp": {"lo": 1.879621435201635, "hi": 6.356984467045865, "linear_fraction": 0.0},
    "scaled_sigmoid": {"lo": -1.1290112879370873, "hi": -1.079659169907192},
}


@pytest.mark.parametrize("name", sorted(GUARDED))
def test_compiled_rounding_guards_hold_where_the_declaration_needs_them(name: str) -> None:
    """Compiled, the final clamp is taken or left by the declaration's rule at trace time; where
    the rule needs it, the output stays inside the bounds at the extremes."""
    from impl_torch import squashes

    params = GUARDED[name]
    module = torch.compile(harness.build(name, "torch", **params))
    big = float(np.finfo(np.float32).max)
    x = torch.tensor([np.inf, -np.inf, big, -big, 1e10, -1e10, 0.0], dtype=torch.float32)
    with torch.no_grad():
        y = module(x).numpy()
    lo, hi = np.float32(params["lo"]), np.float32(params["hi"])
    assert ((y >= lo) & (y <= hi)).all(), f"{name} compiled left [{lo}, {hi}]: {y}"
    assert not counters["graph_break"], f"torch.compile breaks the graph: {next(iter(counters['graph_break']))}"
    if name == "smooth_clamp":
        r, b_lo, b_hi = squashes.smooth_clamp_parts(params["lo"], params["hi"], params["linear_fraction"])
        assert squashes._smooth_clamp_guard(params["lo"], params["hi"], r, b_lo, b_hi, "float32")
    else:
        assert squashes._affine_guard(params["lo"], params["hi"], "float32")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in TRAIN_CASES])
def test_compiled_limits_match_eager(case: Case) -> None:
    """Compiled, rows holding infinities, NaN, the largest finite values or one constant take
    the rare branch of a guarded technique (its torch.cond) and must give eager's values and
    VJPs (input and parameters) there too: NaN exactly where eager has it, the rest within
    COMPILED. An ordinary input, which takes the common branch, gives eager's too (weights drawn,
    not 1). The cotangent and the input come back untouched after both (torch 2.13's inductor
    let a torch.cond backward write into the cotangent: pytorch#192840)."""
    from test_bounds import _extreme_input

    rng = np.random.default_rng(0)
    extremes = _extreme_input(case, "float32", rng)
    extremes.reshape(-1)[-1] = np.nan  # a NaN group too (the extremes hold none)
    x = torch.from_numpy(extremes).float()
    cotangent = torch.from_numpy(rng.normal(size=tuple(x.shape))).float()
    ordinary = torch.from_numpy(rng.normal(size=tuple(x.shape))).float()

    def build() -> torch.nn.Module:
        # Weights other than 1, the same in every module: batch_norm's weight sits outside its
        # reductions, and a wrong broadcast of it would go unseen at 1.
        module, draw = case.build("torch", "float32"), np.random.default_rng(1)
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.copy_(torch.from_numpy(draw.uniform(0.5, 2.0, tuple(parameter.shape))))
        return module

    results, ordinary_results = {}, {}
    for style in ("eager", "compile"):
        module = build()
        fn = torch.compile(module) if style == "compile" else module
        for given_x, kept in ((ordinary, ordinary_results), (x, results)):
            leaf = given_x.clone().requires_grad_(True)
            y = fn(leaf)
            given = cotangent.clone()
            grads = torch.autograd.grad(y, [leaf, *module.parameters()], given)
            assert torch.equal(given, cotangent), f"{style}: the backward wrote into the cotangent it was given"
            torch.testing.assert_close(leaf.detach(), given_x, rtol=0, atol=0, equal_nan=True, msg=f"{style}: x moved")
            kept[style] = [y.detach().numpy(), *(g.numpy() for g in grads)]
    # Without autograd the compiled norms take a lighter cond (no per-group rule out of it).
    with torch.no_grad():
        results["compile"].insert(1, torch.compile(build())(x).numpy())
    results["eager"].insert(1, results["eager"][0])
    assert not counters["graph_break"], f"torch.compile breaks the graph: {next(iter(counters['graph_break']))}"
    parameters = [f"{name}'s VJP" for name, _ in case.build("torch").named_parameters()]
    for what, eager, compiled in zip(["value", "input VJP", *parameters], *ordinary_results.values(), strict=True):
        scale = vjp_scale(eager) if what != "value" else 0.0
        _assert_matches(compiled, eager, f"torch.compile's {what} of an ordinary input", scale)
    names = ["value", "value without autograd", "input VJP", *parameters]
    assert np.isnan(results["eager"][0]).any(), "the input has no NaN group: the case tests less than it says"
    for what, eager, compiled in zip(names, results["eager"], results["compile"], strict=True):
        np.testing.assert_array_equal(np.isnan(compiled), np.isnan(eager), err_msg=f"{what}: NaN pattern")
        keep = ~np.isnan(eager)
        scale = vjp_scale(eager[keep]) if what != "value" else 0.0
        _assert_matches(compiled[keep], eager[keep], f"torch.compile's {what}", scale)


@pytest.mark.parametrize("name", ["clamp", "softmax", "layer_norm", "batch_norm"])
def test_a_module_called_eagerly_first_compiles_whole(name: str) -> None:
    """A module called eagerly (which remembers its passed input check) and then compiled with
    fullgraph=True compiles without a graph break, and gives eager's output."""
    x, _, params = benchplan.inputs(name, 2**10)
    module = harness.build(name, "torch", **params)
    xt = torch.from_numpy(x).float()
    with torch.no_grad():
        eager = module(xt)
        compiled = torch.compile(module, fullgraph=True)(xt)
    assert compare(compiled.numpy(), eager.numpy(), COMPILED).ok


@pytest.mark.parametrize("name", ["softmax", "layer_norm", "rms_norm", "batch_norm"])
def test_a_compiled_module_takes_a_second_batch_size(name: str) -> None:
    """A second batch size makes dynamo recompile with a symbolic batch dimension (automatic
    dynamic shapes), and a module's float attributes (eps) become symbolic too, which a
    torch.cond branch could not close over. Compiled whole with dynamic shapes, forward and
    backward equal eager's, an infinite row included."""
    given = {"num_features": 16, "eps": 1e-6} if name != "softmax" else {"axis": -1}
    module = harness.build(name, "torch", **given)
    compiled = torch.compile(module, dynamic=True, fullgraph=True)
    for rows in (5, 9):
        x = torch.randn((rows, 16, 3) if name == "batch_norm" else (rows, 16))
        x[0, 0] = math.inf
        cotangent = torch.randn(x.shape)
        results = []
        for fn in (compiled, module):
            leaf = x.clone().requires_grad_(True)
            y = fn(leaf)
            grads = torch.autograd.grad(y, [leaf, *module.parameters()], cotangent)
            results.append([y.detach().numpy(), *(g.numpy() for g in grads)])
        for compiled_result, eager_result in zip(*results, strict=True):
            np.testing.assert_array_equal(np.isnan(compiled_result), np.isnan(eager_result))
            keep = ~np.isnan(eager_result)
            assert compare(compiled_result[keep], eager_result[keep], COMPILED, vjp_scale(eager_result[keep])).ok


@pytest.mark.parametrize("name", harness.names())
def test_a_second_input_size_compiles_whole(name: str) -> None:
    """Every technique, compiled with fullgraph=True and dynamic shapes left to dynamo: a second
    and a third input size (its automatic dynamic shapes, which make a module's float parameters
    symbolic too, see the test above) compile without a graph break and give eager's output
    and input VJP."""
    module = harness.build(name, "torch", **benchplan.inputs(name, 2**10)[2])
    compiled = torch.compile(module, fullgraph=True)
    for n in (2**10, 2**11, 2**12):
        x, cot, _ = benchplan.inputs(name, n)
        xt, ct = (torch.from_numpy(a).float() for a in (x, cot))
        results = []
        for fn in (compiled, module):
            leaf = xt.clone().requires_grad_(True)
            y = fn(leaf)
            (vjp,) = torch.autograd.grad(y, leaf, ct)
            results.append([y.detach().numpy(), vjp.numpy()])
        for what, got, want in zip(("value", "input VJP"), *results, strict=True):
            _assert_matches(got, want, f"{n} elements: compiled {what}", vjp_scale(want) if what != "value" else 0.0)


def _shapes(spec: harness.TechniqueSpec, params: dict) -> list[tuple[int, ...]]:
    """Shapes a module takes and shapes it refuses (rank too low, a wrong feature size)."""
    shape = input_shape(spec, params)
    shapes = [shape, (), (3,), (2, 3, 4, 5)]
    if spec.feature_axis is not None:
        wrong = list(shape)
        wrong[spec.feature_axis] += 1
        shapes.append(tuple(wrong))
    return shapes


@pytest.mark.parametrize("name", harness.names())
def test_the_compiled_input_check_decides_as_the_declaration(name: str) -> None:
    """Under torch.compile a module's input check decides from a few attributes made in
    advance (impl_torch._common.InputCheck, for its guards); they accept exactly the inputs the
    declaration's check_input accepts, for every dtype and for shapes it takes and refuses, and
    after a dtype move."""
    params = benchplan.inputs(name, 2**10)[2]
    spec = harness.get(name)
    module = harness.build(name, "torch", **params)
    for moved in (False, True):
        if moved:
            module = module.to(torch.float64)
        check = module._input
        for dtype_name, dtype in FRAMEWORK_DTYPES.items():
            for shape in _shapes(spec, check.params):
                x = torch.zeros(shape, dtype=dtype)
                try:
                    spec.check_input(dtype_name, shape, check.params, framework="torch")
                    accepted = True
                except (TypeError, ValueError):
                    accepted = False
                assert check.traced_takes(x) == accepted, f"{dtype_name} {shape} (moved: {moved})"


@pytest.mark.parametrize("name", ["softmax", "layer_norm", "rms_norm", "batch_norm"])
def test_a_compiled_module_refuses_an_input_with_eagers_error(name: str) -> None:
    params = benchplan.inputs(name, 2**10)[2]
    spec = harness.get(name)
    module = harness.build(name, "torch", **params)
    # A wrong feature size, or a rank below the least.
    shape = list(input_shape(spec, params))
    if spec.feature_axis is None:
        shape = shape[: spec.min_rank - 1]
    else:
        shape[spec.feature_axis] += 1
    x = torch.zeros(shape)
    with pytest.raises(ValueError) as eager:
        module(x)
    with pytest.raises(ValueError) as compiled:
        torch.compile(module)(x)
    assert str(compiled.value) == str(eager.value)


@pytest.mark.parametrize("name", harness.names())
def test_a_compiled_module_guards_on_no_declaration(name: str) -> None:
    """What dynamo guards on, it checks at every call of the compiled module: at 2^16 elements
    the guards of compiled rms_norm cost a third of nn.RMSNorm's time when the declaration's
    input check (harness.spec) and the norms' trust rule (harness.numerics) were traced.
    Neither is now."""
    x, _, params = benchplan.inputs(name, 2**10)
    names: list[str] = []

    def record(entries: list) -> list[bool]:
        names.extend(entry.name for entry in entries)
        return [True] * len(entries)

    module = harness.build(name, "torch", **params).requires_grad_(False)
    compiled = torch.compile(module, options={"guard_filter_fn": record})
    with torch.no_grad():
        # float32 passes straight through; float16 takes autocast_input, which reads the
        # declaration's autocast rule (where a technique takes float16: a module holding float16
        # parameters for the norms).
        compiled(torch.from_numpy(x).float())
        if module._input.rule.dtypes & {torch.float16}:
            compiled(torch.from_numpy(x).half())
    assert names, "no guards recorded: the filter was not called"
    assert not [n for n in names if "__import_harness_dot_spec" in n or "__import_harness_dot_numerics" in n]


@pytest.mark.parametrize("name", ["layer_norm", "rms_norm", "batch_norm"])
def test_a_compiled_module_moved_to_float64_refuses_float32_as_eager_does(name: str) -> None:
    """The compiled input check's rule moves with the module (InputCheck.forget): after
    .double(), a float32 input is refused with eager's error, not run on a stale rule."""
    x, _, params = benchplan.inputs(name, 2**10)
    module = harness.build(name, "torch", **params)
    compiled = torch.compile(module)
    compiled(torch.from_numpy(x).float())
    module.double()
    with pytest.raises(TypeError) as eager:
        module(torch.from_numpy(x).float())
    with pytest.raises(TypeError) as traced:
        compiled(torch.from_numpy(x).float())
    assert str(traced.value) == str(eager.value)
    assert compiled(torch.from_numpy(x)).dtype == torch.float64


def test_native_elementwise_compiled_alone_runs_no_kernel() -> None:
    """Where dynamo compiles _common.native_elementwise as a frame of its own (after
    torch.compile under vmap it skips the frames above and compiles their callees), the frame
    must decide as compiled code, in one graph: no kernel, whose buffer addresses would go stale
    there (NaN without an error, before the decision moved into this frame), but None, so that
    the technique's formula runs."""
    from impl_torch import _common

    leaky_clamp = harness.registry.implementation("leaky_clamp", "torch")
    params = {"lo": -1.0, "hi": 1.0, "slope": 0.01}
    torch._dynamo.reset()
    compiled = torch.compile(_common.native_elementwise, fullgraph=True)
    assert compiled(torch.linspace(-3.0, 3.0, 64), leaky_clamp.kernel, params) is None


def test_rms_norms_aten_kernel_compiled_alone_takes_the_composite() -> None:
    """Where dynamo compiles _native_rms_norm as a frame of its own, it cannot trace ATen's
    fused binding: the composite runs there, and agrees with eager's fused kernel."""
    from impl_torch import norms

    x = torch.from_numpy(benchplan.inputs("rms_norm", 2**12)[0]).float()
    w = torch.linspace(0.5, 2.0, x.shape[-1])
    torch._dynamo.reset()
    got = torch.compile(norms._native_rms_norm, fullgraph=True)(x, w, 1e-6)
    want = norms._native_rms_norm(x, w, 1e-6)
    for g, e, what in zip(got, want, ("value", "rstd"), strict=True):
        _assert_matches(g.numpy(), e.numpy(), f"compiled _native_rms_norm {what}")
