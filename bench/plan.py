"""What ``nox -s bench`` measures, framework-neutral: rows, sizes, shapes, baselines, bytes.

Every registered technique (plugins included) is benchmarked in each framework's execution
styles, in both modes, on every device both frameworks see. Baselines are the seed document's
code (or the framework's own primitive) for the same technique, declared here once and
implemented in ``impl_torch/baselines.py`` and ``impl_jax/baselines.py``; so are the built-in
rows, the framework's own op beside ours in every style (``BUILTINS``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.registry import get, names
from harness.sampling import sample_cotangent, sample_input
from harness.spec import TechniqueSpec

STYLES: dict[str, tuple[str, ...]] = {"torch": ("eager", "compile"), "jax": ("jit",)}
BASELINE_STYLE: dict[str, str] = {"torch": "eager", "jax": "jit"}
MODES: tuple[str, ...] = ("forward", "forward+backward")
CPU_SIZES: tuple[int, ...] = tuple(2**k for k in range(10, 23, 2))
GPU_SIZES: tuple[int, ...] = tuple(2**k for k in range(10, 27, 2))
QUICK_TECHNIQUES: tuple[str, ...] = ("smooth_clamp", "softmax", "layer_norm")
QUICK_SIZES: tuple[int, ...] = (2**12, 2**20)
ROW = 1024  # row length of row-wise techniques and LayerNorm
CHANNELS = 64  # BatchNorm channels: a batch needs more than one value per channel to train
ITEMSIZE = 4  # float32


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Baseline:
    """Code a researcher would otherwise write for ``technique``; ``reference`` is its numpy
    formula where it differs from the technique's own (``None``: the same function)."""

    technique: str
    description: str
    reference: Callable[[np.ndarray, Mapping[str, Any]], np.ndarray] | None = None
    framework_op: bool = False  # the seed used the framework's own op: then BUILTINS' target applies


BASELINES: dict[str, Baseline] = {
    b.technique: b
    for b in (
        Baseline("bounded_relu", "the seed's BoundedReLU: relu(x), then clamp(lo, hi) (two ops)"),
        Baseline(
            "smooth_clamp",
            "the seed's naive lo + (hi - lo) * sigmoid(x) (a different function: no identity middle)",
            lambda x, p: p["lo"] + (p["hi"] - p["lo"]) * _sigmoid(x),
        ),
        Baseline("clamp", "the framework clamp (torch.clamp, jnp.clip)", framework_op=True),
        Baseline("softmax", "the framework softmax (torch.softmax, jax.nn.softmax)", framework_op=True),
        Baseline(
            "layer_norm",
            "the framework LayerNorm (F.layer_norm, nnx.LayerNorm with eps 1e-5, exact variance)",
            framework_op=True,
        ),
    )
}


