"""``python -m harness report`` turns saved runs, from one machine or several, into one report."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from harness.report import load, ratio_ci

ROOT = Path(__file__).resolve().parents[1]


def _bench(technique: str, n: int, row: str, median: float, rng: np.random.Generator, device: str = "cpu") -> dict:
    framework, style = row.removeprefix("baseline-").removeprefix("copy-").split("-")
    kind = "baseline" if row.startswith("baseline") else "copy" if row.startswith("copy") else "ours"
    data = list(median * (1 + 0.02 * rng.standard_normal(9)))
    q1, q3 = np.percentile(data, [25, 75])
    return {
        "group": f"{technique} {n}",
        "name": f"test_bench[{technique}-{row}]",
        "extra_info": {
            "technique": technique,
            "n": n,
            "mode": "forward",
            "device": device,
            "device_name": "Fake GPU" if device == "cuda" else "cpu",
            "framework": framework,
            "style": style,
            "kind": kind,
            "row": row,
            "ideal_bytes": 8 * n,
            "compile_s": 0.5,
            "first_call_s": 0.6,
            "check_error": 1e-7,
        },
        "stats": {"median": float(np.median(data)), "q1": q1, "q3": q3, "rounds": 9, "iterations": 1, "data": data},
    }


def _run(path: Path, cpu_model: str, device: str, scale: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    n = 2**20
    benchmarks = [_bench("copy", n, "copy-torch-eager", 1e-4 * scale, rng, device)]
    for row, t in (("torch-eager", 2e-3), ("torch-compile", 1e-3), ("jax-jit", 1e-3), ("baseline-torch-eager", 3e-3)):
        benchmarks.append(_bench("clamp", n, row, t * scale, rng, device))
    info = {"output_limits": {"cpu_model": cpu_model, "threads": 1, "packages": {"torch": "x"}, "git": {}}}
    path.write_text(json.dumps({"machine_info": info, "datetime": "now", "benchmarks": benchmarks}))
    return path


def test_two_runs_merge_into_one_report(tmp_path: Path) -> None:
    cpu = _run(tmp_path / "cpu.json", "Test CPU", "cpu", 1.0, 0)
    gpu = _run(tmp_path / "gpu.json", "Host CPU", "cuda", 0.01, 1)
    out = tmp_path / "report"
    subprocess.run(
        [sys.executable, "-m", "harness", "report", str(cpu), str(gpu), "--out", str(out)], check=True, cwd=ROOT
    )
    md = (out / "report.md").read_text()
    assert "## forward, cpu: Test CPU, 1 thread(s)" in md
    assert "## forward, cuda: Fake GPU, 1 thread(s)" in md
    row = next(line for line in md.splitlines() if line.startswith("| clamp | 2^20 |"))
    # JAX / eager is about 0.5 with an interval around it; eager reaches 8n bytes / 2 ms = 4.2 GB/s,
    # 5% of the same-size copy (8n bytes / 0.1 ms).
    assert "0.5" in row.split("|")[6] and "[" in row.split("|")[6]
    assert re.search(r"· 4\.\d+ GB/s, 5% \|", row), row
    with (out / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["machine"] for r in rows} == {"cpu: Test CPU, 1 thread(s)", "cuda: Fake GPU, 1 thread(s)"}
    assert "\\toprule" in (out / "report.tex").read_text()
    assert len(load([cpu, gpu])[0]) == 10


def test_ratio_interval_contains_the_point_and_shrinks_with_agreement() -> None:
    rng = np.random.default_rng(0)
    a, b = tuple(1.0 + 0.01 * rng.standard_normal(30)), tuple(2.0 + 0.01 * rng.standard_normal(30))
    point, lo, hi = ratio_ci(a, b)
    assert lo <= point <= hi and abs(point - 0.5) < 0.01 and hi - lo < 0.02
