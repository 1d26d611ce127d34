"""Every derivative mode and transform beyond first-order reverse mode, in both frameworks:
forward mode (and its kinks), vmap against a loop, second order against finite differences of
the first derivative, and reverse- against forward-mode Jacobians.

Modules with running statistics run in evaluation mode here: a training call mutates its
buffers, which torch.func refuses for torch.nn.BatchNorm1d as for ours (README, transforms).
The second-order tests of huge groups and of an infinity build them in training mode, where
their groups (channels) are normalized by the batch's statistics.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import FRAMEWORKS, MODE_DEFAULTS, TRAIN_CASES, Case, around_kinks, params

import harness
from harness.sampling import input_shape, machine_epsilon, round_to, sample_cotangent, sample_input
from harness.spec import Family
from harness.tolerances import SECOND_ORDER, compare, tolerance, vjp_scale

KINKED = [c for c in TRAIN_CASES if c.spec().kinks(**c.given)]
# The costlier transforms (JAX traces each anew) run each technique's defaults only; forward
# mode and kinks run every declared example too, where parameters move kinks and bounds.
DEFAULTS = [c for c in TRAIN_CASES if not c.given]


def _module(case: Case, framework: str, dtype: str):
    module = case.build(framework, dtype)
    if case.spec().stateful:
        harness.backend(framework).set_training(module, False)
    return module


def _draw(case: Case, dtype: str, rng: np.random.Generator, batch: tuple[int, ...] = ()) -> tuple[np.ndarray, ...]:
    """An input off every kink, and two random directions, as ``dtype`` rounds them."""
    spec, resolved = case.spec(), case.resolved(dtype)
    shape = batch + input_shape(spec, resolved)
    x = sample_input(spec, resolved, shape, rng)
    return tuple(round_to(a, dtype) for a in (x, sample_cotangent(shape, rng), sample_cotangent(shape, rng)))


# Each technique's defaults in float64 and float32, its declared examples (where parameters move
# kinks and bounds) in float64.
FORWARD_CASES = [
    pytest.param(c, dtype, id=f"{c.id}-{dtype}")
    for c in TRAIN_CASES
    for dtype in ("float64", "float32")
    if dtype == "float64" or not c.given
]


@pytest.mark.parametrize(("case", "dtype"), FORWARD_CASES)
def test_forward_mode_agrees_across_frameworks_and_with_reverse_mode(case: Case, dtype: str, rng) -> None:
    """JVPs of the two frameworks agree, and each is the transpose of its own VJP:
    <v, J t> == <J^T v, t> (the reverse mode that the parity tests hold to the reference)."""
    x, t, v = _draw(case, dtype, rng)
    tangents = {}
    for framework in FRAMEWORKS:
        backend = harness.backend(framework)
        module = _module(case, framework, dtype)
        _, dy = backend.jvp(module, x, t, dtype)
        _, dx, _ = backend.vjp(module, x, v, dtype)
        tangents[framework] = dy
        forward, reverse = float(np.vdot(v, dy)), float(np.vdot(dx, t))
        size = np.linalg.norm(v) * np.linalg.norm(dy) + np.linalg.norm(dx) * np.linalg.norm(t)
        assert abs(forward - reverse) <= tolerance(case.name, dtype, "vjp").rtol * max(size, 1e-300), (
            f"{framework}: <v, J t> = {forward:.9g} but <J^T v, t> = {reverse:.9g}"
        )
    a, b = (tangents[fw] for fw in FRAMEWORKS)
    result = compare(a, b, tolerance(case.name, dtype, "vjp"), vjp_scale(a))
    assert result.ok, f"JVPs differ by {result.max_rel:.3e} at {result.worst_index} {result.problem or ''}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", params(KINKED))
def test_forward_mode_gives_the_declared_gradient_at_each_kink(case: Case, dtype: str) -> None:
    """As test_kinks does for reverse mode: at the kink exactly the declared value, one ulp either
    side the one-sided derivatives (a plain clamp's forward rule gives 1 at its bounds)."""
    kinks = case.spec().kinks(**case.given)
    points = around_kinks(kinks, dtype)
    declared = np.array([[k.left, k.at, k.right] for k in kinks])
    at = round_to(np.array([k.at for k in kinks]), dtype)
    for framework in FRAMEWORKS:
        _, dy = harness.backend(framework).jvp(_module(case, framework, dtype), points, np.ones_like(points), dtype)
        dy = dy.reshape(-1, 3)
        assert (dy[:, 1] == at).all(), f"{framework}: {dy[:, 1]} at the kinks {points[1::3]}, not {at}"
        np.testing.assert_allclose(dy, declared, rtol=0, atol=1e-6, err_msg=f"{framework} near the kinks")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", params(KINKED))
def test_low_precision_forward_mode_around_each_kink_agrees(case: Case, dtype: str) -> None:
    kinks = [k.x for k in case.spec().kinks(**case.given)]
    eps = machine_epsilon(dtype)
    offsets = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    points = round_to(np.concatenate([k + offsets * eps * max(abs(k), 1.0) for k in kinks]), dtype)
    a, b = (
        harness.backend(fw).jvp(_module(case, fw, dtype), points, np.ones_like(points), dtype)[1] for fw in FRAMEWORKS
    )
    result = compare(a, b, tolerance(case.name, dtype, "vjp"), vjp_scale(a))
    assert result.ok, f"forward-mode derivatives differ at input {points[result.worst_index]}: {a} vs {b}"


@pytest.mark.parametrize("case", params(DEFAULTS))
def test_vmap_equals_a_loop(case: Case, rng) -> None:
    (xs, _, _) = _draw(case, "float64", rng, batch=(3,))
    for framework in FRAMEWORKS:
        backend = harness.backend(framework)
        module = _module(case, framework, "float64")
        looped = np.stack([backend.to_numpy(module(backend.from_numpy(x, "float64"))) for x in xs])
        result = compare(backend.vmapped(module, xs, "float64"), looped, tolerance(case.name, "float64", "value"))
        assert result.ok, f"{framework}: vmap differs from a loop by {result.max_rel:.3e} at {result.worst_index}"


@pytest.mark.parametrize("case", params(DEFAULTS))
def test_second_order_matches_finite_differences_of_the_first(case: Case, rng) -> None:
    """The Hessian of <v, f(x)> along t (double backward in PyTorch, forward over reverse in JAX)
    equals the central difference of each framework's own input VJP along t, and the two agree:
    a first derivative that is not differentiable, or whose second-order term is dropped, fails."""
    _check_second_order(case, *_draw(case, "float64", rng))


@pytest.mark.parametrize("infinities", [(np.inf,), (-np.inf,), (np.inf, -np.inf)], ids=["+inf", "-inf", "both"])
@pytest.mark.parametrize("case", params(DEFAULTS))
def test_second_order_where_a_group_holds_an_infinity(case: Case, infinities: tuple[float, ...], rng) -> None:
    """With infinities in the input's first entries (their group's value a constant limit where
    the technique reduces, saturated where it does not), both frameworks' second order (double
    backward, forward over reverse) is NaN exactly where the other's is and agrees elsewhere.
    The JAX norms' CPU form gave NaN across that group: the fast path's statistics, unused there,
    and the prescaling factors handed through a cond carry zero tangents, and zero times the
    infinity is NaN (impl_jax/norms.py, _mean_and_variance and _rebuilt)."""
    x, v, t = _draw(case, "float64", rng)
    x.reshape(-1)[: len(infinities)] = infinities
    second = {fw: harness.backend(fw).second_order(case.build(fw, "float64"), x, v, t, "float64") for fw in FRAMEWORKS}
    a, b = (second[fw] for fw in FRAMEWORKS)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg="the pattern of NaN")
    keep = ~np.isnan(a)
    result = compare(a[keep], b[keep], tolerance(case.name, "float64", "vjp"), vjp_scale(a[keep]))
    assert result.ok, f"second-order terms differ by {result.max_rel:.3e} ({result.problem or ''})"


