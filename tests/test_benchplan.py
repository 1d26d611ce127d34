"""The benchmark plan: every technique in every style and mode, paired rows, CUDA sizes, bytes."""

from __future__ import annotations

import math
from collections import defaultdict

import harness
from bench import plan as benchplan


def test_plan_pairs_frameworks_in_each_group_and_extends_sizes_on_cuda() -> None:
    plan = benchplan.cases(("cpu", "cuda"))
    assert {c.technique for c in plan if c.kind == "ours"} == set(harness.names())
    assert max(c.n for c in plan if c.device == "cuda") == 2**26
    assert max(c.n for c in plan if c.device == "cpu") == 2**22
    groups: dict[str, set[str]] = defaultdict(set)
    for c in plan:
        groups[c.group].add(c.row)
    for group, rows in groups.items():
        if not group.startswith("copy"):
            assert {"torch-eager", "torch-compile", "jax-jit"} <= rows, group
    assert {c.technique for c in plan if c.kind == "baseline"} == set(benchplan.BASELINES)
    assert len({c.id for c in plan}) == len(plan), "benchmark ids must be unique"
    # Every size of every device has a copy row to measure bandwidth against.
    assert {(c.device, c.n) for c in plan if c.kind == "copy"} == {(c.device, c.n) for c in plan}


def test_shapes_hold_n_elements_and_ideal_bytes_count_inputs_and_outputs() -> None:
    for name in harness.names():
        spec = harness.get(name)
        for n in benchplan.CPU_SIZES:
            shape, extra = benchplan.shape_and_params(spec, n)
            assert math.prod(shape) == n
            spec.resolve(extra)  # the implied parameters are valid
    assert benchplan.ideal_bytes(1024, "forward") == 2 * 1024 * 4
    assert benchplan.ideal_bytes(1024, "forward+backward") == 3 * 1024 * 4
