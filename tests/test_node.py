"""The C++ autograd nodes of the elementwise kernels, the clamps and hardsigmoid (impl_torch/_native/node.py,
_native/node.cpp) against the Python Functions they replace: the same output, first-order VJP and second order, bit
for bit; used where it built; cached; and off, with the Function taking over, where it cannot
build."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from cases import Case

import harness
from impl_torch import _common
from impl_torch import _native as native
from impl_torch._decisions import runs_triton
from impl_torch._native import node as _node

pytestmark = pytest.mark.skipif(
    os.environ.get("OUTPUT_LIMITS_NATIVE") == "0" or native._compiler() is None or _node._compiler() is None,
    reason="native kernels or C++ compiler off here: the Python Function or the ATen formula runs",
)

TECHNIQUES = ("smooth_clamp", "scaled_sigmoid", "scaled_tanh", "soft_clip", "leaky_clamp", "softsign")
CASES = [Case(name, dict(given)) for name in TECHNIQUES for given in [{}, *harness.get(name).examples]]


def _points(rng: np.random.Generator) -> torch.Tensor:
    big = np.finfo(np.float32).max
    edges = np.array([0.0, -0.0, 1.0, -1.0, 1e-30, big, -big, np.inf, -np.inf, np.nan], np.float32)
    return torch.from_numpy(np.concatenate([edges, rng.normal(scale=3.0, size=2048).astype(np.float32)]))


def _three_orders(
    case: Case, x: torch.Tensor, g: torch.Tensor, v: torch.Tensor, dtype: str = "float32"
) -> tuple[torch.Tensor, ...]:
    """Output, VJP with ``g``, and the derivative of <VJP, v> (second order), of ``case`` on ``x``."""
    module = case.build("torch", dtype)
    leaf = x.clone().requires_grad_(True)
    y = module(leaf)
    (dx,) = torch.autograd.grad(y, leaf, g, create_graph=True)
    (ddx,) = torch.autograd.grad(dx, leaf, v)
    first = torch.autograd.grad(module(leaf), leaf, g)[0]  # without create_graph: grad * d
    return y.detach(), first, dx.detach(), ddx


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}-{c.given}")
def test_node_equals_the_python_function(case: Case, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both run the same kernel and, for second order, the same rule: equal bits, NaN included."""
    x = _points(rng)
    g, v = (torch.from_numpy(rng.normal(size=x.shape).astype(np.float32)) for _ in range(2))
    with_node = _three_orders(case, x, g, v)
    monkeypatch.setattr(_node, "node", lambda: _node.Node(None, "off: this test"))
    without = _three_orders(case, x, g, v)
    for name, a, b in zip(("output", "VJP", "VJP under create_graph", "second order"), with_node, without, strict=True):
        assert torch.equal(a.isnan(), b.isnan()), f"{case.name}: {name} NaN in different places"
        assert torch.equal(a.nan_to_num(), b.nan_to_num()), f"{case.name}: {name} differs with the node"