# Norms of huge groups take the prescaled formula (and JAX's derivative its other branch, see
# impl_jax.norms._normalized_tangent): where their squares overflow, and from where the plain
# formula's second-order terms (rstd^3 ...) would underflow (harness.numerics.trusted_rstd_low).
# Stateful ones in training mode, where their groups (channels) are normalized by the batch's
# statistics.
_HUGE = [c for c in DEFAULTS if c.spec().family == Family.NORMS]


@pytest.mark.parametrize("power", [400, 600], ids=["2^400", "2^600"])
@pytest.mark.parametrize("case", params(_HUGE))
def test_second_order_of_huge_groups(case: Case, power: int, rng) -> None:
    """As above, on inputs scaled by 2^400 (squares near 2^800: rstd^3 would underflow) and 2^600
    (squares overflow float64), along a direction scaled alike (the Hessian scales as 2^-2 power
    and would underflow to zero alone)."""
    x, v, t = _draw(case, "float64", rng)
    h = 1e-5 * (1.0 + float(np.abs(x).max()))
    second = _check_second_order(case, np.ldexp(x, power), v, np.ldexp(t, power), h, training=True)
    for framework, hvp in second.items():
        assert np.abs(hvp).max() > 0, f"{framework}: a second order of zero"


@pytest.mark.parametrize("case", params(_HUGE))
def test_second_order_of_huge_groups_in_float32(case: Case, rng) -> None:
    """In float32 the plain formula's second order underflowed from about 2^45 (PyTorch's zero,
    inf or NaN, JAX's up to 110% off): scaled by 2^30 (the fast formula), 2^36 (just past the
    trust rule's low bound of rstd), 2^45 and 2^55, input and direction, the second order times
    the scale is the unscaled one (eps's share aside)."""
    x, v, t = _draw(case, "float32", rng)
    for framework in FRAMEWORKS:
        backend = harness.backend(framework)
        module = case.build(framework, "float32")  # stateful ones in training mode
        base = backend.second_order(module, x, v, t, "float32").astype(np.float64)
        for power in (30, 36, 45, 55):
            hvp = backend.second_order(module, np.ldexp(x, power), v, np.ldexp(t, power), "float32")
            scaled = np.ldexp(hvp.astype(np.float64), power)
            np.testing.assert_allclose(
                scaled, base, rtol=0, atol=1e-3 * np.abs(base).max(), err_msg=f"{framework} 2^{power}"
            )