def _clip_reference(x: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    return np.clip(x, p["lo"], p["hi"])


def _simplex_reference(x: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    return get("softmax").reference(x, p)


def _sigmoid_reference(x: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    return _sigmoid(x)


@dataclass(frozen=True)
class Builtin:
    """The framework's own op set beside ``technique``: of the same meaning, or (``reference``
    given, its numpy formula) of the same cost, the floor a fused implementation would reach.
    PyTorch's is called through a module, as ours is (``impl_torch.baselines._Op``)."""

    technique: str
    description: str
    reference: Callable[[np.ndarray, Mapping[str, Any]], np.ndarray] | None = None


_CLAMP = "a clamp (torch.clamp, jnp.clip)"
_SIGMOID = "one sigmoid (torch.sigmoid, jax.nn.sigmoid)"
BUILTINS: dict[str, Builtin] = {
    b.technique: b
    for b in (
        Builtin("sigmoid", "torch.sigmoid, jax.nn.sigmoid"),
        Builtin("tanh", "torch.tanh, jnp.tanh"),
        Builtin("clamp", _CLAMP),
        Builtin("hardtanh", "F.hardtanh, jnp.clip"),
        Builtin("relu6", "F.relu6, jax.nn.relu6"),
        Builtin("hardsigmoid", "F.hardsigmoid, jax.nn.hard_sigmoid"),
        Builtin("softsign", "F.softsign, jax.nn.soft_sign"),
        Builtin("bounded_relu", _CLAMP),
        Builtin("ste_clamp", _CLAMP + ", its own gradient"),
        Builtin("leaky_clamp", _CLAMP, _clip_reference),
        Builtin("smooth_clamp", _SIGMOID, _sigmoid_reference),
        Builtin("scaled_sigmoid", _SIGMOID, _sigmoid_reference),
        Builtin("scaled_tanh", _SIGMOID, _sigmoid_reference),
        Builtin("soft_clip", "the softplus composition (F.softplus, jax.nn.softplus)"),
        Builtin("softmax", "torch.softmax, jax.nn.softmax"),
        Builtin("log_softmax", "torch.log_softmax, jax.nn.log_softmax"),
        Builtin("sparsemax", "a softmax of the same rows (torch.softmax, jax.nn.softmax)", _simplex_reference),
        Builtin("layer_norm", "nn.LayerNorm, nnx.LayerNorm (eps 1e-5, exact variance)"),
        Builtin("rms_norm", "nn.RMSNorm, nnx.RMSNorm"),
        Builtin("batch_norm", "nn.BatchNorm1d, nnx.BatchNorm (momentum 0.9 = PyTorch's 0.1, exact variance), training"),
    )
}


@dataclass(frozen=True)
class BenchCase:
    """One benchmarked row: a technique (or its baseline, or a copy) at one size, mode and device."""

    technique: str
    n: int
    mode: str
    device: str
    framework: str
    style: str
    kind: str = "ours"  # "ours", "builtin", "baseline" or "copy"

    @property
    def row(self) -> str:
        prefix = "" if self.kind == "ours" else f"{self.kind}-"
        return f"{prefix}{self.framework}-{self.style}"

    @property
    def group(self) -> str:
        return f"{self.technique} n=2^{int(math.log2(self.n))} {self.mode} {self.device}"

    @property
    def id(self) -> str:
        return f"{self.technique}-2^{int(math.log2(self.n))}-{self.mode}-{self.device}-{self.row}"


def shape_and_params(spec: TechniqueSpec, n: int) -> tuple[tuple[int, ...], dict[str, Any]]:
    """The benchmark input shape for ``n`` float32 elements, and the parameters it implies."""
    if spec.feature_axis == 1:
        return (n // CHANNELS, CHANNELS), {"num_features": CHANNELS}
    if spec.feature_axis is not None:
        return (n // ROW, ROW), {"num_features": ROW}
    if spec.min_rank > 0:
        return (n // ROW, ROW), {}
    return (n,), {}


def inputs(technique: str, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Input, cotangent (float32 values held in float64) and parameters of a benchmark case,
    drawn from a seed of ``n``: the same for every row, framework and run."""
    spec = get(technique)
    shape, extra = shape_and_params(spec, n)
    params = spec.resolve(extra)
    rng = np.random.default_rng(n)
    x = sample_input(spec, params, shape, rng).astype(np.float32).astype(np.float64)
    cot = sample_cotangent(shape, rng).astype(np.float32).astype(np.float64)
    return x, cot, params


def ideal_bytes(n: int, mode: str) -> int:
    """Inputs read once and outputs written once: x -> y, or (x, cotangent) -> dx."""
    return (2 if mode == "forward" else 3) * n * ITEMSIZE


def cases(
    devices: tuple[str, ...],
    techniques: tuple[str, ...] | None = None,
    sizes_by_device: Mapping[str, tuple[int, ...]] | None = None,
    styles: Mapping[str, tuple[str, ...]] = STYLES,
    modes: tuple[str, ...] = MODES,
) -> list[BenchCase]:
    """Every row: technique x size x mode x device x (framework, style), the framework's own op
    in each style beside ours, the seed's baselines, copies."""
    chosen = techniques if techniques is not None else tuple(names())
    for name in chosen:
        get(name)  # unknown names fail here, with suggestions
    out: list[BenchCase] = []
    for device in devices:
        sizes = (sizes_by_device or {}).get(device, GPU_SIZES if device == "cuda" else CPU_SIZES)
        for n in sizes:
            # torch's clone of the same bytes: the copy bandwidth the GB/s column is measured against.
            out.append(BenchCase("copy", n, "forward", device, "torch", "eager", "copy"))
            for name in chosen:
                for mode in modes:
                    for framework, framework_styles in styles.items():
                        out.extend(BenchCase(name, n, mode, device, framework, s) for s in framework_styles)
                        if name in BUILTINS:
                            out.extend(
                                BenchCase(name, n, mode, device, framework, s, "builtin") for s in framework_styles
                            )
                        if name in BASELINES and framework_styles:
                            out.append(
                                BenchCase(name, n, mode, device, framework, BASELINE_STYLE[framework], "baseline")
                            )
    return out
