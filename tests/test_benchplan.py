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


def test_speed_ratios_take_each_checks_median_over_the_processes() -> None:
    """bench.speed_ratios.merged: per check, the median of the processes' ratios decides (not the
    ratio of the median times), every ratio is kept, and checks must line up."""
    from bench.speed_ratios import merged

    def result(check: str, ours: float, reference: float) -> dict:
        return {"check": check, "ours_s": ours, "reference_s": reference, "ratio": ours / reference, "limit": 1.15,
                "ok": ours / reference <= 1.15}  # fmt: skip

    runs = [
        [result("a", 1.0, 1.0), result("b", 1.3, 1.0)],
        [result("a", 2.0, 2.0), result("b", 1.1, 1.0)],
        [result("a", 1.5, 1.0), result("b", 1.2, 1.0)],
    ]
    a, b = merged(runs)
    # The median times (1.5 and 1.0) would divide to a miss; the processes' ratios say 1.0.
    assert a["ratios"] == [1.0, 1.0, 1.5] and a["ratio"] == 1.0 and a["ok"]
    assert (a["ours_s"], a["reference_s"]) == (1.5, 1.0)
    assert b["ratio"] == 1.2 and not b["ok"]
    with pytest.raises(ValueError, match="different checks"):
        merged([[result("a", 1.0, 1.0)], [result("b", 1.0, 1.0)]])
    with pytest.raises(ValueError):
        merged([[result("a", 1.0, 1.0)], []])
