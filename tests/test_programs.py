"""What the JAX programs hold off the CPU (tests/programs.py reads them): no data-dependent
branch, and no more passes over the data one after another than JAX's or flax's own op.

XLA:GPU reads a conditional's predicate on the host (a synchronization per call, which every
launch after it waits for), so off the CPU the guarded techniques run branch-free
(impl_jax._common.cpu_or_accelerator). Their fallback then runs on every call, so it must cost
what the built-in costs where a GPU's time goes, in passes over memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import CASES, Case, params
from programs import benchmarked, control_flow, has_platform_forms, passes, program

import harness
from bench import plan as benchplan
from harness.sampling import input_shape, sample_cotangent, sample_input
from harness.tolerances import compare, tolerance, vjp_scale
from impl_jax import baselines

WITH_BUILT_IN = [n for n in harness.names() if n in baselines.BUILTINS]
# The loops a GPU's program may keep (XLA:GPU reads a loop's predicate on the host at every
# step), each with its reason; any other fails.
LOOPS = {
    "sparsemax": "Michelot's iteration for the threshold: eight steps unrolled, then a loop that "
    "usually asks once (tests/test_sparsemax_threshold.py); timed against a few softmaxes",
}
# Known gaps, each with its reason: a test that passes here fails (strict), so the list shrinks.
GAPS = {
    ("rms_norm", "forward+backward"): (
        "its derivative reduces xhat * dy, which waits for the mean square; flax's reduces x * dy "
        "beside it (one pass). Ours rescales dy by the prescaling first, for second order at 2^600."
    ),
}


def test_the_walkers_resolve_platforms() -> None:
    """A cond nested in a platform's branch counts on that platform only, a cond outside any on
    every platform; passes chain through nested programs and skip one-element reductions."""

    def inner(v):
        return jax.lax.cond(jnp.all(v > 0), lambda u: u - u.sum(), lambda u: -u, v)

    def fn(v):
        return jax.lax.platform_dependent(v, cpu=inner, default=lambda u: u * 2.0)

    grad = jax.make_jaxpr(jax.grad(lambda v: fn(v).sum()))(jnp.ones(3)).jaxpr
    assert control_flow(grad, "cpu") == ["cond", "cond"]  # the forward's and its transpose
    assert control_flow(grad, "cuda") == []
    assert control_flow(jax.make_jaxpr(inner)(jnp.ones(3)).jaxpr, "cuda") == ["cond"]
    x = np.ones((4, 8))
    assert passes(program(fn, x, x, "forward"), "cpu") == 2  # all(v > 0), then u.sum()
    assert passes(program(fn, x, x, "forward"), "cuda") == 0

    def normalized(v):
        centred = v - v.mean(axis=-1, keepdims=True)
        return centred / jnp.sqrt((centred * centred).mean(axis=-1, keepdims=True))

    assert passes(program(normalized, x, x, "forward"), "cuda") == 2


@pytest.mark.parametrize("case", params([c for c in CASES if not c.given]))
def test_a_gpu_program_branches_on_no_data(case: Case, rng) -> None:
    """The program of a module's call and input VJP, lowered for a GPU, holds no data-dependent
    cond, and a loop only where LOOPS gives its reason; the CPU's may branch, where a guard skips
    a fallback."""
    spec, resolved = case.spec(), case.resolved("float32")
    shape = input_shape(spec, resolved)
    x, cotangent = sample_input(spec, resolved, shape, rng), sample_cotangent(shape, rng)
    for mode in benchplan.MODES:
        found = control_flow(program(case.build("jax", "float32"), x, cotangent, mode), "cuda")
        assert "cond" not in found, (mode, found)
        assert case.name in LOOPS or not found, (mode, found)


@pytest.mark.parametrize("mode", benchplan.MODES)
@pytest.mark.parametrize("name", WITH_BUILT_IN)
def test_a_gpu_program_reads_its_data_no_more_often_than_the_built_in(name: str, mode: str) -> None:
    """Off the CPU, ours needs no longer a chain of dependent passes over the data than the op
    the benchmark sets beside it (flax's norms, jax.nn's softmaxes, the elementwise ops), call
    and input VJP: each link is one read of the whole input at least. A program with a loop
    (LOOPS) has its own target instead."""
    if name in LOOPS:
        pytest.skip(f"{name} loops: {LOOPS[name]}")
    x, cotangent, resolved = benchplan.inputs(name, 2**12)
    ours = passes(program(harness.build(name, "jax", **resolved), x, cotangent, mode), "cuda")
    theirs = passes(program(baselines.BUILTINS[name](**resolved), x, cotangent, mode), "cuda")
    if (name, mode) in GAPS:
        assert ours > theirs, f"the gap closed ({ours} against {theirs}): drop its entry from GAPS"
        pytest.xfail(f"{ours} dependent passes against {theirs}: {GAPS[name, mode]}")
    assert ours <= theirs, f"{ours} dependent passes against the built-in's {theirs}"


@pytest.mark.parametrize("case", params([c for c in CASES if not c.given]))
def test_the_accelerator_forms_give_the_cpu_forms_results(case: Case, rng) -> None:
    """Every technique whose program has a form per platform, run in its accelerator's form on
    this CPU against its CPU form (which every other test holds to the references): values and
    input VJPs in float32 on rows of every kind (infinities, the largest finite values, constant
    rows, a NaN), NaN exactly where the other is, the rest within the tolerance table. The Triton
    pass of ``nox -s tests`` runs every test of these techniques in the accelerator's form too."""
    from test_bounds import _extreme_input

    from impl_jax import _common

    x = _extreme_input(case, "float32", rng)
    x.reshape(-1, x.shape[-1])[-1, 0] = np.nan
    cotangent = rng.normal(size=x.shape)
    if not has_platform_forms(program(case.build("jax", "float32"), x, cotangent, "forward+backward")):
        pytest.skip("one form on every platform")
    kept, results = _common.CPU_FORMS, []
    try:
        for forms in (("cpu",), ()):
            _common.CPU_FORMS = forms
            jax.clear_caches()  # programs are cached per function, not per CPU_FORMS
            results.append(harness.backend("jax").vjp(case.build("jax", "float32"), x, cotangent, "float32")[:2])
    finally:
        _common.CPU_FORMS = kept
        jax.clear_caches()
    for part, cpu, accelerator in zip(("value", "vjp"), *results, strict=True):
        np.testing.assert_array_equal(np.isnan(cpu), np.isnan(accelerator), err_msg=f"{part}: NaN pattern")
        keep = ~np.isnan(cpu)
        scale = vjp_scale(cpu[keep]) if part == "vjp" else 0.0
        result = compare(cpu[keep], accelerator[keep], tolerance(case.name, "float32", part), scale)
        assert result.ok, f"{part}: the forms differ by {result.max_rel:.3e} ({result.problem or ''})"


