"""What a JAX program holds once lowered for a platform: the data-dependent control flow it
keeps, and how many passes over its data it needs one after another.

``lax.platform_dependent``'s conds (those with ``branches_platforms``) are resolved to the
platform's branch, as lowering does; nested programs (jit, custom_jvp, checkpoint, cond
branches) are followed. Both read jaxprs, which name no backend: a GPU's program can be read on
a machine without one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from flax import nnx

REDUCTIONS = frozenset(
    {"reduce_sum", "reduce_max", "reduce_min", "reduce_or", "reduce_and", "reduce_prod", "argmax", "argmin"}
)
LOOPS = frozenset({"while", "scan"})


def benchmarked(fn: Any, x: np.ndarray, cotangent: np.ndarray, mode: str) -> tuple[Callable[..., Any], tuple]:
    """The function the benchmark times for ``fn`` (a module or a function) and its arguments, in
    float32: the call on ``x`` (forward) or the input VJP with ``cotangent`` (forward+backward); a
    module's state is an argument, as in impl_jax.timing.bench_callable."""
    xj, cj = (jax.numpy.asarray(a, jax.numpy.float32) for a in (x, cotangent))
    if isinstance(fn, nnx.Module):
        graphdef, state = nnx.split(fn)

        def call(s: Any, v: jax.Array) -> jax.Array:
            return nnx.merge(graphdef, s, copy=True)(v)

        if mode == "forward":
            return call, (state, xj)
        return (lambda s, v, c: jax.vjp(lambda u: call(s, u), v)[1](c)[0]), (state, xj, cj)
    if mode == "forward":
        return fn, (xj,)
    return (lambda v, c: jax.vjp(fn, v)[1](c)[0]), (xj, cj)


def program(fn: Any, x: np.ndarray, cotangent: np.ndarray, mode: str) -> Any:
    """The jaxpr of :func:`benchmarked`'s function on its arguments."""
    traced, args = benchmarked(fn, x, cotangent, mode)
    return jax.make_jaxpr(traced)(*args).jaxpr


def _nested(eqn: Any, platform: str) -> Iterator[tuple[Any, list[Any]]]:
    """The programs an equation runs on ``platform``, each with the outer values its inputs are."""
    if eqn.primitive.name == "cond":
        branches, table = eqn.params["branches"], eqn.params.get("branches_platforms")
        if table is not None:
            listed = [i for i, platforms in enumerate(table) if platforms is not None and platform in platforms]
            branches = [branches[listed[0] if listed else table.index(None)]]
        for branch in branches:
            yield branch.jaxpr, list(eqn.invars[1:])
        return
    for value in eqn.params.values():
        for sub in value if isinstance(value, tuple | list) else (value,):
            inner = sub.jaxpr if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns") else sub
            if hasattr(inner, "eqns"):
                yield inner, list(eqn.invars)


def control_flow(jaxpr: Any, platform: str) -> list[str]:
    """The data-dependent conds and loops the program keeps on ``platform``, nested ones too."""
    found = []
    for eqn in jaxpr.eqns:
        platform_cond = eqn.primitive.name == "cond" and eqn.params.get("branches_platforms") is not None
        if eqn.primitive.name in {"cond", *LOOPS} and not platform_cond:
            found.append(eqn.primitive.name)
        for inner, _ in _nested(eqn, platform):
            found += control_flow(inner, platform)
    return found


def has_platform_forms(jaxpr: Any) -> bool:
    """Whether the program holds a form per platform (``lax.platform_dependent``), nested too."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "cond" and eqn.params.get("branches_platforms") is not None:
            return True
        # Not a platform's cond: every platform sees the same nested programs.
        if any(has_platform_forms(inner) for inner, _ in _nested(eqn, "cpu")):
            return True
    return False


def passes(jaxpr: Any, platform: str) -> float:
    """The longest chain of reductions over the data, each waiting for the one before: a GPU
    reads the data once per link at least (XLA fuses reductions of one input, siblings, into one
    kernel, and elementwise work into them), so a program with fewer links than another cannot
    be made to read less. A reduction over axes of one element (a transpose's bookkeeping) is no
    pass; a loop's passes are unbounded (inf)."""
    return max(_depths(jaxpr, [0.0] * len(jaxpr.invars), platform), default=0.0)


def _depths(jaxpr: Any, inputs: list[float], platform: str) -> list[float]:
    depth = dict(zip(jaxpr.invars, inputs, strict=True))

    def of(v: Any) -> float:
        return 0.0 if hasattr(v, "val") else depth.get(v, 0.0)  # literals and constants: 0

    for eqn in jaxpr.eqns:
        before = max((of(v) for v in eqn.invars), default=0.0)
        nested = list(_nested(eqn, platform))
        if eqn.primitive.name in LOOPS:
            outs = [math.inf] * len(eqn.outvars)
        elif nested:
            # A branch starts once its predicate is known.
            waits = of(eqn.invars[0]) if eqn.primitive.name == "cond" else 0.0
            results = [_depths(inner, [max(of(v), waits) for v in args], platform) for inner, args in nested]
            outs = [max(r[i] for r in results) for i in range(len(eqn.outvars))]
        else:
            reduces = eqn.primitive.name in REDUCTIONS and _reduced_size(eqn) > 1
            outs = [before + reduces] * len(eqn.outvars)
        depth.update(zip(eqn.outvars, outs, strict=True))
    return [of(v) for v in jaxpr.outvars]


def _reduced_size(eqn: Any) -> int:
    shape = eqn.invars[0].aval.shape
    return math.prod(shape[a] for a in eqn.params.get("axes", ()))