def _check_second_order(
    case: Case, x: np.ndarray, v: np.ndarray, t: np.ndarray, h: float | None = None, training: bool = False
) -> dict[str, np.ndarray]:
    """Both frameworks' second order along t against the central difference with step h (relative
    to x by default) of their own VJP, and against each other; each framework's result. Stateful
    modules in evaluation mode unless ``training``."""
    h = 1e-5 * (1.0 + float(np.abs(x).max())) if h is None else h
    second = {}
    for framework in FRAMEWORKS:
        backend = harness.backend(framework)
        module = case.build(framework, "float64") if training else _module(case, framework, "float64")
        hvp = backend.second_order(module, x, v, t, "float64")
        above, below = (backend.vjp(module, x + s * h * t, v, "float64")[1] for s in (1.0, -1.0))
        difference = (above - below) / (2.0 * h)
        assert np.isfinite(hvp).all(), f"{framework}: a non-finite second order"
        # Truncation h^2 and rounding eps/h, against the larger of the two results.
        result = compare(hvp, difference, SECOND_ORDER, vjp_scale(hvp, difference))
        assert result.ok, f"{framework}: second order off its finite difference by {result.max_rel:.3e}"
        second[framework] = hvp
    a, b = (second[fw] for fw in FRAMEWORKS)
    result = compare(a, b, tolerance(case.name, "float64", "vjp"), vjp_scale(a))
    assert result.ok, f"second-order terms differ by {result.max_rel:.3e} at {result.worst_index}"
    return second


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", params(KINKED))
def test_second_order_gives_the_declared_second_derivative_at_each_kink(case: Case, dtype: str) -> None:
    """Where the first derivative jumps no second exists: both frameworks return the declared
    ``Kink.second`` at the kink, and one ulp either side nearly that (a C2 join's second
    derivative there is its third times the step: about 2e-6 for smooth_clamp in float32)."""
    kinks = case.spec().kinks(**case.given)
    points, ones = around_kinks(kinks, dtype), np.ones(3 * len(kinks))
    declared = np.repeat([k.second for k in kinks], 3)
    for framework in FRAMEWORKS:
        hvp = harness.backend(framework).second_order(_module(case, framework, dtype), points, ones, ones, dtype)
        assert (hvp[1::3] == declared[1::3]).all(), f"{framework}: {hvp[1::3]} at the kinks, not {declared[1::3]}"
        np.testing.assert_allclose(hvp, declared, rtol=0, atol=1e-4, err_msg=f"{framework} near the kinks")


