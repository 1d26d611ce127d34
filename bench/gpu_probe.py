"""What the eager Triton path of PyTorch costs on a GPU, part by part, in half a minute: the
questions the benchmark's tables raise but cannot answer (bench/results/cuda-h200-2026-12-04).

    python -m bench.gpu_probe [--device cuda] [--sizes 10,24] [--out probe.json]

For each size (log2 of the elements; rows of 1024, batch_norm 64 channels), PyTorch eager:

- per call, synchronized after each (as ``nox -s bench`` times a row: host time and GPU time
  add), and per call of a loop synchronized at its end (host time hidden behind the GPU's
  where the GPU is the slower): our modules forward and forward+backward, beside the built-in
  op of the same meaning, a sigmoid, and a copy (the bandwidth reference);
- the correctly rounded division with a zero dividend against a nonzero one (the kernels keep
  zeros out of it: ``impl_torch/_native/fused_kernels.divide``; this measures whether that
  pays), in a kernel of its own over the same elements.

And at the largest size, jax.jit: the norms, softmaxes and sparsemax against flax's and
jax.nn's ops, and again in the forms they take on the CPU (``lax.cond`` skipping the fallback,
sparsemax's blocked loop; off the CPU they take others: ``impl_jax._common.cpu_or_accelerator``):
what reading a predicate on the host costs on this device, against what the branch-free forms do.

Prints one line per measurement and writes them as JSON. ``--device cpu`` runs it in Triton's
interpreter (``TRITON_INTERPRET=1 OUTPUT_LIMITS_TRITON_CPU=1``), small sizes only: a check that
the script runs, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import harness
from bench.plan import MODES, inputs
from impl_torch._native import fused

# Those whose eager CUDA path is a Triton kernel (impl_torch/_native/fused.py, rows.py,
# channels.py), hardsigmoid (its C++ node) and sigmoid (an ATen op: the reference's reference).
TECHNIQUES = (
    "sigmoid", "hardsigmoid", "smooth_clamp", "scaled_sigmoid", "scaled_tanh", "soft_clip", "leaky_clamp",
    "softsign", "layer_norm", "rms_norm", "softmax", "log_softmax", "sparsemax", "batch_norm",
)  # fmt: skip


def _timed(fn: Callable[[], Any], block: Callable[[Any], None], seconds: float) -> dict[str, float]:
    """Microseconds per call of ``fn``, median of five rounds: waiting for each call's output
    (``block``, as the benchmark does: host and GPU time add up), and for a loop's last only
    (the host's time hides behind the GPU's where the GPU is the slower)."""
    block(fn())
    start = time.perf_counter()
    block(fn())
    calls = max(1, min(2000, int(seconds / 10 / max(time.perf_counter() - start, 1e-6))))
    each, loop = [], []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            block(fn())
        each.append((time.perf_counter() - start) / calls * 1e6)
        start = time.perf_counter()
        for _ in range(calls):
            out = fn()
        block(out)
        loop.append((time.perf_counter() - start) / calls * 1e6)
    return {"each_us": statistics.median(each), "loop_us": statistics.median(loop), "calls": calls}


def _division(n: int, device: str) -> list[tuple[str, Callable[[], torch.Tensor]]]:
    """div.rn of nonzeros and of half zeros, and ``divide`` of half zeros, by 3, a kernel each."""
    from bench.division_probe import quotients

    out, b = torch.empty(n, device=device), torch.full((n,), 3.0, device=device)
    half = torch.where(torch.rand(n, device=device) < 0.5, 0.0, 1.5)
    grid = (-(-n // 1024),)

    def run(a: torch.Tensor, guard: bool) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            quotients[grid](a, b, out, n, GUARD=guard, BLOCK=1024)
            return out

        return call

    nonzero = torch.rand(n, device=device) + 1.0
    return [
        ("div.rn, no zero", run(nonzero, False)),
        ("div.rn, half zeros", run(half, False)),
        ("divide, half zeros", run(half, True)),
    ]


class _Recorder:
    """Times callables, prints a line for each, and keeps the results (rewritten to ``out`` after
    each: a probe cut by its time limit keeps what it measured)."""

    def __init__(self, out: Path | None, seconds: float) -> None:
        self.out, self.seconds, self.results = out, seconds, []

    def __call__(self, what: str, n: int, fn: Callable[[], Any], block: Callable[[Any], None]) -> None:
        log2 = n.bit_length() - 1
        try:
            row = {"what": what, "n": n, **_timed(fn, block, self.seconds)}
        except Exception as error:  # one failure must not cost the rest of a GPU session
            row = {"what": what, "n": n, "error": f"{type(error).__name__}: {error}"[:500]}
            print(f"2^{log2} {what:52s} failed: {row['error']}", flush=True)
        else:
            print(f"2^{log2} {what:52s} each {row['each_us']:9.1f} us   loop {row['loop_us']:9.1f} us", flush=True)
        self.results.append(row)
        if self.out:
            self.out.write_text(json.dumps({"torch": torch.__version__, "results": self.results}, indent=1))


def _ours_and_built_in(record: _Recorder, framework: str, names: tuple[str, ...], n: int, device: str) -> None:
    """The benchmark's rows of ``names`` at ``n`` elements in ``framework``'s benchmarked style
    (eager, jit): ours and the built-in op's, forward and forward+backward."""
    backend = harness.backend(framework)
    style, prefix = ("eager", "") if framework == "torch" else ("jit", f"{framework} ")
    for name in names:
        x, cot, params = inputs(name, n)
        for mode in MODES:
            ours = harness.build(name, framework, **params)
            for side, module in (("ours", ours), ("built-in", backend.baselines.BUILTINS[name](**params))):
                fn = backend.bench_callable(module, x, cot, mode, style, device)
                record(f"{prefix}{name} {side} {mode}", n, fn, backend.block)


