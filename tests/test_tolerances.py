"""compare() (harness/tolerances.py) gives the same verdict, error and worst index whatever its
block size: the blocks keep large benchmark outputs in cache, never change the answer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness import tolerances
from harness.tolerances import BENCH_CHECK, DEFAULTS, compare


def _cases(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, float]]:
    out = []
    for shape in [(), (1,), (50,), (7, 9), (3, 4, 5)]:
        a = rng.normal(size=shape) * 10.0 ** rng.integers(-3, 4, size=shape)
        b = np.asarray(a * (1 + 1e-7 * rng.normal(size=shape)))
        out.append((a, b, 0.0))
        if a.size > 4:
            for values in ([np.nan], [np.inf], [-np.inf], [np.nan, np.inf]):
                c, d = a.copy(), b.copy()
                for value in values:
                    where = np.unravel_index(rng.integers(a.size), shape)
                    c[where] = d[where] = value
                out.append((c, d, 0.0))  # matching non-finite entries
                e = d.copy()
                e.reshape(-1)[rng.integers(a.size)] = values[0]
                out.append((c, e, 0.0))  # in one array only, or a different infinity
            out.append((a, b, 1e3))
            out.append((np.zeros(shape), b, 0.0))
    return out


@pytest.mark.parametrize("block", [1, 3, 7, 64])
def test_result_does_not_depend_on_the_block_size(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(block)
    for tol in (BENCH_CHECK, DEFAULTS["float32", "value"]):
        for a, b, scale in _cases(rng):
            whole = compare(a, b, tol, scale)
            monkeypatch.setattr(tolerances, "_BLOCK", block)
            blocked = compare(a, b, tol, scale)
            monkeypatch.undo()
            assert blocked == whole, (a.shape, block)


def test_verdicts_and_where_they_point() -> None:
    tol = DEFAULTS["float32", "value"]
    a = np.array([1.0, 2.0, np.nan, np.inf])
    assert compare(a, a.copy(), tol).ok
    assert compare(a, np.array([1.0, 2.0, 0.0, np.inf]), tol).problem == "NaN in one array only, first at (2,)"
    assert compare(a, np.array([1.0, 2.0, np.nan, -np.inf]), tol).problem == "infinities differ, first at (3,)"
    worst = compare(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.2, 4.1]), tol)
    assert not worst.ok and worst.worst_index == (1,) and worst.max_abs == pytest.approx(0.2)


def test_declarations_carry_their_overrides_with_reasons() -> None:
    import harness
    from harness.tolerances import NORMWISE, Tolerance, bench_tolerance, tolerance

    for name in harness.names():
        for (dtype, quantity), tol in harness.get(name).tolerances.items():
            assert tolerance(name, dtype, quantity) is tol and len(tol.reason) > 40, (name, dtype, quantity)
    assert tolerance("soft_clip", "float32", "value").floor == NORMWISE
    assert tolerance("clamp", "float32", "value") is DEFAULTS["float32", "value"]
    assert tolerance("no_such_technique", "float64", "vjp") is DEFAULTS["float64", "vjp"]
    assert bench_tolerance("clamp", "value") is BENCH_CHECK  # clamp declares none
    assert bench_tolerance("soft_clip", "value") is BENCH_CHECK  # its declared float32 rtol is tighter
    spec = harness.get("clamp")
    loose = {("float32", "vjp"): Tolerance(3e-4, "a plugin's own reason, long enough to be read and judged")}
    assert dataclasses.replace(spec, tolerances=loose).tolerances == loose
    bad_ones = [
        {("float8", "value"): loose["float32", "vjp"]},
        {("float32", "grad"): loose["float32", "vjp"]},
        {("float32", "value"): Tolerance(1e-5, " ")},
        {("float32", "value"): 1e-5},
    ]
    for bad in bad_ones:
        with pytest.raises(ValueError, match="tolerances"):
            dataclasses.replace(spec, tolerances=bad)


def test_a_looser_declared_tolerance_only_widens_the_bench_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.tolerances import Tolerance, bench_tolerance

    loose = Tolerance(3e-4, "a plugin's reason")  # elementwise floor, looser rtol than BENCH_CHECK
    monkeypatch.setattr(tolerances, "_declared", lambda name: {("float32", "vjp"): loose})
    widened = bench_tolerance("my_limit", "vjp")
    assert widened.rtol == 3e-4 and widened.floor == BENCH_CHECK.floor and "a plugin's reason" in widened.reason
    assert bench_tolerance("my_limit", "value") is BENCH_CHECK
