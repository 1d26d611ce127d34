"""The Triton kernels of PyTorch's eager CUDA path (impl_torch/_native/fused.py): which tensors
take them, and that the pass of ``nox -s tests`` that runs the generic tests through them (in
Triton's interpreter, OUTPUT_LIMITS_TRITON_CPU=1 TRITON_INTERPRET=1) really does.

Their values, derivatives, bounds, kinks and second order are the generic tests' and
tests/test_native.py's, run in that pass against the ATen formulas.
"""

from __future__ import annotations

import pytest
import torch
from cases import IN_TRITON_PASS, ON_CUDA

import harness
from harness import registry
from impl_torch import _decisions
from impl_torch._native import ELEMENTWISE, fused
from impl_torch._native import node as _node

# The techniques whose eager path has a one-pass kernel (the C one on the CPU, Triton on CUDA).
FUSED = ("smooth_clamp", "scaled_sigmoid", "scaled_tanh", "soft_clip", "leaky_clamp", "softsign")


def test_eager_cpu_takes_the_c_kernels_and_other_dtypes_neither(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_decisions, "TRITON_ON_CPU", False)
    x = torch.ones(4)
    assert not _decisions.runs_triton(x)
    assert not _decisions.triton_serves(x)
    assert not _decisions.triton_serves(torch.ones(4, dtype=torch.float64))
    assert _decisions.elementwise_serves(x) == _decisions.kernel_serves(x)
    assert fused.on_device_of(x) is fused._SAME_DEVICE  # no device context for a CPU tensor


def test_the_switch_turns_the_kernels_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPUT_LIMITS_TRITON", "0")
    fused.status.cache_clear()
    try:
        on, note = fused.status()
        assert not on and "OUTPUT_LIMITS_TRITON=0" in note
        assert not fused.available()
    finally:
        monkeypatch.undo()
        fused.status.cache_clear()


@pytest.mark.skipif(
    not (IN_TRITON_PASS or ON_CUDA),
    reason="the Triton pass of nox -s tests (interpreter on the CPU) and pytest --device cuda run this",
)
@pytest.mark.parametrize("name", FUSED)
def test_the_triton_pass_runs_the_triton_kernels(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert fused.available(), fused.status()[1]
    calls = []
    run = fused.run
    monkeypatch.setattr(fused, "run", lambda *args: calls.append(ELEMENTWISE[args[0].kind]) or run(*args))
    backend = harness.backend("torch")  # on the GPU under --device cuda
    x = (torch.linspace(-6.0, 6.0, 101, device=backend.device()) * 2.0).requires_grad_(True)
    y = backend.place(harness.build(name, "torch"))(x)
    # The C++ node records the kernel's output and derivative where it built.
    node = "output_limits::RecordedBackward" if _node.node().op else "_NativeElementwiseBackward"
    assert node in y.grad_fn.name(), y.grad_fn.name()
    (dx,) = torch.autograd.grad(y.sum(), x)
    with torch.no_grad():
        backend.place(harness.build(name, "torch"))(x)
    kind = "scaled_sigmoid" if name == "scaled_tanh" else name
    assert [c.removesuffix("_open") for c in calls] == [kind, kind], calls  # with autograd, then without
    assert torch.isfinite(dx).all()


@pytest.mark.skipif(
    not (IN_TRITON_PASS or ON_CUDA),
    reason="the Triton pass of nox -s tests (interpreter on the CPU) and pytest --device cuda run this",
)
def test_divide_is_the_correctly_rounded_quotient_zeros_kept() -> None:
    """The kernels' division that keeps zero dividends out of div.rn (fused_kernels.divide):
    the IEEE quotient bit for bit, signed zeros, a subnormal, overflow, 0 / NaN, 0 / 0 and
    zeros over negative divisors included."""
    from bench.division_probe import quotients

    nan, inf = float("nan"), float("inf")
    a = torch.tensor([0.0, -0.0, 1.0, -3.5, 1e-40, 3e38, 0.0, -0.0, 7.0, 2.0, -0.0, 5e-39, 0.0, 0.0, -0.0, 0.0])
    b = torch.tensor([3.0, 3.0, 3.0, 7.0, 3.0, 0.5, inf, 1e-30, 1e-30, 3.0, 0.25, 1e10, nan, 0.0, -3.0, -inf])
    device = harness.backend("torch").device()
    out = torch.empty_like(a, device=device)
    quotients[(1,)](a.to(device), b.to(device), out, a.numel(), GUARD=True, BLOCK=16)
    expected = a / b  # ATen's CPU division: IEEE's, correctly rounded
    same = (out.cpu().view(torch.int32) == expected.view(torch.int32)) | (out.cpu().isnan() & expected.isnan())
    assert same.all(), (out.cpu(), expected)


@pytest.mark.skipif(not IN_TRITON_PASS, reason="the Triton pass of nox -s tests runs this (Triton installed)")
def test_the_gpu_probe_runs(tmp_path) -> None:
    """bench/gpu_run.sh runs bench.gpu_probe on a lent GPU, where a failure costs device minutes:
    here it runs in Triton's interpreter, every measurement once (a check, not a measurement),
    and writes what it measured as it goes."""
    import json

    from bench import gpu_probe
    from impl_jax import _common

    kept = _common.CPU_FORMS
    record = gpu_probe._Recorder(tmp_path / "probe.json", seconds=1e-6)
    gpu_probe.probe_torch(record, "cpu", (10,))
    gpu_probe.probe_jax(record, "cpu", 10)
    names = {row["what"] for row in json.loads((tmp_path / "probe.json").read_text())["results"]}
    for name in gpu_probe.TECHNIQUES:
        for side in ("ours", "built-in"):
            assert {f"{name} {side} forward", f"{name} {side} forward+backward"} <= names, name
    for name in gpu_probe.JAX_TECHNIQUES:
        assert f"jax {name} ours forward+backward" in names and f"jax {name} built-in forward" in names, name
        assert f"jax {name} ours in the CPU's form forward+backward" in names, name
    assert kept == _common.CPU_FORMS, "the probe left the CPU's form on"
    assert {"copy", "div.rn, no zero", "div.rn, half zeros", "divide, half zeros"} <= names
    assert all(row.get("each_us", 0) > 0 and row.get("loop_us", 0) > 0 for row in record.results), [
        row for row in record.results if "error" in row
    ]
    record("a failing one", 8, lambda: 1 / 0, lambda out: None)  # recorded, not raised
    assert "ZeroDivisionError" in record.results[-1]["error"]


def test_a_module_takes_the_formula_where_no_kernel_serves() -> None:
    """Where no kernel serves the input (float64, a list), the module's bound kernel is not
    asked for, and its formula and input check run as without it: the same values as the
    technique's formula, the same error."""
    from impl_torch import modules

    def refuse() -> None:
        raise AssertionError("the kernel was asked for an input no kernel serves")

    module = harness.build("leaky_clamp", "torch")
    assert isinstance(module, modules.Limit) and module._kernel is not None
    module._kernel = refuse
    formula = registry.implementation("leaky_clamp", "torch").__wrapped__
    x = torch.linspace(-3.0, 3.0, 13, dtype=torch.float64)
    assert torch.equal(module(x), formula(x, **module.params))
    with pytest.raises(TypeError, match=r"takes a torch\.Tensor, got list"):
        module([0.5, 1.5])