@pytest.mark.parametrize("case", params(DEFAULTS))
def test_reverse_and_forward_jacobians_agree_across_frameworks(case: Case, rng) -> None:
    (x, _, _) = _draw(case, "float64", rng)
    # A small Jacobian suffices: one row, or for channels (axis 1) two samples.
    x = x[:2] if case.spec().feature_axis == 1 else x[:1]
    found = [j for framework in FRAMEWORKS for j in harness.backend(framework).jacobians(
        _module(case, framework, "float64"), x, "float64")]  # fmt: skip
    for j in found[1:]:
        result = compare(j, found[0], tolerance(case.name, "float64", "vjp"), vjp_scale(found[0]))
        assert result.ok, f"Jacobians differ by {result.max_rel:.3e} at {result.worst_index}"


@pytest.mark.parametrize("case", params(DEFAULTS))
def test_per_sample_gradients_of_a_head_equal_a_loop(case: Case, rng) -> None:
    """vmap of grad over a head's parameters (the Linear, and the technique's own): each sample's
    gradient equals that sample's VJP alone, in both frameworks, and the frameworks agree."""
    xs, cotangents = rng.normal(size=(4, 3)), rng.normal(size=(4, 1, 8))
    found = {}
    for framework in FRAMEWORKS:
        backend = harness.backend(framework)
        head = harness.head(case.name, framework, 3, 8, dtype="float64", **case.given)
        if case.spec().stateful:
            backend.set_training(head, False)
        batched = backend.per_sample_gradients(head, xs, cotangents, "float64")
        for i in range(len(xs)):
            _, _, alone = backend.vjp(head, xs[i : i + 1], cotangents[i], "float64")
            for name, value in alone.items():
                np.testing.assert_allclose(
                    batched[name][i], value, rtol=1e-12, atol=1e-14, err_msg=f"{framework} {name}"
                )
        found[framework] = batched
    a, b = (found[fw] for fw in FRAMEWORKS)
    assert sorted(a) == sorted(b)
    for name in a:
        result = compare(a[name], b[name], tolerance(case.name, "float64", "vjp"), vjp_scale(a[name]))
        assert result.ok, f"{name}: per-sample gradients differ by {result.max_rel:.3e}"


@pytest.mark.parametrize("case", params(DEFAULTS))
def test_traced_and_exported_heads_equal_eager_on_new_inputs(case: Case, rng) -> None:
    """torch.jit.trace records no branch on the tracing input's data (infinities and NaN in a
    later input take their declared path), and torch.export keeps working."""
    import torch

    head = harness.head(case.name, "torch", 3, 8, dtype="float64", **case.given)
    if case.spec().stateful:
        head.eval()
    backend = harness.backend("torch")
    traced_on = backend.from_numpy(rng.normal(size=(5, 3)), "float64")
    later = rng.normal(size=(5, 3)) * 4.0
    later[0, 0], later[1, 1], later[2, :] = np.inf, np.nan, np.finfo(np.float64).max
    x = backend.from_numpy(later, "float64")
    expected = backend.to_numpy(head(x))
    # Equal to the value tolerance, not bit for bit: eager may run ATen's fused op where a trace
    # records the branch-free formula (layer_norm); NaN and infinities must sit where eager's do.
    value = tolerance(case.name, "float64", "value")
    traced = torch.jit.trace(head, (traced_on,), check_trace=False)
    exported = torch.export.export(head, (traced_on,)).module()
    for label, module in (("traced", traced), ("exported", exported)):
        result = compare(backend.to_numpy(module(x)), expected, value)
        assert result.ok, f"{label}: {result.max_rel:.3e} from eager at {result.worst_index} {result.problem or ''}"


