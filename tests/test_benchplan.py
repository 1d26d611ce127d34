"""The benchmark plan: every technique the registry holds when it is asked (a plugin's too), in
every style and mode, paired rows, CUDA sizes, bytes."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import replace

import pytest

import harness
from bench import plan as benchplan
from harness import registry

ROWS = {"torch-eager", "torch-compile", "jax-jit"}


def test_every_technique_gets_every_size_mode_and_row_on_each_device() -> None:
    plan = benchplan.cases(("cpu", "cuda"))
    rows: dict[tuple[str, str], set[tuple[int, str, str]]] = defaultdict(set)
    for c in plan:
        if c.kind == "ours":
            rows[c.technique, c.device].add((c.n, c.mode, c.row))
    for name, device in itertools.product(harness.names(), ("cpu", "cuda")):
        sizes = benchplan.GPU_SIZES if device == "cuda" else benchplan.CPU_SIZES
        expected = set(itertools.product(sizes, benchplan.MODES, ROWS))
        assert rows[name, device] == expected, f"{name} on {device}: missing {sorted(expected - rows[name, device])}"
    assert max(benchplan.GPU_SIZES) == 2**26 and max(benchplan.CPU_SIZES) == 2**22
    baselines = {(c.technique, c.row) for c in plan if c.kind == "baseline"}
    assert baselines == {(t, r) for t in benchplan.BASELINES for r in ("baseline-torch-eager", "baseline-jax-jit")}
    assert len({c.id for c in plan}) == len(plan), "benchmark ids must be unique"
    # Every size of every device has a copy row to measure bandwidth against.
    assert {(c.device, c.n) for c in plan if c.kind == "copy"} == {(c.device, c.n) for c in plan}


def test_a_technique_registered_later_is_planned_without_new_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_specs", dict(registry._specs))
    monkeypatch.setattr(registry, "_origins", dict(registry._origins))
    harness.declare(replace(harness.get("tanh"), name="tanh_copy"))
    plan = benchplan.cases(("cpu",))
    assert {(c.mode, c.row) for c in plan if c.technique == "tanh_copy"} == set(
        itertools.product(benchplan.MODES, ROWS)
    )


def test_a_subset_plans_only_what_it_names_and_unknown_names_fail() -> None:
    plan = benchplan.cases(("cpu",), ("clamp",), {"cpu": (2**10,)})
    assert {c.technique for c in plan} == {"clamp", "copy"}
    assert {c.n for c in plan} == {2**10}
    with pytest.raises(harness.UnknownTechniqueError, match="clampp"):
        benchplan.cases(("cpu",), ("clampp",))


def test_shapes_hold_n_elements_and_ideal_bytes_count_inputs_and_outputs() -> None:
    for name in harness.names():
        spec = harness.get(name)
        for n in benchplan.CPU_SIZES:
            shape, extra = benchplan.shape_and_params(spec, n)
            assert math.prod(shape) == n
            spec.resolve(extra)  # the implied parameters are valid
    assert benchplan.ideal_bytes(1024, "forward") == 2 * 1024 * 4
    assert benchplan.ideal_bytes(1024, "forward+backward") == 3 * 1024 * 4


@pytest.mark.parametrize("name", sorted(benchplan.BUILTINS))
def test_pytorch_builtins_are_modules_computing_the_bare_op(name: str) -> None:
    """PyTorch's built-in rows are timed as ours are, through a module (a module call costs what
    a fifth of a 2^16-element clamp does), and compute exactly the bare op that the module-call
    overhead target times against."""
    import torch

    from impl_torch import baselines

    x, _, params = benchplan.inputs(name, 2**10)
    xt = torch.from_numpy(x).float()
    module, bare = baselines.BUILTINS[name](**params), baselines.bare(name, **params)
    assert isinstance(module, torch.nn.Module)
    with torch.no_grad():
        assert torch.equal(module(xt), bare(xt))
