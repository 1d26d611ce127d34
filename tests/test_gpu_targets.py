"""``python -m bench.gpu_targets`` reads the GPU targets off saved CUDA runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from test_report import _bench

from bench.gpu_targets import main

N = 1 << 24


def _cuda_run(path: Path, rows: dict[str, float], stamp: str) -> Path:
    rng = np.random.default_rng(len(rows))
    benchmarks = [_bench("clamp", N, row, seconds, rng, "cuda") for row, seconds in rows.items()]
    benchmarks.append(_bench("copy", N, "copy-torch-eager", 8 * N / 40e12, rng, "cuda"))  # 40 TB/s
    info = {"output_limits": {"threads": 16, "packages": {"torch": "x"}, "git": {}}}
    path.write_text(json.dumps({"machine_info": info, "datetime": stamp, "benchmarks": benchmarks}))
    return path


def test_ratios_pair_rows_of_one_run_and_a_later_run_fills_what_an_earlier_lost(tmp_path: Path) -> None:
    # Run 1 lost ours under torch.compile; run 2 measured it beside its own built-in row, on a
    # machine twice as slow: the ratio must come from run 2 alone (1.5), not 3e-6 / 2e-6 across runs.
    first = _cuda_run(tmp_path / "a.json", {"torch-eager": 1.1e-5, "builtin-torch-eager": 1e-5,
                                            "builtin-torch-compile": 2e-6, "jax-jit": 2e-5}, "first")  # fmt: skip
    second = _cuda_run(tmp_path / "b.json", {"torch-compile": 6e-6, "builtin-torch-compile": 4e-6}, "second")
    assert main([str(first), str(second), "--out", str(tmp_path / "out")]) == 0
    records = json.loads((tmp_path / "out" / "gpu-targets.json").read_text())
    found = {(r["target"], r["mode"], r["style"]): r for r in records if r["technique"] == "clamp"}
    eager = found["ours / built-in", "forward", "torch-eager"]
    assert abs(eager["value"] - 1.1) < 0.05 and eager["met"] is True
    compiled = found["ours / built-in", "forward", "torch-compile"]
    assert abs(compiled["value"] - 1.5) < 0.08 and compiled["met"] is False
    assert found["ours / built-in", "forward+backward", "torch-eager"]["met"] is None  # not measured
    # 8 N bytes in 1.1e-5 s against a copy at 40 TB/s: 0.31 of the bandwidth (rounds jitter 2%).
    share = found["share of copy bandwidth", "forward", "torch-eager"]
    assert abs(share["value"] / (8 * N / 1.1e-5 / 40e12) - 1) < 0.05 and share["met"] is False
    assert "not measured" in (tmp_path / "out" / "gpu-targets.md").read_text()
