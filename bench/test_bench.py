"""``nox -s bench``: every registered technique, in PyTorch (eager, torch.compile) and JAX (jit),
forward and forward+backward, over a sweep of sizes, on every device both frameworks see.

Fairness rules, each enforced here:
* compilation and the first call are timed apart (``extra_info``), never inside a round;
* the timer blocks on the last output before reading the clock (JAX dispatches asynchronously,
  on CPU too; CUDA needs a synchronize), and rounds last >= 2 ms so that costs < 1%;
* warm-up before timing; the same float32 input values, threads and allocation policy on both
  sides (bench/conftest.py); forward+backward takes a fresh leaf each call, nothing accumulates;
* every output is checked once against an independent reference before it is timed;
* the JAX row of a group is also timed in rounds alternating with the group's PyTorch-eager row,
  so the report's JAX / PyTorch ratio and its interval come from pairs that drift together.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import pytest

import harness
from bench import plan as benchplan
from bench.checks import check

ROUND_SECONDS = {"cpu": 2e-3, "cuda": 5e-3}
PAIRED_AGAINST = "torch-eager"  # the row the JAX row alternates with: the report's ratio denominator


@functools.lru_cache(maxsize=4)
def _inputs(technique: str, n: int) -> tuple[np.ndarray, np.ndarray, tuple[tuple[str, Any], ...]]:
    """The same input and cotangent for every row of a (technique, size)."""
    x, cot, params = benchplan.inputs("clamp" if technique == "copy" else technique, n)
    return x, cot, tuple(params.items())


_compiled: dict[tuple, Any] = {}


class _Timed(NamedTuple):
    """A benchmarked callable, how to block on its output, and its calls per round."""

    fn: Callable[[], Any]
    block: Callable[[Any], None]
    iterations: int
    per_call: float


def _minor_faults() -> int | None:
    """Minor page faults of this process so far (None where getrusage does not exist)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _rounds(per_round: float, budget: float) -> int:
    return int(min(150, max(7, budget / per_round)))


def _alternating(a: _Timed, b: _Timed, budget: float) -> tuple[list[float], list[float]]:
    """Seconds per call of ``a`` and ``b`` over rounds that alternate a, b, b, a, a, b, ...: a
    slow change of the machine's state (a neighbour, the clock) lands on both sides of a pair,
    and neither side always runs first (after the other has warmed or cooled the caches)."""
    times: tuple[list[float], list[float]] = ([], [])
    for side in (a, b):  # a warm-up call each
        side.block(side.fn())
    for index in range(_rounds(a.per_call * a.iterations + b.per_call * b.iterations, budget)):
        pair = list(zip((a, b), times, strict=True))
        for side, out in pair if index % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            for _ in range(side.iterations):
                result = side.fn()
            side.block(result)
            out.append((time.perf_counter() - start) / side.iterations)
    return times


def _module(case: benchplan.BenchCase, params: dict[str, Any]) -> Any:
    backend = harness.backend(case.framework)
    if case.kind == "baseline":
        return backend.baselines.BUILDERS[case.technique](**params)
    if case.kind == "builtin":
        return backend.baselines.BUILTINS[case.technique](**params)
    # One module per (technique, mode, device, style) across sizes, so torch.compile reuses it
    # (automatic dynamic shapes after the second size) instead of compiling every size anew.
    key = (case.technique, case.mode, case.device, case.framework, case.style)
    if key not in _compiled:
        _compiled[key] = harness.build(case.technique, case.framework, **params)
    return _compiled[key]


class _Prepared(NamedTuple):
    """A benchmarked callable after its first (compiling) call, checked against the reference."""

    timed: _Timed
    first_call_s: float
    check_error: float


def _prepare(case: benchplan.BenchCase, *, checked: bool = True) -> _Prepared:
    """Build ``case``'s callable, call it once (compiling it), check that output (unless
    ``checked`` is False: a row's own test checked it already), and measure a steady call to
    choose the calls per round."""
    backend = harness.backend(case.framework)
    x, cot, items = _inputs(case.technique, case.n)
    params = dict(items)
    if case.kind == "copy":
        run = backend.copy_callable(x, case.device)
    else:
        run = backend.bench_callable(_module(case, params), x, cot, case.mode, case.style, case.device)
    start = time.perf_counter()
    out = run()
    backend.block(out)
    first_call = time.perf_counter() - start
    error = check(case, backend.to_numpy(out), x, cot, params) if checked else math.nan
    steady = []
    for _ in range(3):
        start = time.perf_counter()
        backend.block(run())
        steady.append(time.perf_counter() - start)
    per_call = statistics.median(steady)
    iterations = max(1, math.ceil(ROUND_SECONDS[case.device] / per_call))
    return _Prepared(_Timed(run, backend.block, iterations, per_call), first_call, error)


