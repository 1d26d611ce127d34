"""The conformance kit: the generic checks of any registered technique, built-in or plugin, as
functions that measure and report instead of asserting (``python -m harness check``, and the
pytest plugin in ``harness.pytest_plugin``).

Each check runs a technique's defaults and declared examples in both frameworks and returns one
:class:`Result` per (check, parameter set, dtype): the worst measured error against its limit,
from the same tolerance table the repository's own tests use (``harness.tolerances``, the
declaration's overrides included). The repository's suite (tests/) runs the same checks, and
more, with assertions; this kit is what a plugin's author can run without it.

Importing this module imports no framework; running a check imports both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import harness
from harness.sampling import extreme_values, input_shape, round_to, sample_cotangent, sample_input
from harness.spec import DTYPES, TechniqueSpec
from harness.tolerances import compare, tolerance

NUM_FEATURES = 5  # for techniques with learned parameters
FRAMEWORKS = ("torch", "jax")


@dataclass(frozen=True)
class Result:
    """One measured check: ``worst`` against ``limit`` (``ok`` when within it); ``case`` names
    the parameters and dtype, ``detail`` what failed and where."""

    technique: str
    check: str
    case: str
    worst: float
    limit: float
    ok: bool
    detail: str = ""


def _cases(spec: TechniqueSpec) -> list[tuple[str, dict[str, Any]]]:
    extra = {"num_features": NUM_FEATURES} if spec.takes_num_features else {}
    return [
        ("defaults" if i == 0 else f"example {i} {dict(given)}", {**extra, **given})
        for i, given in enumerate([{}, *spec.examples])
    ]


def _params(spec: TechniqueSpec, given: Mapping[str, Any], dtype: str) -> dict[str, Any]:
    # Modules with learned parameters are built in the dtype at hand, and some defaults follow
    # it (rms_norm's eps is that dtype's machine epsilon).
    return {**given, "dtype": dtype} if spec.takes_num_features else dict(given)


def _build(name: str, framework: str, given: Mapping[str, Any], dtype: str) -> Any:
    return harness.build(name, framework, **_params(harness.get(name), given, dtype))


def _forward(name: str, framework: str, given: Mapping[str, Any], x: np.ndarray, dtype: str) -> np.ndarray:
    backend = harness.backend(framework)
    return backend.to_numpy(_build(name, framework, given, dtype)(backend.from_numpy(x, dtype)))


def _compared(name: str, check: str, case: str, dtype: str, a: Any, b: Any, quantity: str) -> Result:
    tol = tolerance(name, dtype, quantity)
    result = compare(a, b, tol)
    detail = "" if result.ok else (result.problem or f"worst at index {result.worst_index}")
    return Result(name, check, f"{case}, {dtype}", result.max_rel, tol.rtol, result.ok, detail)


def check_reference(name: str, rng: np.random.Generator) -> list[Result]:
    """Values of each framework against the declaration's float64 numpy reference, on inputs
    rounded to the dtype first (float64, float32)."""
    spec, out = harness.get(name), []
    if spec.reference is None:
        return out
    for case, given in _cases(spec):
        for dtype in ("float64", "float32"):
            resolved = spec.resolve(_params(spec, given, dtype))
            x = round_to(sample_input(spec, resolved, input_shape(spec, resolved), rng), dtype)
            expected = spec.reference(x, resolved)
            for framework in FRAMEWORKS:
                y = _forward(name, framework, given, x, dtype)
                out.append(_compared(name, "reference", f"{case}, {framework}", dtype, y, expected, "value"))
    return out


def check_parity(name: str, rng: np.random.Generator) -> list[Result]:
    """PyTorch against JAX: values and input VJPs (random cotangents) in every dtype."""
    spec, out = harness.get(name), []
    for case, given in _cases(spec):
        resolved = spec.resolve(given)
        x = sample_input(spec, resolved, input_shape(spec, resolved), rng)
        cotangent = sample_cotangent(x.shape, rng)
        for dtype in DTYPES:
            runs = [
                harness.backend(fw).vjp(_build(name, fw, given, dtype), x, cotangent, dtype)[:2] for fw in FRAMEWORKS
            ]
            (y_torch, dx_torch), (y_jax, dx_jax) = runs
            out.append(_compared(name, "parity values", case, dtype, y_torch, y_jax, "value"))
            out.append(_compared(name, "parity vjp", case, dtype, dx_torch, dx_jax, "vjp"))
    return out


def check_finite_differences(name: str, rng: np.random.Generator) -> list[Result]:
    """Each framework's float64 input VJP against a central difference of its own forward along
    a random direction: <dx, v> = (c . f(x + hv) - c . f(x - hv)) / 2h."""
    spec, out = harness.get(name), []
    if spec.vjp_reference is not None:  # a declared gradient that is not the forward's derivative
        return out
    for case, given in _cases(spec):
        resolved = spec.resolve(given)
        x = sample_input(spec, resolved, input_shape(spec, resolved), rng)
        cotangent, v = sample_cotangent(x.shape, rng), rng.normal(size=x.shape)
        h = 1e-6 * (1.0 + float(np.max(np.abs(x))))
        for framework in FRAMEWORKS:
            _, dx, _ = harness.backend(framework).vjp(
                _build(name, framework, given, "float64"), x, cotangent, "float64"
            )
            ahead, behind = (_forward(name, framework, given, x + s * h * v, "float64") for s in (1.0, -1.0))
            slope = float(np.vdot(cotangent, ahead - behind)) / (2.0 * h)
            scale = float(np.linalg.norm(dx * v)) or 1.0
            error = abs(float(np.vdot(dx, v)) - slope) / scale
            limit = 1e-5  # truncation h^2 and rounding eps / h, relative to the terms, with margin
            ok = error <= limit
            detail = "" if ok else f"<dx, v> = {np.vdot(dx, v):.6g}, the difference says {slope:.6g}"
            out.append(Result(name, "finite differences", f"{case}, {framework}", error, limit, ok, detail))
    return out


def check_kinks(name: str, rng: np.random.Generator) -> list[Result]:
    """The declared gradient at each kink, exactly, and one ulp either side, in float64 and
    float32 (elementwise techniques, which are the ones that declare kinks)."""
    spec, out = harness.get(name), []
    for case, given in _cases(spec):
        kinks = () if spec.takes_num_features else spec.kinks(**given)
        if not kinks:
            continue
        for dtype in ("float64", "float32"):
            points, declared = [], []
            for kink in kinks:
                step = max(abs(float(np.spacing(np.array(kink.x, dtype=dtype)))), float(np.finfo(dtype).tiny))
                points += [kink.x - step, kink.x, kink.x + step]
                declared += [kink.left, kink.at, kink.right]
            x, want = np.array(points), round_to(np.array(declared), dtype)
            for framework in FRAMEWORKS:
                module = _build(name, framework, given, dtype)
                _, dx, _ = harness.backend(framework).vjp(module, x, np.ones_like(x), dtype)
                at = np.abs(dx[1::3] - want[1::3])
                beside = np.abs(np.concatenate([dx[0::3] - want[0::3], dx[2::3] - want[2::3]]))
                exact = bool((at == 0).all())  # the declared value exactly at the kink, 1e-6 beside it
                worst = float(beside.max()) if exact else math.inf
                ok = exact and worst <= 1e-6
                detail = "" if ok else f"gradients {dx.tolist()} at {x.tolist()}, declared {want.tolist()}"
                out.append(Result(name, "kinks", f"{case}, {framework}, {dtype}", worst, 1e-6, ok, detail))
    return out


def _extreme_input(spec: TechniqueSpec, resolved: Mapping[str, Any], dtype: str) -> np.ndarray:
    """Every extreme value of the dtype, and NaN: as they are for an elementwise technique, else
    one per row (along the first axis) of otherwise ordinary values."""
    values = np.concatenate([extreme_values(dtype), [math.nan]])
    if spec.min_rank == 0 and spec.feature_axis is None:
        return values
    row = input_shape(spec, resolved)[1:]
    x = np.tile(np.linspace(-1.0, 1.0, int(np.prod(row))).reshape(row), (len(values),) + (1,) * len(row))
    x[(slice(None),) + (0,) * len(row)] = values
    return x


def check_bounds(name: str, rng: np.random.Generator) -> list[Result]:
    """Infinities, the largest finite values, zeros and NaN in every dtype: every non-NaN output
    inside the declared bounds in that dtype, and a NaN wherever a NaN went in (elementwise)."""
    spec, out = harness.get(name), []
    for case, given in _cases(spec):
        resolved = spec.resolve(given)
        lo, hi = spec.bounds(**given)
        for dtype in DTYPES:
            x = _extreme_input(spec, resolved, dtype)
            lo_d, hi_d = (float(round_to(np.array([b]), dtype)[0]) for b in (lo, hi))
            for framework in FRAMEWORKS:
                y = _forward(name, framework, given, x, dtype)
                finite = ~np.isnan(y)
                # Distances past each bound, 0 inside (an output on an infinite bound is inside).
                below = np.where(y[finite] < lo_d, lo_d - y[finite], 0.0)
                above = np.where(y[finite] > hi_d, y[finite] - hi_d, 0.0)
                worst = float(max(below.max(initial=0.0), above.max(initial=0.0)))
                lost = spec.reduction_axes(x.ndim, resolved) == () and not np.isnan(y[np.isnan(x)]).all()
                ok = worst == 0.0 and not lost
                detail = "" if ok else ("a NaN input gave a number" if lost else f"outputs outside [{lo_d}, {hi_d}]")
                out.append(Result(name, "bounds", f"{case}, {framework}, {dtype}", worst, 0.0, ok, detail))
    return out


def check_shapes(name: str, rng: np.random.Generator) -> list[Result]:
    """The output has the input's shape and dtype, for an empty, a small and a rank-5 input."""
    spec, out = harness.get(name), []
    for case, given in _cases(spec):
        resolved = spec.resolve(given)
        shapes = [input_shape(spec, resolved), input_shape(spec, resolved, "rank5")]
        if spec.min_rank == 0:
            shapes.append((0, 3))
        for framework in FRAMEWORKS:
            backend = harness.backend(framework)
            for shape in shapes:
                y = _build(name, framework, given, "float32")(backend.from_numpy(np.zeros(shape) + 0.5, "float32"))
                got = (tuple(y.shape), backend.dtype_name(y))
                ok = got == (shape, "float32")
                detail = "" if ok else f"input {shape} float32 gave {got}"
                out.append(Result(name, "shapes", f"{case}, {framework}, {shape}", 0.0 if ok else 1.0, 0.0, ok, detail))
    return out


