"""``python -m harness report`` turns saved runs, from one machine or several, into one report."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.report import load, paired_ratio_ci, ratio_ci

ROOT = Path(__file__).resolve().parents[1]


def _bench(technique: str, n: int, row: str, median: float, rng: np.random.Generator, device: str = "cpu") -> dict:
    *prefix, framework, style = row.split("-")
    kind = prefix[0] if prefix else "ours"  # baseline-, builtin- or copy- before framework-style
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


def _run(
    path: Path, cpu_model: str, device: str, scale: float, seed: int, stamp: str = "now", paired: float = 0.0
) -> Path:
    """A saved run of clamp at 2^20; ``paired``: the JAX row also holds alternating rounds
    against PyTorch eager whose ratio is ``paired``."""
    rng = np.random.default_rng(seed)
    n = 2**20
    benchmarks = [_bench("copy", n, "copy-torch-eager", 1e-4 * scale, rng, device)]
    for row, t in (("torch-eager", 2e-3), ("torch-compile", 1e-3), ("jax-jit", 1e-3), ("baseline-torch-eager", 3e-3)):
        benchmarks.append(_bench("clamp", n, row, t * scale, rng, device))
    if paired:
        against = list(2e-3 * scale * np.linspace(1.0, 3.0, 20))  # the machine slowed down threefold
        ours = [paired * a * (1 + 0.01 * rng.standard_normal()) for a in against]
        benchmarks[3]["extra_info"]["paired"] = {"against": "torch-eager", "ours_s": ours, "against_s": against}
    info = {"output_limits": {"cpu_model": cpu_model, "threads": 1, "packages": {"torch": "x"}, "git": {}}}
    path.write_text(json.dumps({"machine_info": info, "datetime": stamp, "benchmarks": benchmarks}))
    return path


def _report(tmp_path: Path, *runs: Path) -> Path:
    out = tmp_path / "report"
    command = [sys.executable, "-m", "harness", "report", *map(str, runs), "--out", str(out)]
    subprocess.run(command, check=True, cwd=ROOT)
    return out


def test_two_runs_merge_into_one_report(tmp_path: Path) -> None:
    cpu = _run(tmp_path / "cpu.json", "Test CPU", "cpu", 1.0, 0)
    gpu = _run(tmp_path / "gpu.json", "Host CPU", "cuda", 0.01, 1)
    out = _report(tmp_path, cpu, gpu)
    md = (out / "report.md").read_text()
    assert "### forward, cpu: Test CPU, 1 thread(s)" in md
    assert "### forward, cuda: Fake GPU, 1 thread(s)" in md
    row = next(line for line in md.splitlines() if line.startswith("| clamp | 2^20 |"))
    # JAX / eager is about 0.5 with an interval around it; eager reaches 8n bytes / 2 ms = 4.2 GB/s,
    # 5% of the same-size copy (8n bytes / 0.1 ms).
    assert "0.5" in row.split("|")[6] and "[" in row.split("|")[6] and "unpaired)" in row.split("|")[6]
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


def test_two_runs_of_one_machine_are_both_kept(tmp_path: Path) -> None:
    first = _run(tmp_path / "a.json", "Test CPU", "cpu", 1.0, 0, stamp="2026-01-01T00:00")
    second = _run(tmp_path / "b.json", "Test CPU", "cpu", 2.0, 1, stamp="2026-02-01T00:00")
    md = (_report(tmp_path, first, second) / "report.md").read_text()
    assert "### forward, cpu: Test CPU, 1 thread(s), 2026-01-01T00:00" in md
    assert "### forward, cpu: Test CPU, 1 thread(s), 2026-02-01T00:00" in md
    # The headline labels each row by machine and run.
    assert "| clamp | forward | 2^20 | cpu: Test CPU, 1 thread(s), 2026-01-01T00:00 (run 1) |" in md
    eager = [line.split("|")[3] for line in md.splitlines() if line.startswith("| clamp | 2^20 |")]
    # About 2 ms in the first run and 4 ms in the second: neither overwrote the other.
    assert len(eager) == 2 and float(eager[0].split()[0]) < 3 < float(eager[1].split()[0]), eager


def test_paired_rounds_give_the_ratio_despite_drift(tmp_path: Path) -> None:
    # The two rows' medians alone say 0.5; the alternating rounds, timed while the machine slowed
    # down, say 0.8 with a tight interval: the report shows the paired figure.
    run = _run(tmp_path / "p.json", "Test CPU", "cpu", 1.0, 0, paired=0.8)
    md = (_report(tmp_path, run) / "report.md").read_text()
    cell = next(line for line in md.splitlines() if line.startswith("| clamp | 2^20 |")).split("|")[6]
    assert cell.strip().startswith("0.8") and "unpaired" not in cell, cell
    paired = load([run])[0][3]
    point, lo, hi = paired_ratio_ci(paired.paired_ours, paired.paired_against)
    assert lo <= point <= hi and abs(point - 0.8) < 0.01 and hi - lo < 0.02
    # Resampled independently, the same rounds give an interval wider than the whole drift allows.
    _, lo_u, hi_u = ratio_ci(paired.paired_ours, paired.paired_against)
    assert hi_u - lo_u > 10 * (hi - lo)


def test_ours_over_the_builtin_op_is_in_every_format(tmp_path: Path) -> None:
    """A run with the framework's own op beside ours: the ratio of medians per style, in the
    markdown and LaTeX tables and as a CSV column of our rows."""
    path = _run(tmp_path / "run.json", "Test CPU", "cpu", 1.0, 0)
    run = json.loads(path.read_text())
    rng = np.random.default_rng(3)
    run["benchmarks"] += [
        _bench("clamp", 2**20, row, t, rng) for row, t in (("builtin-torch-eager", 1e-3), ("builtin-jax-jit", 2e-3))
    ]
    path.write_text(json.dumps(run))
    out = _report(tmp_path, path)
    row = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| clamp | 2^20 |"))
    # ours 2 ms / 1 ms in eager, no built-in compile row, 1 ms / 2 ms in jit (medians of 9 noisy rounds)
    eager, compiled, jit = row.split("|")[8].split("/")
    assert 1.8 < float(eager) < 2.2 and compiled.strip() == "–" and 0.45 < float(jit) < 0.55, row
    assert "ours/built-in" in (out / "report.tex").read_text()
    with (out / "report.csv").open() as f:
        ratios = {r["row"]: r["ours_over_builtin"] for r in csv.DictReader(f) if r["technique"] == "clamp"}
    assert 1.8 < float(ratios["torch-eager"]) < 2.2 and ratios["torch-compile"] == ""
    assert ratios["builtin-torch-eager"] == ""


def _seconds(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"µs": 1e-6, "ms": 1e-3}[unit]


def test_report_opens_with_the_headline_whose_ratios_are_of_the_medians_beside_them(tmp_path: Path) -> None:
    path = _run(tmp_path / "run.json", "Test CPU", "cpu", 1.0, 0, paired=0.8)
    run = json.loads(path.read_text())
    rng = np.random.default_rng(3)
    run["benchmarks"] += [_bench("clamp", 2**20, "builtin-torch-eager", 1e-3, rng)]
    path.write_text(json.dumps(run))
    md = (_report(tmp_path, path) / "report.md").read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[0].startswith("## Headline") and sections[-1] == "## Environment", sections
    first_table = next(line for line in md.splitlines() if line.startswith("| "))
    assert "ours / built-in" in first_table and "JAX / PyTorch eager" in first_table
    row = next(line for line in md.splitlines() if line.startswith("| clamp | forward | 2^20 |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    eager, compiled, jit, jax_over_torch = cells[4:8]
    # ours / built-in: 2 ms over 1 ms, and the printed medians divide to the printed ratio.
    ratio, medians = float(eager.split()[0]), re.search(r"\((.*) ±\d+%.* / (.*) ±\d+%", eager).groups()
    assert abs(ratio - _seconds(medians[0]) / _seconds(medians[1])) < 0.02 * ratio and 1.8 < ratio < 2.2, eager
    assert compiled == "–" and jit == "–"
    # JAX / eager from the paired rounds: 0.8, with those rounds' medians (not the rows' 1 ms / 2 ms).
    ratio, (a, b) = float(jax_over_torch.split()[0]), re.search(r"\((.*) / (.*) paired\)", jax_over_torch).groups()
    assert abs(ratio - 0.8) < 0.02 and abs(ratio - _seconds(a) / _seconds(b)) < 0.02 * ratio, jax_over_torch
    assert "unpaired" not in jax_over_torch


def test_plots_come_as_png_and_pdf_for_one_technique(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = _run(tmp_path / "run.json", "Test CPU", "cpu", 1.0, 0, paired=0.8)
    out = _report(tmp_path, run)
    for stem in ("overview-0", "throughput-0-forward"):
        for suffix in (".png", ".pdf"):
            assert (out / f"{stem}{suffix}").stat().st_size > 1000, f"{stem}{suffix}"


def test_a_compacted_run_reports_as_the_raw_one(tmp_path: Path) -> None:
    from bench.compact import main as compact_main

    raw = _run(tmp_path / "raw.json", "Test CPU", "cpu", 1.0, 0, paired=0.8)
    assert compact_main([str(raw), str(tmp_path / "raw.json.gz")]) == 0
    (full,), (small,) = ([r for r in load([p])[0] if r.row == "jax-jit"] for p in (raw, tmp_path / "raw.json.gz"))
    assert abs(small.median - full.median) <= 1e-3 * full.median and len(small.data) == len(full.data)
    assert paired_ratio_ci(small.paired_ours, small.paired_against)[0] == pytest.approx(
        paired_ratio_ci(full.paired_ours, full.paired_against)[0], rel=1e-3
    )
    md = (_report(tmp_path, tmp_path / "raw.json.gz") / "report.md").read_text()
    assert "| clamp | forward | 2^20 |" in md


def test_environment_names_the_kernels_and_their_autograd_node() -> None:
    from harness.report import _native_text

    on = {"on": True, "compiler": "cc", "flags": ["-O3"], "note": "on"}
    assert _native_text(on) == "on, cc -O3"
    assert _native_text({**on, "autograd_node": "on"}) == "on, cc -O3; autograd node on"
    off = "off: no C++ compiler (c++, g++ or clang++; or set CXX); a Python autograd Function runs"
    assert off in _native_text({**on, "autograd_node": off})
    assert _native_text({"on": False, "note": "off: OUTPUT_LIMITS_NATIVE=0"}) == "off: OUTPUT_LIMITS_NATIVE=0"