@pytest.mark.parametrize("case", params(MODE_DEFAULTS))
def test_torch_export_with_a_dynamic_batch_equals_eager(case: Case, rng) -> None:
    """torch.export with the batch dimension dynamic, in float32 (where the C kernels serve
    eager calls): called on batches of two sizes holding infinities and NaN, equal to eager. A
    size test made before the test for exporting was a guard on the symbolic size, which export
    refused (smooth_clamp, scaled_sigmoid, scaled_tanh, soft_clip)."""
    import torch

    module = case.build("torch", "float32")
    spec, resolved = case.spec(), case.resolved("float32")
    shape = input_shape(spec, resolved)[1:]
    example = torch.from_numpy(sample_input(spec, resolved, (4, *shape), rng)).float()
    exported = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    for batch in (3, 9):
        x = sample_input(spec, resolved, (batch, *shape), rng)
        x[0].flat[0], x[1].flat[-1] = np.inf, np.nan
        x = torch.from_numpy(x).float()
        with torch.no_grad():
            found, expected = exported(x), module(x)
        np.testing.assert_array_equal(found.isnan().numpy(), expected.isnan().numpy())
        keep = ~expected.isnan()
        result = compare(found[keep].numpy(), expected[keep].numpy(), tolerance(case.name, "float32", "value"))
        assert result.ok, f"batch {batch}: {result.max_rel:.3e} from eager at {result.worst_index}"


@pytest.mark.parametrize("case", params(DEFAULTS))
def test_traced_on_an_input_without_grad_keeps_the_declared_vjp(case: Case, rng) -> None:
    """torch.jit.trace of a bare module on an input that needs no gradient, the usual call,
    records the declared derivative: replayed on one that needs it, the VJP equals eager's at
    the kinks and infinities too. The trace recorded the plain op, whose rule is ATen's
    (ste_clamp's 0 outside its bounds, clamp's 1 at its kinks)."""
    import torch

    module = _module(case, "torch", "float64")
    x, c, _ = _draw(case, "float64", rng)
    points = [k.x for k in case.spec().kinks(**case.given)] + [np.inf, -np.inf]
    x.flat[: len(points)] = points
    # check_trace on: the check traces again in another grad mode, and the graphs must agree.
    traced = torch.jit.trace(module, (torch.from_numpy(rng.normal(size=x.shape)),))
    found = {}
    for label, f in (("eager", module), ("traced", traced)):
        xt = torch.from_numpy(x).requires_grad_(True)
        found[label] = torch.autograd.grad(f(xt), xt, torch.from_numpy(c))[0].numpy()
    np.testing.assert_array_equal(np.isnan(found["traced"]), np.isnan(found["eager"]))
    keep = ~np.isnan(found["eager"])
    a, b = found["traced"][keep], found["eager"][keep]
    result = compare(a, b, tolerance(case.name, "float64", "vjp"), vjp_scale(b))
    assert result.ok, f"the traced VJP differs from eager's by {result.max_rel:.3e} at {result.worst_index}"