def probe_torch(record: _Recorder, device: str, sizes: tuple[int, ...]) -> None:
    """At each of ``sizes`` (log2 of the elements): the benchmark's callables (``bench_callable``,
    its inputs and parameters), ours and the built-in op's, eager; a copy; the division check."""
    backend = harness.backend("torch")
    for log2 in sizes:
        n = 1 << log2
        x, _, _ = inputs("sigmoid", n)
        record("copy", n, backend.copy_callable(x, device), backend.block)
        _ours_and_built_in(record, "torch", TECHNIQUES, n, device)
        if fused.available() and (device != "cpu" or os.environ.get("TRITON_INTERPRET") == "1"):
            for what, fn in _division(n, device):
                record(what, n, fn, backend.block)


# The JAX rows the H200 run found at 1.3-2.5 times flax's and jax.nn's ops at 2^24, and
# sparsemax (130-150 softmaxes there; its threshold's GPU lowering changed since).
JAX_TECHNIQUES = ("layer_norm", "rms_norm", "softmax", "log_softmax", "batch_norm", "sparsemax")


def probe_jax(record: _Recorder, device: str, log2: int) -> None:
    """jax.jit at 2^``log2``: ours and the built-in op for JAX_TECHNIQUES, then ours again in
    the CPU's form (CPU_FORMS widened to the GPUs, every compiled program
    dropped before and after, so each form is traced anew)."""
    import jax

    from impl_jax import _common

    backend = harness.backend("jax")
    backend.use_device(device)
    n = 1 << log2
    _ours_and_built_in(record, "jax", JAX_TECHNIQUES, n, device)
    kept = _common.CPU_FORMS
    _common.CPU_FORMS = ("cpu", "cuda", "rocm")
    jax.clear_caches()
    try:
        for name in JAX_TECHNIQUES:
            x, cot, params = inputs(name, n)
            for mode in MODES:
                fn = backend.bench_callable(harness.build(name, "jax", **params), x, cot, mode, "jit", device)
                record(f"jax {name} ours in the CPU's form {mode}", n, fn, backend.block)
    finally:
        _common.CPU_FORMS = kept
        jax.clear_caches()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", default="10,24", help="log2 element counts (JAX: the largest only)")
    parser.add_argument("--seconds", type=float, default=0.2, help="per measurement, roughly")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    record = _Recorder(args.out, args.seconds)
    harness.backend("torch").use_device(args.device)
    probe_torch(record, args.device, sizes)
    probe_jax(record, args.device, max(sizes))


if __name__ == "__main__":
    main()
