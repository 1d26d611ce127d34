"""The Triton kernels of PyTorch's eager CUDA norms and simplex maps (impl_torch/_native/rows.py,
and channels.py for batch_norm): which tensors take them, that they are the formula they replace
(values, input and weight gradients, second order) on the rows the declaration singles out, and
that the pass of ``nox -s tests`` that runs the generic tests through them (Triton's
interpreter, OUTPUT_LIMITS_TRITON_CPU=1 TRITON_INTERPRET=1) really does. Their bounds, limits
and parity with JAX are the generic tests', run in that pass.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cases import IN_TRITON_PASS, NUM_FEATURES, ON_CUDA, Case

import harness
from harness.tolerances import NORMWISE, Tolerance, compare, tolerance
from impl_torch import _decisions, norms, simplex
from impl_torch._native import channels, rows

ROW_TECHNIQUES = ("layer_norm", "rms_norm", "softmax", "log_softmax", "sparsemax")
needs_kernels = pytest.mark.skipif(
    not (IN_TRITON_PASS or ON_CUDA),
    reason="the Triton pass of nox -s tests (interpreter on the CPU) and pytest --device cuda run this",
)


def _device() -> str:
    return harness.backend("torch").device()


def test_eager_cpu_takes_no_row_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_decisions, "TRITON_ON_CPU", False)
    assert not _decisions.rows_serve(torch.ones(2, 4))


@needs_kernels
def test_what_the_row_kernels_take() -> None:
    x = torch.ones(3, 8, device=_device())
    assert _decisions.rows_serve(x)
    assert _decisions.rows_serve(x, torch.ones(8, device=_device()), None)
    assert not _decisions.rows_serve(x.double())
    assert not _decisions.rows_serve(x, torch.ones(8, dtype=torch.float64, device=_device()))
    assert not _decisions.rows_serve(x[:0])  # no rows: nothing to launch
    assert not _decisions.rows_serve(torch.ones((), device=_device()))
    assert not _decisions.rows_serve(torch.ones(1, rows.MAX_ROW + 1, device=_device()))
    assert _decisions.rows_serve(torch.ones(1, rows.MAX_ROW, device=_device()))
    with torch.autograd.forward_ad.dual_level():  # forward mode: the formula's rules
        assert not _decisions.rows_serve(x)
    # batch_norm's kernels have no row length: a last axis past MAX_ROW is only a long channel.
    wide = torch.empty(2, 3, rows.MAX_ROW + 1, device=_device())
    assert _decisions.norm_kernels_take(wide, (torch.ones(3, device=_device()),), 3) and channels.serves(wide)
    assert not _decisions.rows_serve(wide)


def _rows_of_every_kind(n: int, count: int) -> torch.Tensor:
    """``count`` rows of ``n``: ordinary ones, and each kind the declarations single out."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(count, n, generator=g) * 3.0
    x[0] = x[0].clamp_min(0.0)  # exact zeros, as after a ReLU (the kernels' divide keeps them)
    x[1] = 5.0  # constant
    x[2, n // 2] = math.inf
    x[3, -1] = 0.0  # a zero in a NaN row stays NaN (rms_norm: 0 / NaN)
    x[3, 0] = math.nan
    x[4] *= 1e37  # squares overflow: prescaled
    x[5] = -math.inf
    x[6, [0, n - 1]] = math.inf
    x[7] = x[7] * 1e-30  # eps dominates
    x[8] = 100.0 + x[8] / 3.0  # a mean large against the spread
    return x.to(_device())


def _formula(name: str):
    eps = 1e-5
    return {
        "layer_norm": lambda x, w, b: norms._layer_norm_formula(x, w, b, eps),
        "rms_norm": lambda x, w, b: norms._rms_norm_formula(x, w, eps)[0],
        "softmax": lambda x, w, b: simplex._softmax_formula(x, -1),
        "log_softmax": lambda x, w, b: simplex._log_softmax_formula(x, -1),
        "sparsemax": lambda x, w, b: simplex._sparsemax_formula(x, -1),
    }[name]


def _ours(name: str):
    eps = 1e-5
    return {
        "layer_norm": lambda x, w, b: norms.layer_norm(x, w, b, eps=eps),
        "rms_norm": lambda x, w, b: norms.rms_norm(x, w, eps=eps),
        "softmax": lambda x, w, b: simplex.softmax(x, axis=-1),
        "log_softmax": lambda x, w, b: simplex.log_softmax(x, axis=-1),
        "sparsemax": lambda x, w, b: simplex.sparsemax(x, axis=-1),
    }[name]


def _assert_close(ours: torch.Tensor, formula: torch.Tensor, name: str, quantity: str) -> None:
    """Row by row (their scales lie 60 binades apart), norm-wise at the declared float32 rtol:
    rounding apart. The kernels sum in another order, so every entry of a row carries an absolute
    error at the row's scale (log_softmax's z - log(sum) near 0, a weight gradient's column sum
    near 0), and a scale one binade apart near a power of two moves nothing but rounding."""
    declared = tolerance(name, "float32", quantity)
    tol = Tolerance(declared.rtol, "rounding apart, norm-wise per row", NORMWISE)
    for row, (a, b) in enumerate(zip(ours.cpu().numpy(), formula.cpu().numpy(), strict=True)):
        result = compare(a, b, tol)
        assert result.ok, f"{name} {quantity}, row {row}: {result}"


def _run(function, x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, g: torch.Tensor) -> list:
    """[output, dx, and dweight and dbias where given]."""
    inputs = [t.clone().requires_grad_(True) for t in (x, w, b) if t is not None]
    y = function(*inputs, *(None,) * (3 - len(inputs)))
    return [y.detach(), *torch.autograd.grad(y, inputs, g)]


@needs_kernels
@pytest.mark.parametrize("affine", [True, False], ids=["weights", "none"])
@pytest.mark.parametrize("n", [1, 37, 1024])
@pytest.mark.parametrize("name", ROW_TECHNIQUES)
def test_the_kernels_are_the_formula_on_every_kind_of_row(name: str, n: int, affine: bool) -> None:
    """Values and every gradient against the formula the kernels replace, with more rows than
    the backward has bands (its weight gradients summed across them)."""
    if name in rows.SIMPLEX and not affine:
        pytest.skip("no weights")
    if name == "rms_norm" and n == 1:
        # x / sqrt(x^2 + eps): its derivative eps / (x^2 + eps)^1.5 comes out of a cancellation
        # (1 - y^2) in the kernel and the formula alike, so the two differ by far more than
        # rounding relative to it; a one-entry layer_norm row is the constant-row rule instead.
        pytest.skip("ill-conditioned: a one-entry RMSNorm row's derivative cancels")
    x = _rows_of_every_kind(n, 21) if n > 1 else torch.randn(21, 1, device=_device())
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(x.device)
    weighted = affine and name in ("layer_norm", "rms_norm")
    w = torch.randn(n, device=x.device) if weighted else None
    b = torch.randn(n, device=x.device) if weighted and name == "layer_norm" else None
    (y, dx, *dw), (y_formula, dx_formula, *dw_formula) = (_run(f, x, w, b, g) for f in (_ours(name), _formula(name)))
    if not weighted and name in ("layer_norm", "rms_norm"):
        # Without weights the norms clamp to their declared bound (rounding in the formula may
        # step past it by an ulp; the straight-through gradient is the same).
        bound = math.sqrt(n - 1) if name == "layer_norm" else math.sqrt(n)
        y_formula = y_formula.clamp(-bound, bound)
    _assert_close(y, y_formula, name, "value")
    _assert_close(dx, dx_formula, name, "vjp")
    if n > 1:  # the NaN row makes the weight's gradient NaN, as the formula's: their values without it
        assert all(torch.equal(a.isnan(), b.isnan()) for a, b in zip(dw, dw_formula, strict=True))
        keep = torch.arange(len(x)) != 3
        _, _, *dw = _run(_ours(name), x[keep], w, b, g[keep])
        _, _, *dw_formula = _run(_formula(name), x[keep], w, b, g[keep])
    for ours, formula in zip(dw, dw_formula, strict=True):
        _assert_close(ours[None], formula[None], name, "vjp")


@needs_kernels
@pytest.mark.parametrize("name", ROW_TECHNIQUES)
def test_strided_inputs_and_weights(name: str) -> None:
    """A transposed input and a strided weight give what their contiguous copies give."""
    x = torch.randn(16, 5, device=_device()).T
    w = torch.randn(32, device=_device())[::2] if name in ("layer_norm", "rms_norm") else None
    g = torch.randn(5, 16, device=_device())
    ours = _run(_ours(name), x, w, None, g)
    copies = _run(_ours(name), x.contiguous(), None if w is None else w.contiguous(), None, g)
    for a, b in zip(ours, copies, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_kernels
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("name", ROW_TECHNIQUES)
def test_the_second_order_is_the_formulas(name: str, strided: bool) -> None:
    """A backward that is itself differentiated takes the formula's derivative: the kernels'
    per-row statistics are constants to autograd. Also from a transposed leaf, whose contiguous
    copy the kernels read but the second order must not."""
    x = torch.randn(5, 16, device=_device())
    g, v = torch.randn_like(x), torch.randn_like(x)
    seconds = []
    for function in (_ours(name), _formula(name)):
        leaf = (x.T.contiguous().T if strided else x.clone()).requires_grad_(True)
        (dx,) = torch.autograd.grad(function(leaf, None, None), leaf, g, create_graph=True)
        seconds.append(torch.autograd.grad(dx, leaf, v)[0])
    _assert_close(*seconds, name, "vjp")


@needs_kernels
@pytest.mark.parametrize("name", ROW_TECHNIQUES)
def test_the_triton_pass_runs_the_row_kernels(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    forward, backward = rows.forward, rows.backward
    monkeypatch.setattr(rows, "forward", lambda *a: calls.append(("forward", a[0].kind)) or forward(*a))
    monkeypatch.setattr(rows, "backward", lambda *a: calls.append(("backward", a[0].kind)) or backward(*a))
    module = Case(name, {}).build("torch")
    x = torch.randn(4, NUM_FEATURES, device=_device())
    leaf = x.clone().requires_grad_(True)
    y = module(leaf)
    assert type(y.grad_fn).__name__ == "_RowsBackward", y.grad_fn
    torch.autograd.grad(y, leaf, torch.randn_like(y))
    with torch.no_grad():
        module(x)
    assert calls == [("forward", name), ("backward", name), ("forward", name)], calls


@needs_kernels
def test_a_softmax_along_another_axis_takes_the_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows, "forward", lambda *a: pytest.fail("the row kernels ran along axis 0"))
    x = torch.randn(5, 3, device=_device())
    torch.testing.assert_close(simplex.softmax(x, axis=0), torch.softmax(x, dim=0))


@pytest.mark.skipif(not IN_TRITON_PASS, reason="the Triton pass of nox -s tests (Triton installed) runs this")
def test_the_kernels_compile_for_a_gpu() -> None:
    """Every kernel variant the eager CUDA path launches compiles for an sm_90 GPU (Triton's own
    ptxas, no GPU needed), with correctly rounded division and square root in the norms: the
    interpreter that runs them here accepts code the compiler refuses."""
    pytest.importorskip("triton.backends.nvidia")
    script = Path(__file__).with_name("kernels_for_gpu.py")
    root = str(script.parent.parent)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    *lines, total = done.stdout.splitlines()
    assert total == f"{len(lines)} variants" and len(lines) > 50, done.stdout
    assert all("compiled" in line for line in lines), done.stdout
    norms = [line for line in lines if line.startswith("norm_forward")]
    assert norms and all("div.rn.f32 sqrt.rn.f32" in line for line in norms), norms


def _batch_norm(function):
    def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> tuple:
        return function(x, w, b, mean, var, True, 0.1, 1e-5)

    return run


_BATCH_NORM = _batch_norm(lambda *a: norms.batch_norm(*a[:5], training=a[5], momentum=a[6], eps=a[7]))
_BATCH_NORM_FORMULA = _batch_norm(norms._batch_norm_formula)


def _run_batch_norm(function, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, g: torch.Tensor) -> list:
    """[output, new running mean and variance, dx, dweight, dbias], the channels first."""
    mean, var = torch.linspace(-1.0, 1.0, x.shape[1]).to(x.device), torch.linspace(0.5, 2.0, x.shape[1]).to(x.device)
    inputs = [t.clone().requires_grad_(True) for t in (x, w, b)]
    y, new_mean, new_var = function(*inputs, mean, var)
    dx, dw, db = torch.autograd.grad(y, inputs, g)

    def channels_first(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(0, 1).reshape(t.shape[1], -1)

    return [
        channels_first(y.detach()),
        new_mean[:, None],
        new_var[:, None],
        channels_first(dx),
        dw[:, None],
        db[:, None],
    ]


@needs_kernels
@pytest.mark.parametrize("inner", [1, 6], ids=["2d", "3d"])
@pytest.mark.parametrize("m", [3, 300])
def test_the_batch_norm_kernels_are_the_formula_on_every_kind_of_channel(m: int, inner: int) -> None:
    """Values, running statistics and every gradient against the formula, per channel, with
    more rows than a band (the bands' partial results combined) and with three (with two, the
    input gradient is a cancellation to zero, rounding against rounding); for (batch, channels)
    and (batch, channels, length) inputs, the same values per channel."""
    if m == 3 and inner > 1:
        pytest.skip("three values per channel: one shape is enough")
    x = _rows_of_every_kind(m, 37).T.contiguous() if m > 3 else torch.randn(3, 37, device=_device())
    if m > 3:  # a mean 90 times the spread, not 300: both round the mean, apart by 1e-5 of it
        x[:, 8] = 30.0 + x[:, 8] / 10.0
    x[:, 11] = 3.0e38  # the plain sum overflows: the sum of x * 2^-64 takes over
    x[:, 12] = -3.0e38
    x[0, 13], x[-1, 13] = -math.inf, math.inf  # +inf and -inf: limit values that cancel
    # Largest magnitude between 1 and 2 (scale 1/2, where 1 at most gives 1) in one tile only.
    x[:, 14] = torch.linspace(-0.9, 0.9, m, device=x.device)
    x[-1, 14] = 1.5
    if inner > 1:  # value [n, c, l] = x[n * inner + l, c]: each channel's values, rearranged
        x = x.reshape(m // inner, inner, 37).transpose(1, 2).contiguous()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(x.device)
    w, b = torch.randn(37, device=x.device), torch.randn(37, device=x.device)
    ours = _run_batch_norm(_BATCH_NORM, x, w, b, g)
    formula = _run_batch_norm(_BATCH_NORM_FORMULA, x, w, b, g)
    for a, f in zip(ours[:4], formula[:4], strict=True):
        if m == 3:  # one scale: norm-wise over all channels (three values cancel to small ones)
            a, f = a.reshape(1, -1), f.reshape(1, -1)
        _assert_close(a, f, "batch_norm", "vjp")
    # The weight gradients norm-wise over the channels (sums that cancel); the NaN channel's is
    # NaN in both.
    for a, f in zip(ours[4:], formula[4:], strict=True):
        _assert_close(a.T, f.T, "batch_norm", "vjp")


@needs_kernels
def test_the_batch_norm_kernels_take_strided_inputs_and_differentiate_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    forward, backward = channels.forward, channels.backward
    monkeypatch.setattr(channels, "forward", lambda *a: calls.append("forward") or forward(*a))
    monkeypatch.setattr(channels, "backward", lambda *a: calls.append("backward") or backward(*a))
    x = torch.randn(8, 70, device=_device()).T  # (70, 8), not contiguous
    w, b = torch.randn(16, device=_device())[::2], torch.randn(8, device=_device())
    g = torch.randn(70, 8, device=_device())
    strided = _run_batch_norm(_BATCH_NORM, x, w, b, g)
    assert calls == ["forward", "backward"], calls
    copied = _run_batch_norm(_BATCH_NORM, x.contiguous(), w.contiguous(), b, g)
    for a, c in zip(strided, copied, strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    seconds = []
    for function in (_BATCH_NORM, _BATCH_NORM_FORMULA):
        leaf = x.clone().requires_grad_(True)
        y = function(leaf, w, b, torch.zeros(8, device=x.device), torch.ones(8, device=x.device))[0]
        (dx,) = torch.autograd.grad(y, leaf, g, create_graph=True)
        seconds.append(torch.autograd.grad(dx, leaf, g)[0].T)
    _assert_close(*seconds, "batch_norm", "vjp")


@needs_kernels
def test_the_batch_norm_module_takes_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module in training mode runs them and keeps its running statistics as the formula
    would, for a (batch, channels) input and a (batch, channels, length) one (strided tiles, the
    formula's values); eval mode takes the formula."""
    calls = []
    forward = channels.forward
    monkeypatch.setattr(channels, "forward", lambda *a: calls.append("forward") or forward(*a))
    module = Case("batch_norm", {}).build("torch")
    x = torch.randn(32, NUM_FEATURES, device=_device()) * 3.0 + 1.0
    module(x)
    assert calls == ["forward"], calls
    expected_mean = 0.1 * x.mean(0)
    expected_var = 0.9 + 0.1 * x.var(0, correction=1)
    torch.testing.assert_close(module.running_mean, expected_mean)
    torch.testing.assert_close(module.running_var, expected_var)
    wide = torch.randn(4, NUM_FEATURES, 5, device=_device()) * 2.0
    y = module(wide)
    assert calls == ["forward", "forward"], calls
    formula = norms._batch_norm_formula(wide, module.weight, module.bias, expected_mean, expected_var, True, 0.1, 1e-5)
    _assert_close(y.detach().transpose(0, 1).reshape(NUM_FEATURES, -1), formula[0].detach().transpose(0, 1).reshape(
        NUM_FEATURES, -1), "batch_norm", "value")  # fmt: skip
    torch.testing.assert_close(module.running_mean, formula[1])
    torch.testing.assert_close(module.running_var, formula[2])
    module.eval()
    module(x)
    assert calls == ["forward", "forward"], calls


@needs_kernels
def test_weights_of_another_shape_take_the_formula_and_its_error() -> None:
    x = torch.randn(2, 16, device=_device())
    short = torch.ones(8, device=_device())
    assert not _decisions.rows_serve(x, short)
    assert not _decisions.rows_serve(x, torch.ones(1, device=_device()))
    with pytest.raises(RuntimeError):
        norms.layer_norm(x, short, short, eps=1e-5)


@needs_kernels
def test_a_bias_without_a_weight_gets_no_gradient() -> None:
    """As the formula: without a weight there is no affine step, so the output ignores the bias."""
    x = torch.randn(3, 8, device=_device(), requires_grad=True)
    b = torch.randn(8, device=_device(), requires_grad=True)
    y = norms.layer_norm(x, None, b, eps=1e-5)
    torch.testing.assert_close(y, norms._layer_norm_formula(x, None, None, 1e-5), rtol=2e-6, atol=2e-6)
    assert torch.autograd.grad(y.sum(), b, allow_unused=True)[0] is None


@needs_kernels
def test_the_prescaling_power_is_the_formulas_beside_every_power_of_two() -> None:
    """The kernels' scale (from the bits) against the formula's, floor(log2 amax) - 1 with log2
    rounded to float32, for largest magnitudes 0 to 200 ulps below 2^(e + 1): the rounded log2
    names e + 1 there within about ln 2 ulps of the values below e + 1 (44 below 2^128, the
    float32 maximum's case)."""
    amaxes = []
    for e in (1, 2, 19, 63, 64, 99, 127):
        top = torch.tensor(2.0 ** (e + 1) if e < 127 else 3.4028234663852886e38, dtype=torch.float64)
        step = 2.0 ** (e - 23)
        amaxes += [(top - j * step) for j in range(0 if e < 127 else 1, 201)]
    amax = torch.stack(amaxes).float()
    assert amax.isfinite().all()
    x = torch.stack([amax, -amax / 3.0, amax / 7.0], dim=-1).to(_device())
    _, stats = rows.forward(rows.RowMap("layer_norm", 1e-5, 1.0, _formula("layer_norm")), x, None, None)
    expected = (amax.log2().floor() - 1.0).exp2()
    mismatched = (stats[0].cpu() != expected).nonzero().reshape(-1)
    assert mismatched.numel() == 0, [(float(amax[i]), float(stats[0, i]), float(expected[i])) for i in mismatched[:5]]
    # And the float32 maximum's constant row: its derivative is proportional to 1 / scale.
    big = torch.full((1, 3), 3.4028234663852886e38, device=_device())
    g = torch.tensor([[1.0, -2.0, 0.5]], device=_device())
    ours, formula = (_run(f, big, None, None, g) for f in (_ours("layer_norm"), _formula("layer_norm")))
    torch.testing.assert_close(ours[1], formula[1], rtol=1e-5, atol=0)


@needs_kernels
def test_log_softmax_keeps_the_declared_tolerance_near_zero() -> None:
    """Against float64, entry by entry (not norm-wise): the output near 0 is minus the log of a
    sum near 1, which the kernel takes as log1p of the rest."""
    g = torch.Generator().manual_seed(2)
    # One entry well above the others: a sum of 1 + 1e-3 or so, whose rounding at 1 the naive
    # log(sum) keeps (1e-5 of the entry's -log(sum)).
    x = torch.cat([torch.zeros(64, 1), -5.0 - 7.0 * torch.rand(64, 36, generator=g)], dim=-1).to(_device())
    y = simplex.log_softmax(x, axis=-1)
    reference = torch.log_softmax(x.double(), dim=-1)
    result = compare(y.cpu().numpy(), reference.cpu().numpy(), tolerance("log_softmax", "float32", "value"))
    assert result.ok, result


def test_what_the_batch_norm_kernels_take() -> None:
    """Two values per channel at least, and at most MAX_CHANNELS channels: the kernels address
    their per-band results in 32 bits (7 * bands * channels below 2^31)."""
    assert channels.serves(torch.empty(2, 3)) and channels.serves(torch.empty(1, 3, 2))
    assert not channels.serves(torch.empty(1, 3)) and not channels.serves(torch.empty(3))
    assert not channels.serves(torch.empty(2, channels.MAX_CHANNELS + 1))
    assert 7 * channels.MAX_BANDS * channels.MAX_CHANNELS < 2**31


@needs_kernels
@pytest.mark.parametrize("ratio", [1e2, 1e3])
def test_the_batch_norm_variance_is_two_pass(ratio: float) -> None:
    """The running variance against float64 where the mean is ``ratio`` times the spread, within
    the declared float32 value tolerance, over several bands: the variance is summed about the
    channel's mean (a pass of its own), as the formula's. Combining each tile's statistics by
    Chan's rule instead (one pass fewer) missed it from a ratio of about 300 (2.4e-5 at 1e3):
    each combination's delta is a difference of two rounded means. (At 1e4 the float32 mean's
    own rounding costs 6e-6 here, the formula's alike.)"""
    g = torch.Generator().manual_seed(3)
    x = (ratio + torch.randn(2000, 8, generator=g, dtype=torch.float64)).to(_device())
    x32 = x.float()
    ones, zeros = torch.ones(8, device=x.device), torch.zeros(8, device=x.device)
    _, new, _ = channels.forward(x32, ones, zeros, zeros, zeros, 1.0, 1e-5)
    expected = x32.double().var(dim=0, correction=1)
    result = compare(new[1].cpu().numpy(), expected.cpu().numpy(), tolerance("batch_norm", "float32", "value"))
    assert result.ok, result