@pytest.mark.parametrize("case", params(MODE_DEFAULTS))
def test_fake_tensors_give_eager_shapes_and_dtypes(case: Case, rng) -> None:
    """Under FakeTensorMode (as torch.export, FSDP's meta-device planning and shape inference run
    a model), a call and its backward give eager's shapes and dtypes. The fake tensors have no
    memory: the norms' and softmaxes' guard read their statistics by address (a segfault), the
    clamps' C++ backward read them, and sparsemax branched on their data."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    module = case.build("torch", "float32")
    x = torch.from_numpy(_draw(case, "float32", rng)[0]).float()
    expected = module(x)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = mode.from_tensor(x).requires_grad_(True)
        y = module(fake)
        (dx,) = torch.autograd.grad(y.sum(), fake)
    assert (y.shape, y.dtype) == (expected.shape, expected.dtype)
    assert (dx.shape, dx.dtype) == (x.shape, x.dtype)


@pytest.mark.parametrize("case", params(DEFAULTS))
def test_jax_export_with_a_symbolic_batch_equals_jit(case: Case, rng) -> None:
    """jax.export with the batch dimension symbolic, as a model is exported for serving: traced
    once, then called on batches of two sizes holding infinities and NaN, equal to the jitted
    module in values, VJPs and (training batch_norm) the running statistics. A Python
    computation on a shape (min, log2 of a dimension) fails on a symbolic one (sparsemax and
    batch_norm did)."""
    import jax
    from flax import nnx
    from jax import export

    spec, resolved = case.spec(), case.resolved("float64")
    module = case.build("jax", "float64")
    graphdef, state = nnx.split(module)

    def call(s, v):
        inner = nnx.merge(graphdef, s, copy=True)
        return inner(v), nnx.state(inner)

    shape = input_shape(spec, resolved)
    symbolic = export.symbolic_shape(", ".join(["b", *map(str, shape[1:])]))
    # The module's state closed over (constants of the program), the input the one argument.
    exported = export.export(jax.jit(lambda v: call(state, v)))(jax.ShapeDtypeStruct(symbolic, "float64"))
    for batch in (2, 7):
        x = sample_input(spec, resolved, (batch, *shape[1:]), rng)
        x[0, ...] = np.inf
        x.flat[-1] = np.nan
        cotangent = rng.normal(size=x.shape)
        found = {}
        for label, fn in (("exported", exported.call), ("jit", jax.jit(lambda v: call(state, v)))):
            y, after = fn(x)
            dx = jax.vjp(lambda v, fn=fn: fn(v)[0], x)[1](cotangent)[0]
            found[label] = np.asarray(y), np.asarray(dx), [np.asarray(a) for a in jax.tree.leaves(after)]
        (y, dx, after), (y_jit, dx_jit, after_jit) = found["exported"], found["jit"]
        for what, a, b in (("value", y, y_jit), ("vjp", dx, dx_jit)):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"batch {batch}: NaN pattern of the {what}")
            keep = ~np.isnan(b)
            result = compare(a[keep], b[keep], tolerance(case.name, "float64", what), vjp_scale(b[keep]))
            assert result.ok, f"batch {batch}, {what}: exported differs from jit by {result.max_rel:.3e}"
        for a, b in zip(after, after_jit, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=f"batch {batch}: state")


# Run in a fresh interpreter: XLA:CPU makes its devices once, at JAX's first use.
_SHARD_MAP = """
import os, sys
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
sys.path.insert(0, sys.argv[1])
import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, PartitionSpec

jax.config.update("jax_enable_x64", True)
from cases import MODE_DEFAULTS
from harness.sampling import input_shape, sample_cotangent, sample_input
from harness.tolerances import compare, tolerance, vjp_scale

mesh, rows = Mesh(np.array(jax.devices()[:4]), ("b",)), PartitionSpec("b")
rng, found = np.random.default_rng(0), []
for case in MODE_DEFAULTS:
    graphdef, state = nnx.split(case.build("jax", "float64"))

    def each(v, c):
        f = lambda u: nnx.merge(graphdef, state, copy=True)(u)
        return f(v), jax.vjp(f, v)[1](c)[0], jax.jvp(f, (v,), (c,))[1]

    spec, resolved = case.spec(), case.resolved("float64")
    x = sample_input(spec, resolved, (8, *input_shape(spec, resolved)[1:]), rng)
    x[0].flat[0], x[2].flat[-1], x[4] = np.inf, np.nan, x[4] * 1e300  # a limit, a NaN, the fallback
    c = sample_cotangent(x.shape, rng)
    sharded = jax.jit(jax.shard_map(each, mesh=mesh, in_specs=(rows, rows), out_specs=rows))
    try:
        got = [np.asarray(a) for a in sharded(x, c)]
    except Exception as error:
        found.append(f"{case.id}: {type(error).__name__}: {' '.join(str(error).split())[:300]}")
        continue
    blocks = [jax.jit(each)(x[i : i + 2], c[i : i + 2]) for i in range(0, 8, 2)]
    for what, a, *b in zip(("value", "vjp", "jvp"), got, *blocks):
        b, keep = np.concatenate(b), ~np.isnan(a)
        # Within the float64 table: the accelerator form's sums may be ordered otherwise.
        quantity = "value" if what == "value" else "vjp"
        result = compare(a[keep], b[keep], tolerance(case.name, "float64", quantity), vjp_scale(b[keep]))
        if not (np.array_equal(keep, ~np.isnan(b)) and result.ok):
            found.append(f"{case.id}: the sharded {what} differs from each block's own by {result.max_rel:.1e}")
