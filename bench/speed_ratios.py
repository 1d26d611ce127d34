"""The speed targets of our own implementations, measured as ratios in one process, one thread.

    python -m bench.speed_ratios [--out ratios.json] [--strict]

Each ratio times our implementation against a plain framework op on the same input, the two
interleaved round by round so that drift hits both. ``--strict`` exits 1 when a target is missed;
``nox -s bench`` runs it without, and the report shows each target as met or missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.process import configure

N_LARGE = 1 << 22
N_SMALL = 1024


def _interleaved(
    ours: Callable[[], Any], reference: Callable[[], Any], block: Callable[[Any], None]
) -> tuple[float, float]:
    """Median seconds per call of each, alternating rounds of enough calls to last >= 5 ms."""
    for fn in (ours, reference, ours, reference):
        block(fn())
    start = time.perf_counter()
    block(reference())
    calls = max(1, int(5e-3 / max(time.perf_counter() - start, 1e-7)))
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(15):
        for i, fn in enumerate((ours, reference)):
            start = time.perf_counter()
            for _ in range(calls):
                out = fn()
            block(out)
            times[i].append((time.perf_counter() - start) / calls)
    return statistics.median(times[0]), statistics.median(times[1])


def measure() -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    import harness

    rng = np.random.default_rng(0)
    large = rng.normal(size=N_LARGE).astype(np.float32) * 2
    small = rng.normal(size=N_SMALL).astype(np.float32) * 2
    xt, st = (harness.backend("torch").from_numpy(a, "float32") for a in (large, small))
    xj, sj = jnp.asarray(large), jnp.asarray(small)
    tb = harness.backend("torch").block
    jb = harness.backend("jax").block

    def module(name: str, framework: str) -> Any:
        return harness.build(name, framework)

    torch_sc, torch_br, torch_clamp = (
        module("smooth_clamp", "torch"),
        module("bounded_relu", "torch"),
        module("clamp", "torch"),
    )
    jax_sc, jax_clamp, jax_sigmoid = module("smooth_clamp", "jax"), module("clamp", "jax"), module("sigmoid", "jax")
    torch_sigmoid = module("sigmoid", "torch")
    bare_sigmoid, bare_clip = jax.jit(jax.nn.sigmoid), jax.jit(lambda v: jnp.clip(v, -1.0, 1.0))
    sc_jit = jax.jit(lambda v: jax_sc(v))
    # layer_norm in rows of 1024 against ATen's own, parameters frozen as in the benchmark; the
    # forward+backward computes the input VJP with a fixed cotangent, under enable_grad.
    rows = xt.reshape(-1, 1024)
    torch_ln = harness.build("layer_norm", "torch", num_features=1024).requires_grad_(False)
    aten_ln = torch.nn.LayerNorm(1024).requires_grad_(False)
    leaf, cotangent = rows.clone().requires_grad_(True), torch.randn_like(rows)

    def input_vjp(layer: Any) -> Callable[[], Any]:
        def run() -> Any:
            with torch.enable_grad():
                return torch.autograd.grad(layer(leaf), leaf, cotangent)[0]

        return run

    checks = [
        (
            "PyTorch eager smooth_clamp / torch.sigmoid, 2^22 forward",
            lambda: torch_sc(xt),
            lambda: torch.sigmoid(xt),
            tb,
            2.5,
        ),
        (
            "PyTorch eager bounded_relu / the seed's relu-then-clamp, 2^22 forward",
            lambda: torch_br(xt),
            lambda: torch.clamp(torch.relu(xt), 0.0, 1.0),
            tb,
            0.6,
        ),
        (
            "jitted JAX smooth_clamp / jitted jax.nn.sigmoid, 2^22 forward",
            lambda: sc_jit(xj),
            lambda: bare_sigmoid(xj),
            jb,
            1.3,
        ),
        (
            "PyTorch clamp module / torch.clamp, 1024 elements",
            lambda: torch_clamp(st),
            lambda: torch.clamp(st, -1.0, 1.0),
            tb,
            2.5,
        ),
        (
            "PyTorch sigmoid module / torch.sigmoid, 1024 elements",
            lambda: torch_sigmoid(st),
            lambda: torch.sigmoid(st),
            tb,
            2.5,
        ),
        ("JAX clamp module / jitted jnp.clip, 1024 elements", lambda: jax_clamp(sj), lambda: bare_clip(sj), jb, 2.5),
        (
            "JAX sigmoid module / jitted jax.nn.sigmoid, 1024 elements",
            lambda: jax_sigmoid(sj),
            lambda: bare_sigmoid(sj),
            jb,
            2.5,
        ),
        (
            "PyTorch eager layer_norm / torch.nn.LayerNorm, 2^22 in rows of 1024, forward",
            lambda: torch_ln(rows),
            lambda: aten_ln(rows),
            tb,
            1.15,
        ),
        (
            "PyTorch eager layer_norm / torch.nn.LayerNorm, 2^22 in rows of 1024, forward+backward",
            input_vjp(torch_ln),
            input_vjp(aten_ln),
            tb,
            1.15,
        ),
        (
            "PyTorch clamp module without autograd / torch.clamp, 2^22 (custom gradient off the fast path)",
            lambda: torch_clamp(xt),
            lambda: torch.clamp(xt, -1.0, 1.0),
            tb,
            1.1,
        ),
    ]
    results = []
    with torch.no_grad():
        for name, ours, reference, block, limit in checks:
            ours_s, reference_s = _interleaved(ours, reference, block)
            ratio = ours_s / reference_s
            results.append(
                {
                    "check": name,
                    "ours_s": ours_s,
                    "reference_s": reference_s,
                    "ratio": ratio,
                    "limit": limit,
                    "ok": ratio <= limit,
                }
            )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    settings = configure(threads=1)
    results = measure()
    for r in results:
        mark = "met" if r["ok"] else "MISSED"
        print(f"{r['ratio']:6.2f} (limit {r['limit']}) {mark:6s} {r['check']}")
    if args.out:
        args.out.write_text(json.dumps({"settings": settings, "results": results}, indent=1))
    return 1 if args.strict and not all(r["ok"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