def test_rms_norms_input_vjp_on_the_cpu_keeps_the_tangents_cond_alone() -> None:
    """On the CPU, rms_norm's input VJP uses nothing its forward's cond makes: the tangent's
    branches compute their rows' statistics from x (``recompute`` in impl_jax/norms.py), so that
    the plain one's transpose is one fused kernel, as flax's VJP is. XLA then drops the forward's
    cond: the compiled program keeps the tangent's alone (its transpose, and the pass-through of
    x and the weight that linearizing leaves), and no conditional hands out row statistics (the
    form before kept three, two handing out rstd and the prescaling factors)."""
    from impl_jax import _common

    if "cpu" not in _common.CPU_FORMS:
        pytest.skip("this run gives the CPU the accelerator's form (OUTPUT_LIMITS_JAX_FORMS)")
    x, cotangent, resolved = benchplan.inputs("rms_norm", 2**12)
    input_vjp, args = benchmarked(harness.build("rms_norm", "jax", **resolved), x, cotangent, "forward+backward")
    text = jax.jit(input_vjp).lower(*args).compile().as_text()
    entry = text[text.index("\nENTRY") :]
    entry = entry[: entry.index("\n}")]
    conds = [line.split(" conditional(")[0] for line in entry.splitlines() if " conditional(" in line]
    assert len(conds) == 2, entry
    rows = f"[{x.shape[0]},1]"
    assert not any(rows in result for result in conds), entry