def check_bad_parameters(name: str, rng: np.random.Generator) -> list[Result]:
    """Each declared reject raises ValueError, with the same message in both frameworks."""
    spec, out = harness.get(name), []
    base = {"num_features": NUM_FEATURES} if spec.takes_num_features else {}
    for reject in spec.rejects:
        messages = {}
        for framework in FRAMEWORKS:
            try:
                harness.build(name, framework, **{**base, **reject})
            except ValueError as error:
                messages[framework] = str(error)
            except Exception as error:
                messages[framework] = f"{type(error).__name__} instead of ValueError: {error}"
        ok = len(messages) == 2 and len(set(messages.values())) == 1 and "instead of" not in str(messages)
        detail = "" if ok else f"{dict(reject)}: {messages or 'accepted by both'}"
        out.append(Result(name, "bad parameters", str(dict(reject)), 0.0 if ok else 1.0, 0.0, ok, detail))
    return out


def check_transforms(name: str, rng: np.random.Generator) -> list[Result]:
    """Forward mode against reverse mode (<jvp(t), c> = <t, vjp(c)>) and vmap against a loop,
    in float64, in each framework."""
    spec, out = harness.get(name), []
    for case, given in _cases(spec):
        resolved = spec.resolve(given)
        x = sample_input(spec, resolved, input_shape(spec, resolved), rng)
        t, c = rng.normal(size=x.shape), sample_cotangent(x.shape, rng)
        for framework in FRAMEWORKS:
            backend = harness.backend(framework)
            module = _build(name, framework, given, "float64")
            # Evaluation mode for modules with state: torch.func refuses a training-mode BatchNorm's
            # in-place update of its running statistics, torch.nn.BatchNorm1d's as ours.
            backend.set_training(module, False if spec.stateful else None)
            _, dx, _ = backend.vjp(module, x, c, "float64")
            _, tangent = backend.jvp(module, x, t, "float64")
            forward, reverse = float(np.vdot(tangent, c)), float(np.vdot(t, dx))
            size = float(np.linalg.norm(t * dx)) or 1.0
            tol = tolerance(name, "float64", "vjp")
            error = abs(forward - reverse) / size
            detail = "" if error <= tol.rtol else f"<jvp, c> = {forward:.6g} but <t, vjp> = {reverse:.6g}"
            out.append(Result(name, "forward mode", f"{case}, {framework}", error, tol.rtol, not detail, detail))
            if spec.stateful:
                continue
            xs = np.stack([x, -x, 0.5 * x])
            looped = np.stack([_forward(name, framework, given, row, "float64") for row in xs])
            mapped = backend.vmapped(_build(name, framework, given, "float64"), xs, "float64")
            out.append(_compared(name, "vmap", f"{case}, {framework}", "float64", mapped, looped, "value"))
    return out