print("\\n".join(found) or "all equal")
"""


def test_jax_shard_map_equals_each_block_alone() -> None:
    """Under ``jax.shard_map`` (manual axes checked, its default) over a batch split on four
    devices, every technique in both modes gives, in values, VJPs and JVPs, what each device's
    block gives alone (NaN exactly, the rest within the float64 table): the fast path on some
    devices, a limit, a NaN or the fallback on others. A cond's two branches must then vary over
    the same mesh axes; the norms' fast branch made some of its outputs from constants and
    failed to trace."""
    import pathlib
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _SHARD_MAP, str(pathlib.Path(__file__).parent)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("all equal"), done.stdout


@pytest.mark.parametrize("case", params(KINKED))
def test_forward_ad_dual_tensors_give_the_declared_gradient_at_each_kink(case: Case) -> None:
    """torch.autograd.forward_ad, outside torch.func: the same declared values as jvp."""
    import torch
    from torch.autograd import forward_ad

    module = _module(case, "torch", "float64")
    for kink in case.spec().kinks(**case.given):
        step = 1e-9 * (1 + abs(kink.x))
        x = torch.tensor([kink.x - step, kink.x, kink.x + step], dtype=torch.float64)
        with forward_ad.dual_level():
            tangent = forward_ad.unpack_dual(module(forward_ad.make_dual(x, torch.ones_like(x)))).tangent
        assert tangent is not None, "no tangent came out"
        np.testing.assert_array_equal(tangent.numpy(), [kink.left, kink.at, kink.right], err_msg=str(kink))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", params(DEFAULTS))
def test_batched_gradients_equal_a_loop(case: Case, dtype: str, rng) -> None:
    """PyTorch's batched cotangents (``is_grads_batched``, as ``jacobian(vectorize=True)`` and
    gradcheck use them) give each cotangent's own gradient. Their backward sees a tensor with no
    memory of its own and a hidden batch dimension, outside any torch.func transform: a backward
    writing into a buffer of its own from it failed (smooth_clamp's did)."""
    import torch

    module = _module(case, "torch", dtype)
    x, c1, c2 = (torch.from_numpy(a).to(getattr(torch, dtype)) for a in _draw(case, dtype, rng))
    x.requires_grad_(True)
    y = module(x)
    (batched,) = torch.autograd.grad(y, x, torch.stack([c1, c2]), retain_graph=True, is_grads_batched=True)
    for i, cotangent in enumerate((c1, c2)):
        (alone,) = torch.autograd.grad(y, x, cotangent, retain_graph=True)
        expected = alone.double().numpy()
        result = compare(batched[i].double().numpy(), expected, tolerance(case.name, dtype, "vjp"), vjp_scale(expected))
        assert result.ok, f"cotangent {i}: batched gradient differs by {result.max_rel:.3e} at {result.worst_index}"


@pytest.mark.parametrize("case", params(DEFAULTS))
def test_forward_mode_of_vmap_equals_vmap_of_forward_mode(case: Case, rng) -> None:
    """Nested transforms compose (PyTorch): jvp of a vmapped module is the vmap of its jvp."""
    import torch

    (xs, ts, _) = _draw(case, "float64", rng, batch=(2,))
    module = _module(case, "torch", "float64")
    x, t = torch.from_numpy(xs), torch.from_numpy(ts)
    _, outer = torch.func.jvp(torch.func.vmap(module), (x,), (t,))
    _, inner = torch.func.vmap(lambda a, b: torch.func.jvp(module, (a,), (b,)))(x, t)
    np.testing.assert_allclose(outer.detach().numpy(), inner.detach().numpy(), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("case", params(DEFAULTS))
def test_reverse_mode_of_vmap_equals_vmap_of_reverse_mode(case: Case, rng) -> None:
    """Nested transforms compose (JAX): the VJP of a vmapped module, a batch mapped inside a
    differentiated loss, is the vmap of its VJP. A lax.cond whose operands include the tangent
    breaks this: under vmap its predicate is batched and it becomes selects that stop_gradient
    their operands, which reverse mode cannot transpose."""
    import jax

    xs, cs, _ = _draw(case, "float64", rng, batch=(2,))
    module = _module(case, "jax", "float64")
    backend = harness.backend("jax")
    x, c = backend.from_numpy(xs, "float64"), backend.from_numpy(cs, "float64")
    outer = jax.vjp(jax.vmap(module), x)[1](c)[0]
    inner = jax.vmap(lambda a, b: jax.vjp(module, a)[1](b)[0])(x, c)
    np.testing.assert_allclose(np.asarray(outer), np.asarray(inner), rtol=1e-12, atol=1e-300)


_REDUCING = [c for c in DEFAULTS if not c.spec().stateful and c.spec().reduction_axes(2, c.resolved())]


@pytest.mark.parametrize("nested", [False, True], ids=["vmap", "vmap-of-vmap"])
@pytest.mark.parametrize("case", params(_REDUCING))
def test_reverse_mode_of_vmap_with_one_element_holding_an_infinity(case: Case, nested: bool, rng) -> None:
    """As above, with the batch's last element holding an infinity in its first group: that
    element's derivative takes its limit branch, the others' the plain one. A cond whose
    predicate is kept unbatched under vmap, nested vmaps too (impl_jax._common.everywhere),
    then runs one branch for all: each element must still get what a call of its own gives."""

    batch = (2, 2) if nested else (2,)
    xs, cs, _ = _draw(case, "float64", rng, batch=batch)
    xs[(1,) * len(batch) + (0,) * (xs.ndim - len(batch))] = np.inf
    module = _module(case, "jax", "float64")
    backend = harness.backend("jax")
    x, c = backend.from_numpy(xs, "float64"), backend.from_numpy(cs, "float64")
    _check_vmapped_vjp(module, x, c, len(batch))


def _check_vmapped_vjp(fn, x, c, batched: int) -> np.ndarray:
    """The VJP of ``fn`` vmapped over the first ``batched`` axes (nested vmaps) equals each
    element's own VJP, and is finite for all but the last; returns the elements' VJPs."""
    import jax

    mapped = fn
    for _ in range(batched):
        mapped = jax.vmap(mapped)
    outer = np.asarray(jax.vjp(mapped, x)[1](c)[0])
    shape = (-1, *x.shape[batched:])
    flat_x, flat_c = x.reshape(shape), c.reshape(shape)
    each = np.stack([np.asarray(jax.vjp(fn, a)[1](b)[0]) for a, b in zip(flat_x, flat_c, strict=True)])
    assert np.isfinite(each[:-1]).all(), "an element without an infinity got a non-finite VJP"
    np.testing.assert_allclose(outer.reshape(each.shape), each, rtol=1e-12, atol=1e-300)
    return each


@pytest.mark.parametrize("nested", [False, True], ids=["vmap", "vmap-of-vmap"])
def test_reverse_mode_of_vmap_of_training_batch_norm_with_one_element_holding_an_infinity(nested: bool, rng) -> None:
    """The same for batch_norm in training mode (the function: the tests above keep stateful
    modules in evaluation mode), whose derivative takes the same cond over its channels: the
    batch's last element holds an infinity in its first channel."""
    import jax

    from impl_jax.norms import batch_norm

    batch = (2, 2) if nested else (2,)
    xs = rng.normal(size=(*batch, 8, 4, 3))
    xs[(1,) * len(batch) + (0, 0, 0)] = np.inf
    cs = rng.normal(size=xs.shape)
    weight, bias = (jax.numpy.asarray(rng.normal(size=4)) for _ in range(2))
    running = jax.numpy.zeros(4), jax.numpy.ones(4)

    def output(v):
        return batch_norm(v, weight, bias, *running, training=True, momentum=0.1, eps=1e-5)[0]

    each = _check_vmapped_vjp(output, jax.numpy.asarray(xs), jax.numpy.asarray(cs), len(batch))
    assert (each[-1][:, 0] == 0).all() and np.isfinite(each[-1][:, 1:]).all(), "the limit channel's VJP is not zero"
