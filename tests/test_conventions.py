"""Defaults mean what PyTorch means: checked against torch.nn's own layers and against Flax's
documented differences, so a change of convention on either side is caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import harness
from impl_torch.adapter import FRAMEWORK_DTYPES


def test_layer_norm_defaults_match_torch_nn_layer_norm(rng: np.random.Generator) -> None:
    # Small variance: torch's eps 1e-5 vs Flax's 1e-6 would differ in the first digit here.
    x = rng.normal(size=(4, 16)) * 1e-3 + 100.0
    expected = torch.nn.LayerNorm(16, dtype=torch.float64)(torch.from_numpy(x)).detach().numpy()
    for framework in harness.FRAMEWORKS:
        backend = harness.backend(framework)
        module = harness.build("layer_norm", framework, num_features=16, dtype="float64")
        y = backend.to_numpy(module(backend.from_numpy(x, "float64")))
        np.testing.assert_allclose(y, expected, rtol=1e-9, atol=1e-9, err_msg=framework)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_rms_norm_defaults_match_torch_nn_rms_norm(dtype: str, rng: np.random.Generator) -> None:
    # Mean square 1e-4, within a few orders of every candidate eps: float16's epsilon (1e-3)
    # instead of the float32 one torch.nn.RMSNorm adds for a float16 input moves outputs by ~2.
    x = rng.normal(size=(4, 16)) * 1e-2
    reference = torch.nn.RMSNorm(16, dtype=FRAMEWORK_DTYPES[dtype])
    expected = reference(harness.backend("torch").from_numpy(x, dtype)).detach().double().numpy()
    rtol = {"float64": 1e-12, "float32": 1e-6, "float16": 2e-3, "bfloat16": 1.6e-2}[dtype]  # 2 ulps
    for framework in harness.FRAMEWORKS:
        backend = harness.backend(framework)
        module = harness.build("rms_norm", framework, num_features=16, dtype=dtype)
        y = backend.to_numpy(module(backend.from_numpy(x, dtype)))
        np.testing.assert_allclose(y, expected, rtol=rtol, atol=rtol, err_msg=framework)


def test_layer_norm_is_stable_where_fast_variance_fails(rng: np.random.Generator) -> None:
    # x = 100 + 0.1 * noise in float32: E[x^2] - E[x]^2 loses every digit; two-pass does not.
    x = 100.0 + 0.1 * rng.normal(size=(8, 32))
    exact = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    for framework in harness.FRAMEWORKS:
        backend = harness.backend(framework)
        module = harness.build("layer_norm", framework, num_features=32)
        y = backend.to_numpy(module(backend.from_numpy(x, "float32")))
        np.testing.assert_allclose(y, exact, atol=2e-3, err_msg=framework)


def test_batch_norm_running_statistics_match_torch_nn_batch_norm(rng: np.random.Generator) -> None:
    reference = torch.nn.BatchNorm1d(6, momentum=0.1, dtype=torch.float64)
    modules = {fw: harness.build("batch_norm", fw, num_features=6, dtype="float64") for fw in harness.FRAMEWORKS}
    for _ in range(3):
        x = rng.normal(size=(10, 6)) * 3 + 1
        expected = reference(torch.from_numpy(x)).detach().numpy()
        for fw, module in modules.items():
            backend = harness.backend(fw)
            y = backend.to_numpy(module(backend.from_numpy(x, "float64")))
            np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12, err_msg=fw)
    for fw, module in modules.items():
        state = harness.backend(fw).get_state(module)
        # Unbiased running variance, momentum weighting the new batch: PyTorch's meaning.
        np.testing.assert_allclose(state["running_mean"], reference.running_mean.numpy(), rtol=1e-12, err_msg=fw)
        np.testing.assert_allclose(state["running_var"], reference.running_var.numpy(), rtol=1e-12, err_msg=fw)
    reference.eval()
    x = rng.normal(size=(3, 6))
    expected = reference(torch.from_numpy(x)).detach().numpy()
    for fw, module in modules.items():
        module.eval()
        backend = harness.backend(fw)
        np.testing.assert_allclose(
            backend.to_numpy(module(backend.from_numpy(x, "float64"))), expected, rtol=1e-10, err_msg=fw
        )


def test_softmax_rows_with_infinities_take_their_limit() -> None:
    x = np.array([[np.inf, 0.0, np.inf, -np.inf], [-np.inf] * 4, [np.nan, 0.0, 1.0, 2.0]])
    expected = np.array([[0.5, 0.0, 0.5, 0.0], [0.25] * 4, [np.nan] * 4])
    for framework in harness.FRAMEWORKS:
        backend = harness.backend(framework)
        y = backend.to_numpy(harness.build("softmax", framework)(backend.from_numpy(x, "float64")))
        np.testing.assert_array_equal(y, expected, err_msg=framework)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_rows_holding_an_infinity_are_found_wherever_it_sits(name: str, rng: np.random.Generator) -> None:
    """Rows of 1024 (ATen's vector path), the infinity or NaN away from the first entry, which
    PyTorch's guard reads; in float32 and float64, values and gradients."""
    x = rng.normal(size=(8, 1024))
    x[2, 500], x[3, [7, 900]], x[5, 700], x[6] = np.inf, np.inf, np.nan, -np.inf
    g = rng.normal(size=x.shape)
    limit = np.zeros_like(x)
    limit[2, 500], limit[3, [7, 900]], limit[6] = 1.0, 0.5, 1.0 / 1024
    if name == "log_softmax":
        with np.errstate(divide="ignore"):
            limit = np.log(limit)
    for dtype in ("float64", "float32"):
        for framework in harness.FRAMEWORKS:
            module = harness.build(name, framework)
            y, dx, _ = harness.backend(framework).vjp(module, x, g, dtype)
            for row in (2, 3, 6):
                np.testing.assert_array_equal(y[row], limit[row].astype(dtype), err_msg=f"{framework} {dtype}")
                np.testing.assert_array_equal(dx[row], 0.0, err_msg=f"{framework} {dtype}: infinite rows pass none")
            assert np.isnan(y[5]).all() and np.isnan(dx[5]).all(), f"{framework} {dtype}: a NaN row stays NaN"
            usual = [0, 1, 4, 7]
            assert np.isfinite(y[usual]).all() and np.isfinite(dx[usual]).all(), f"{framework} {dtype}"


def test_smooth_clamp_gradient_stays_positive_far_into_the_tails() -> None:
    # Defaults: tails of width r = 0.5 beyond +-0.5. At x = 20 (39 r past the join) tanh's
    # 1 - y^2 would be exactly 0 in float32; the declared 4 s (1 - s) is not.
    x = np.array([-20.0, -10.0, 10.0, 20.0])
    for framework in harness.FRAMEWORKS:
        _, dx, _ = harness.backend(framework).vjp(harness.build("smooth_clamp", framework), x, np.ones(4), "float32")
        assert (dx > 0).all(), f"{framework}: {dx}"


def test_gradients_at_nan_inputs_agree() -> None:
    # Not a modelled point, but both frameworks must still say the same thing there.
    x = np.array([np.nan, 0.5, -3.0])
    for name in ("clamp", "bounded_relu", "smooth_clamp", "sigmoid", "tanh"):
        grads = [
            harness.backend(fw).vjp(harness.build(name, fw), x, np.ones(3), "float64")[1] for fw in harness.FRAMEWORKS
        ]
        np.testing.assert_array_equal(grads[0], grads[1], err_msg=name)


def test_known_divergences_still_exist_and_are_in_the_readme() -> None:
    import jax
    import jax.numpy as jnp

    from harness.divergences import DIVERGENCES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for divergence in DIVERGENCES:
        assert f"`{divergence.name}`" in readme, f"README does not list {divergence.name}"
    # subnormals-flushed-by-xla-cpu: if XLA stops flushing, drop the divergence and its workaround.
    tiny = np.float32(1e-40)
    if jax.default_backend() == "cpu":
        assert float(jax.nn.relu(jnp.float32(tiny))) == 0.0
    assert float(torch.relu(torch.tensor(tiny))) == float(tiny)
    # tanh-and-erf-not-monotone-on-xla-cpu: if XLA's tanh becomes monotone, drop the exemption.
    if jax.default_backend() == "cpu":
        y = np.asarray(jnp.tanh(jnp.linspace(-8.0, -7.9, 20001, dtype=jnp.float32)))
        assert (y[1:] < y[:-1]).any(), "XLA's tanh is monotone now: remove the divergence and its exemption"
    # max-drops-nan-on-xla-cpu: if XLA's max keeps NaN, the note can go (the sum-based mask stays right).
    if jax.default_backend() == "cpu":
        rows = np.random.default_rng(0).normal(size=(6, 1024)).astype(np.float32)
        rows[4, 1] = np.nan
        assert not np.isnan(np.asarray(jnp.max(jnp.asarray(rows), axis=-1))[4]), "XLA's max keeps NaN now"
    assert torch.isnan(torch.amax(torch.from_numpy(rows), dim=-1)[4])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_hardsigmoid_formula_off_the_cpu_is_atens_cpu_kernel_bit_for_bit(dtype: str, rng: np.random.Generator) -> None:
    """Off the CPU, float64 hardsigmoid takes the formula (ATen's CUDA kernel multiplies by 1/6
    rounded to float32); it must be what the CPU kernel computes, the declaration, bit for bit."""
    from impl_torch.clamps import _hardsigmoid_formula

    special = [-np.inf, np.inf, np.nan, -3.0, 3.0, 0.0, -0.0, -1e308 if dtype == "float64" else -3e38]
    x = torch.from_numpy(np.concatenate([rng.normal(size=4096) * 4.0, special])).to(FRAMEWORK_DTYPES[dtype])
    expected = torch._C._nn.hardsigmoid(x)
    got = _hardsigmoid_formula(x)
    assert torch.equal(got.isnan(), expected.isnan())
    same = (got == expected) | got.isnan()
    assert bool(same.all()), (
        f"differs at {x[~same][:4].tolist()}: {got[~same][:4].tolist()} vs {expected[~same][:4].tolist()}"
    )


def test_float64_hardsigmoid_off_the_cpu_takes_the_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatch of the test above, without a GPU: a float64 tensor that is not on the CPU
    (``meta`` here, CUDA on a GPU) goes to the formula, float32 and CPU tensors to ATen's kernel."""
    from impl_torch import clamps

    taken = []
    formula = clamps._hardsigmoid_formula
    monkeypatch.setattr(clamps, "_hardsigmoid_formula", lambda x: taken.append((x.device.type, x.dtype)) or formula(x))
    clamps._hardsigmoid_values(torch.zeros(4, dtype=torch.float64, device="meta"))
    clamps._hardsigmoid_values(torch.zeros(4, dtype=torch.float32, device="meta"))
    clamps._hardsigmoid_values(torch.zeros(4, dtype=torch.float64))
    assert taken == [("meta", torch.float64)]
