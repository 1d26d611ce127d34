"""What the eager Triton path of PyTorch costs on a GPU, part by part, in half a minute: the
questions the benchmark's tables raise but cannot answer (bench/results/cuda-h200-2026-12-04).

    python -m bench.gpu_probe [--device cuda] [--sizes 10,24] [--out probe.json]

For each size (log2 of the elements; rows of 1024, batch_norm 64 channels):

- per call, synchronized after each (as ``nox -s bench`` times a row: host time and GPU time
  add), and per call of a loop synchronized at its end (host time hidden behind the GPU's
  where the GPU is the slower): our modules forward and forward+backward, beside the built-in
  op of the same meaning, a sigmoid, and a copy (the bandwidth reference);
- the correctly rounded division with a zero dividend against a nonzero one (the kernels keep
  zeros out of it: ``impl_torch/_native/fused_kernels.divide``; this measures whether that
  pays), in a kernel of its own over the same elements.

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


def probe(device: str, sizes: tuple[int, ...], seconds: float) -> list[dict[str, Any]]:
    """Every measurement at each of ``sizes`` (log2 of the elements): the benchmark's callables
    (``bench_callable``, the benchmark's inputs and parameters), ours and the built-in op's."""
    backend = harness.backend("torch")
    results: list[dict[str, Any]] = []

    def record(what: str, n: int, fn: Callable[[], Any]) -> None:
        row = {"what": what, "n": n, **_timed(fn, backend.block, seconds)}
        results.append(row)
        print(
            f"2^{n.bit_length() - 1} {what:50s} each {row['each_us']:9.1f} us   loop {row['loop_us']:9.1f} us",
            flush=True,
        )

    for log2 in sizes:
        n = 1 << log2
        x, _, _ = inputs("sigmoid", n)
        record("copy", n, backend.copy_callable(x, device))
        for name in TECHNIQUES:
            x, cot, params = inputs(name, n)
            for mode in MODES:
                ours = harness.build(name, "torch", **params)
                for side, module in (("ours", ours), ("built-in", backend.baselines.BUILTINS[name](**params))):
                    record(f"{name} {side} {mode}", n, backend.bench_callable(module, x, cot, mode, "eager", device))
        if fused.available() and (device != "cpu" or os.environ.get("TRITON_INTERPRET") == "1"):
            for what, fn in _division(n, device):
                record(what, n, fn)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", default="10,24", help="log2 element counts")
    parser.add_argument("--seconds", type=float, default=0.2, help="per measurement, roughly")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    harness.backend("torch").use_device(args.device)
    results = probe(args.device, tuple(int(s) for s in args.sizes.split(",")), args.seconds)
    if args.out:
        args.out.write_text(
            json.dumps({"device": args.device, "torch": torch.__version__, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