# The node of the clamps and hardsigmoid (its backward a loop of its own on the CPU in float32 and
# float64, ATen's op and a select elsewhere), with the name its backward shows.
INSIDE = {
    "hardsigmoid": "Hardsigmoid", "clamp": "ClampInside", "hardtanh": "ClampInside", "relu6": "ClampInside",
    "bounded_relu": "ClampInside",
}  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("name", INSIDE)
def test_clamp_and_hardsigmoid_nodes_equal_the_python_function(
    name: str, dtype: str, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The declared rule as the Function computes it, bit for bit, at and beside the kinks, with
    NaN among the points (NaN in the VJP there: the lanes of a vector loop and its tail alike)."""
    case = Case(name, {})
    kinks = [k.x for k in harness.get(name).kinks()]
    x = torch.cat([torch.tensor([*kinks, *(k + 0.5 for k in kinks), *(k - 0.5 for k in kinks), float("nan")]),
                   _points(rng)]).to(getattr(torch, dtype))  # fmt: skip
    g, v = (torch.from_numpy(rng.normal(size=x.shape).astype(np.float32)).to(x.dtype) for _ in range(2))
    with_node = _three_orders(case, x, g, v, dtype)
    assert INSIDE[name] in case.build("torch", dtype)(x.clone().requires_grad_(True)).grad_fn.name()
    assert with_node[1].isnan().equal(x.isnan()), "the VJP is NaN exactly at NaN inputs"
    monkeypatch.setattr(_node, "node", lambda: _node.Node(None, "off: this test"))
    for what, a, b in zip(("output", "VJP", "VJP under create_graph", "second order"), with_node,
                          _three_orders(case, x, g, v, dtype), strict=True):  # fmt: skip
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()), what


@pytest.mark.parametrize("name", TECHNIQUES)
def test_node_runs_where_autograd_records(name: str) -> None:
    assert _node.node().op is not None, _node.node().note
    module = harness.build(name, "torch")
    x = torch.linspace(-3.0, 3.0, 64)
    y = module(x.requires_grad_(True))
    # The C kernel's node, or the one that records what a Triton kernel wrote (the Triton pass).
    assert ("Recorded" if runs_triton(x) else "Elementwise") in y.grad_fn.name(), y.grad_fn.name()
    with torch.no_grad():
        assert module(torch.linspace(-3.0, 3.0, 64)).grad_fn is None


def test_the_recorded_node_is_the_given_output_and_derivative(rng: np.random.Generator) -> None:
    """The Triton kernels' node (any device: run here on given tensors): its output is y's
    memory, not a view of it, so that in-place ops may change it, its VJP is grad * d bit for bit,
    and its second order is the technique's rule, through the rule's number."""
    node = _node.node()
    assert node.recorded is not None, node.note
    x, y, d, g, v = (torch.from_numpy(rng.normal(size=64).astype(np.float32)) for _ in range(5))
    number = _node.number(lambda x, grad: grad * torch.sin(x))  # a rule whose derivative is not zero
    leaf = x.clone().requires_grad_(True)
    out = node.recorded(leaf, y, d, number)
    assert "Recorded" in out.grad_fn.name() and not out._is_view() and torch.equal(out.detach(), y)
    (dx,) = torch.autograd.grad(out, leaf, g, retain_graph=True)
    assert torch.equal(dx, g * d)
    (dx,) = torch.autograd.grad(out, leaf, g, create_graph=True)
    (ddx,) = torch.autograd.grad(dx, leaf, v)
    assert torch.equal(dx.detach(), g * torch.sin(x)) and torch.allclose(ddx, g * torch.cos(x) * v)
    given = y.clone()
    out.mul_(2.0)  # the result is the caller's to change (in y's memory, which the caller gave up)
    assert torch.equal(out.detach(), 2.0 * given)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_hardsigmoid_off_the_cpu_takes_the_node_except_in_float64(dtype: str) -> None:
    """Off the CPU (a meta tensor stands in for CUDA's here) the node serves where ATen's
    forward is the declaration: every dtype but float64 (see clamps._hardsigmoid_values)."""
    from impl_torch.clamps import hardsigmoid

    y = hardsigmoid(torch.zeros(4, dtype=getattr(torch, dtype), device="meta").requires_grad_(True))
    node = "_HardsigmoidBackward" if dtype == "float64" else "output_limits::HardsigmoidBackward"
    assert node in y.grad_fn.name(), y.grad_fn.name()


def test_node_is_cached_per_torch_and_compiler(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second build finds the first one's library instead of compiling again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    compiler = _node._compiler()
    first = _node._build(compiler)
    assert first.parent == tmp_path / "output-limits"
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(_node.subprocess, "run", _refuse_compiling(_node.subprocess.run))
    assert _node._build(compiler) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir()] == [first.name], "a build folder was left behind"


def _refuse_compiling(run):  # --version is fine (the cache key), a compile is not
    def checked(command, *args, **kwargs):
        assert "--version" in command, f"compiled again: {command}"
        return run(command, *args, **kwargs)

    return checked


def test_a_failing_build_turns_the_node_off_and_the_function_serves(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a compiler that fails every build
    monkeypatch.setattr(_node, "node", _node.node.__wrapped__)  # uncached: build now
    with pytest.warns(RuntimeWarning, match="C\\+\\+ node did not build"):
        off = _node.node()
    assert off.op is None and off.note.startswith("off:")
    monkeypatch.setattr(_node, "node", lambda: off)
    x = torch.linspace(-3.0, 3.0, 64).requires_grad_(True)
    y = harness.build("smooth_clamp", "torch")(x)
    assert type(y.grad_fn).__name__ == "_NativeElementwiseBackward", y.grad_fn


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPUT_LIMITS_NATIVE_NODE", "0")
    assert _node.node.__wrapped__().op is None


def test_kernel_addresses_are_the_kernels() -> None:
    """The node calls the kernel found at the address _native gives: the same output as ctypes."""
    kernel = _common.native_kernel("softsign", (), lambda x, g: g).kernel
    x = torch.linspace(-5.0, 5.0, 101)
    y = torch.empty_like(x)
    kernel(x.data_ptr(), y.data_ptr(), None, x.numel(), 1)
    out = _node.node().op(x.clone().requires_grad_(True), kernel.address, kernel.params_address, 0)
    assert torch.equal(out.detach(), y)


@pytest.mark.parametrize("name", TECHNIQUES)
def test_the_values_op_is_the_kernel_without_autograd(
    name: str, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without autograd (an input that requires grad under no_grad included), the output comes
    from the node's values op, the kernel's output alone: the same bits as the kernel through
    ctypes where the op is off, for strided and empty inputs too."""
    x = _points(rng)
    if runs_triton(x):
        pytest.skip("the Triton kernels take eager CPU float32 here (OUTPUT_LIMITS_TRITON_CPU=1)")
    node = _node.node()
    assert node.values is not None, node.note
    calls: list[int] = []

    def counted(*args: object) -> torch.Tensor:
        calls.append(1)
        return node.values(*args)

    module = harness.build(name, "torch")
    given = [x, x[::3], x[:0], x[:2048].reshape(-1, 2).t(), x.clone().requires_grad_(True)]
    with torch.no_grad():
        monkeypatch.setattr(_node, "node", lambda: node._replace(values=counted))
        got = [module(g) for g in given]
        assert len(calls) == len(given), "the values op did not serve every call"
        monkeypatch.setattr(_node, "node", lambda: node._replace(values=None))
        want = [module(g) for g in given]
    assert len(calls) == len(given)
    for g, a, b in zip(given, got, want, strict=True):
        assert a.shape == g.shape and not a.requires_grad
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()), name


@pytest.mark.parametrize("name", ["smooth_clamp", "hardsigmoid", "clamp"])
def test_compiled_autograd_is_refused_with_the_way_out_which_works(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C++ nodes refuse compiled autograd (a plain node's ATen calls would run on its
    placeholders) with a message naming the switch; with the node off, the Python Function
    records the kernels and compiled autograd gives eager's gradient."""
    from torch._dynamo import compiled_autograd

    module = harness.build(name, "torch")
    x = torch.linspace(-3.0, 3.0, 64).requires_grad_(True)
    (want,) = torch.autograd.grad(module(x).sum(), x)
    y = module(x)
    assert "output_limits::" in y.grad_fn.name()
    with (
        compiled_autograd._enable(torch.compile(backend="eager")),
        pytest.raises(NotImplementedError, match="OUTPUT_LIMITS_NATIVE_NODE=0"),
    ):
        y.sum().backward()
    monkeypatch.setattr(_node, "node", lambda: _node.Node(None, "off: test"))
    y = module(x)
    assert "output_limits::" not in y.grad_fn.name()
    with compiled_autograd._enable(torch.compile(backend="eager")):
        y.sum().backward()
    assert torch.equal(x.grad, want)