CHECKS: dict[str, Callable[[str, np.random.Generator], list[Result]]] = {
    "reference": check_reference,
    "parity": check_parity,
    "finite differences": check_finite_differences,
    "kinks": check_kinks,
    "bounds": check_bounds,
    "shapes": check_shapes,
    "bad parameters": check_bad_parameters,
    "transforms": check_transforms,
}


def prepare() -> None:
    """What every check needs before the first array: float64 in JAX."""
    import jax

    jax.config.update("jax_enable_x64", True)


def run(names: Iterable[str], checks: Iterable[str] | None = None, seed: int = 0) -> list[Result]:
    """Every check (or those named) on every named technique. A check that raises counts as
    failed, with the error as its detail, so one broken technique does not hide the others."""
    prepare()
    out = []
    for name in names:
        harness.get(name)  # an unknown name raises here, with a suggestion
        for check in checks or CHECKS:
            rng = np.random.default_rng(seed)
            try:
                out += CHECKS[check](name, rng)
            except Exception as error:
                first = str(error).splitlines()[0] if str(error) else ""
                out.append(Result(name, check, "", math.inf, 0.0, False, f"raised {type(error).__name__}: {first}"))
    return out


def table(results: list[Result]) -> str:
    """A markdown table: per technique and check, the worst error over its cases against the
    limit there, the number of cases and how many failed."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.technique, r.check), []).append(r)
    out = ["| technique | check | worst / limit | cases | failed |", "|---|---|---|---|---|"]
    for (technique, check), rs in groups.items():
        worst = max(rs, key=lambda r: (not r.ok, r.worst / r.limit if r.limit > 0 else r.worst))
        failed = sum(not r.ok for r in rs)
        out.append(f"| {technique} | {check} | {worst.worst:.3g} / {worst.limit:.3g} | {len(rs)} | {failed or ''} |")
    return "\n".join(out)
