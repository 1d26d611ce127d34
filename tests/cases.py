"""Test cases read from the registry: every technique, with its defaults and declared examples.

A technique registered tomorrow (here or by a plugin) appears in every list below, so every
generic test covers it with no new test code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import harness

FRAMEWORKS = harness.FRAMEWORKS
NUM_FEATURES = 8
# The pass of nox -s tests that runs PyTorch's eager CUDA kernels (Triton) in Triton's
# interpreter on the CPU; and pytest --device cuda, which compiles them for the GPU.
IN_TRITON_PASS = os.environ.get("OUTPUT_LIMITS_TRITON_CPU") == "1" and os.environ.get("TRITON_INTERPRET") == "1"
ON_CUDA = harness.backend("torch").device() == "cuda"


@dataclass(frozen=True)
class Case:
    """One technique with one parameter set (and, for stateful techniques, one mode)."""

    name: str
    given: Mapping[str, Any]
    mode: str = "train"
    id: str = field(default="")

    def spec(self) -> harness.TechniqueSpec:
        return harness.get(self.name)

    def params(self, dtype: str = "float32") -> dict[str, Any]:
        """The parameters to build with; modules with learned parameters take the test dtype."""
        extra = {"num_features": NUM_FEATURES, "dtype": dtype} if self.spec().takes_num_features else {}
        return {**extra, **self.given}

    def resolved(self, dtype: str = "float32") -> dict[str, Any]:
        return self.spec().resolve(self.params(dtype))

    def build(self, framework: str, dtype: str = "float32") -> Any:
        module = harness.backend(framework).place(harness.build(self.name, framework, **self.params(dtype)))
        if self.mode == "eval":
            module.eval()
        return module


def _cases(include_modes: bool) -> list[Case]:
    out = []
    for name in harness.names():
        spec = harness.get(name)
        modes = ("train", "eval") if include_modes and spec.stateful else ("train",)
        for i, given in enumerate([{}, *spec.examples]):
            for mode in modes:
                suffix = "" if mode == "train" or not spec.stateful else "-eval"
                out.append(Case(name, dict(given), mode, f"{name}-{'defaults' if i == 0 else f'ex{i}'}{suffix}"))
    return out


CASES = _cases(include_modes=True)
TRAIN_CASES = _cases(include_modes=False)
# Each technique's defaults, a stateful one in both modes.
MODE_DEFAULTS = [c for c in CASES if not c.given]


def params(cases: list[Case]) -> list[Any]:
    return [pytest.param(c, id=c.id) for c in cases]


def randomize_state(modules: Mapping[str, Any], rng: np.random.Generator) -> None:
    """Load the same random parameter values into each framework's module.

    Values are drawn in [0.5, 2): positive, so any variance-like entry stays valid.
    """
    reference = harness.backend(FRAMEWORKS[0]).get_state(modules[FRAMEWORKS[0]])
    state = {k: rng.uniform(0.5, 2.0, size=v.shape) for k, v in reference.items()}
    for framework, module in modules.items():
        harness.backend(framework).set_state(module, state)


def run(framework: str, module: Any, x: np.ndarray, dtype: str) -> tuple[np.ndarray, str]:
    """Forward ``x`` (numpy) through ``module``; returns the output as numpy and its dtype name."""
    backend = harness.backend(framework)
    y = module(backend.from_numpy(x, dtype))
    return backend.to_numpy(y), backend.dtype_name(y)


def around_kinks(kinks: Sequence[harness.Kink], dtype: str) -> np.ndarray:
    """Each kink and one ulp either side, in one array (one call per framework for all kinks).
    One ulp away, but never a subnormal: XLA on CPU flushes those to zero (harness/divergences.py)."""
    points = []
    for kink in kinks:
        step = max(abs(float(np.spacing(np.array(kink.x, dtype=dtype)))), float(np.finfo(dtype).tiny))
        points += [kink.x - step, kink.x, kink.x + step]
    return np.array(points)