def _blocking_each_round(timed: _Timed) -> Callable[[], None]:
    """``timed.fn`` for pytest-benchmark's pedantic mode, blocking on the output of every
    ``iterations``-th call: the last of each round, before the timer is read. The calls of a round
    run back to back as in a model (JAX dispatches asynchronously, CUDA queues kernels), and the
    round is not over until its last output exists."""
    calls = 0

    def target() -> None:
        nonlocal calls
        out = timed.fn()
        calls += 1
        if calls % timed.iterations == 0:
            timed.block(out)

    return target


def test_bench(benchmark, bench_case: benchplan.BenchCase, bench_settings: dict[str, Any]) -> None:
    case = bench_case
    backend = harness.backend(case.framework)
    prepared = _prepare(case)
    timed_row, first_call, per_call = prepared.timed, prepared.first_call_s, prepared.timed.per_call
    iterations = timed_row.iterations
    budget = bench_settings["budget_s"]
    rounds = _rounds(per_call * iterations, budget)
    benchmark.group = case.group if case.kind != "copy" else f"copy n=2^{int(math.log2(case.n))} {case.device}"
    benchmark.extra_info.update(
        technique=case.technique,
        n=case.n,
        mode=case.mode,
        device=case.device,
        device_name=backend.device_name(case.device),
        framework=case.framework,
        style=case.style,
        kind=case.kind,
        row=case.row,
        ideal_bytes=benchplan.ideal_bytes(case.n, case.mode),
        first_call_s=first_call,
        compile_s=max(first_call - per_call, 0.0),
        check_error=prepared.check_error,
        threads=bench_settings["threads"],
    )
    faults = _minor_faults()
    benchmark.pedantic(_blocking_each_round(timed_row), rounds=rounds, iterations=iterations, warmup_rounds=1)
    if faults is not None:
        # Fresh pages touched per call: the allocation policy should make this about 0; where it
        # is not, the row also times the kernel zeroing pages, and the report says so.
        benchmark.extra_info["minor_faults_per_call"] = (_minor_faults() - faults) / ((rounds + 1) * iterations)

    if case.kind == "ours" and case.framework == "jax":
        # The JAX row alternates with its group's PyTorch-eager row, which this test builds (and
        # checks) itself: the pair does not depend on which test ran before.
        # Not checked again: its own row checks the same module on the same input.
        against = _prepare(replace(case, framework="torch", style="eager"), checked=False)
        ours_s, against_s = _alternating(timed_row, against.timed, budget / 2)
        benchmark.extra_info["paired"] = {"against": PAIRED_AGAINST, "ours_s": ours_s, "against_s": against_s}


def test_this_session_benchmarks_every_registered_technique(request: pytest.FixtureRequest) -> None:
    """What pytest collected here (through bench/conftest.py's options), not what the plan would
    give: every technique the registry holds now, plugins included, in every mode and row."""
    config = request.config
    # --lf exists only with the cache plugin, which nox -s bench turns off.
    narrowed = any("::" in a for a in config.args) or config.getoption("deselect") or config.getoption("lf", False)
    if config.getoption("quick") or config.getoption("techniques") or config.getoption("keyword") or narrowed:
        pytest.skip("--quick, --techniques, -k, node ids, --deselect and --lf run a subset on purpose")
    cases = [
        item.callspec.params["bench_case"]
        for item in request.session.items
        if "bench_case" in getattr(getattr(item, "callspec", None), "params", {})
    ]
    collected = {(c.technique, c.mode, c.row) for c in cases}
    expected = {
        (name, mode, row)
        for name in harness.names()
        for mode in benchplan.MODES
        for row in ("torch-eager", "torch-compile", "jax-jit")
    }
    assert expected <= collected, f"not benchmarked: {sorted(expected - collected)[:6]}"
