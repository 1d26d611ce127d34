"""The GPU targets of the speed issue, read from saved CUDA runs:
``python -m bench.gpu_targets RAW.json[.gz]... --out DIR``.

* ours / built-in <= 1.2 at 2^24 elements, in PyTorch eager, torch.compile and jax.jit (the
  issue's "eager and compiled styles"), forward and forward+backward, for every technique with a
  built-in row (ratio of medians within one run);
* elementwise techniques at >= 75% of the copy bandwidth measured in the same run at that size,
  forward, in each style (bytes read and written once, as the report's GB/s).

The rows come from ``nox -s bench -- --devices cuda`` (``bench/gpu_run.sh``). Several files may
be given: a ratio is taken from the last file that holds both of its rows (a second run of the
rows a first one lost). Writes gpu-targets.md and gpu-targets.json into DIR. Unlike
``bench/speed_ratios.py`` it times nothing: a GPU is lent too briefly for a second pass.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import harness
from bench import plan as benchplan
from harness.report import Row, copy_bandwidth, load

SIZE = 1 << 24
RATIO_LIMIT = 1.2
BANDWIDTH_SHARE = 0.75
STYLES = ("torch-eager", "torch-compile", "jax-jit")
BANDWIDTH_STYLES = ("torch-eager", "torch-compile", "jax-jit")


def _elementwise(name: str) -> bool:
    spec, params = harness.get(name), benchplan.inputs(name, 1024)[2]
    return not spec.reduction_axes(1, spec.resolve(params))


def targets(rows: list[Row]) -> list[dict[str, Any]]:
    """One record per target: what, the measured value, the limit, and whether it is met (None
    where the rows to compute it are missing). Every technique the runs benchmarked on CUDA, at
    any size, has its records, measured at 2^24 or not (rows a run skipped at that size)."""
    # Registered here too: a plugin's rows need its declaration, which says what is elementwise.
    planned = {r.technique for r in rows if r.device == "cuda" and r.kind != "copy"} & set(harness.names())
    cuda = [r for r in rows if r.device == "cuda" and r.n == SIZE]
    by_key = {(r.run, r.technique, r.mode, r.row): r for r in cuda}
    runs = sorted({r.run for r in cuda}, reverse=True)
    out = []
    for name in sorted(planned & set(benchplan.BUILTINS)):
        for mode in ("forward", "forward+backward"):
            for style in STYLES:
                pair = next(
                    (
                        (by_key[run, name, mode, style], by_key[run, name, mode, f"builtin-{style}"])
                        for run in runs
                        if (run, name, mode, style) in by_key and (run, name, mode, f"builtin-{style}") in by_key
                    ),
                    None,
                )
                value = pair[0].median / pair[1].median if pair else None
                out.append(_record("ours / built-in", name, mode, style, value, RATIO_LIMIT, below=True))
    # The copy of the same run (report labels tell runs of one machine apart by date): a later
    # run of a few rows may have timed none.
    copies = copy_bandwidth(cuda)
    for name in sorted(n for n in planned if _elementwise(n)):
        for style in BANDWIDTH_STYLES:
            found = [
                r
                for r in cuda
                if (r.technique, r.mode, r.row) == (name, "forward", style) and (r.machine, r.n) in copies
            ]
            row = max(found, key=lambda r: r.run) if found else None
            share = row.gbps / copies[row.machine, row.n] if row else None
            out.append(_record("share of copy bandwidth", name, "forward", style, share, BANDWIDTH_SHARE, below=False))
    return out


def _record(
    what: str, name: str, mode: str, style: str, value: float | None, limit: float, below: bool
) -> dict[str, Any]:
    met = None if value is None else (value <= limit if below else value >= limit)
    return {"target": what, "technique": name, "mode": mode, "style": style, "value": value, "limit": limit, "met": met}


def markdown(records: list[dict[str, Any]], files: list[str]) -> str:
    met = sum(r["met"] is True for r in records)
    missing = sum(r["met"] is None for r in records)
    lines = [
        "# GPU targets",
        "",
        f"From {', '.join(f'`{f}`' for f in files)}, at 2^24 float32 elements: ours / built-in <= {RATIO_LIMIT} "
        f"(PyTorch eager, torch.compile, jax.jit), elementwise forward at >= {BANDWIDTH_SHARE:.0%} "
        "of the copy bandwidth. "
        f"**{met} of {len(records)} met**"
        + (f", {missing} not measured (no row, or no copy row in the run of the row)." if missing else "."),
        "",
        "| target | technique | mode | style | measured | limit | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        value = "–" if r["value"] is None else f"{r['value']:.2f}"
        mark = {True: "yes", False: "**no**", None: "not measured"}[r["met"]]
        lines.append(
            f"| {r['target']} | {r['technique']} | {r['mode']} | {r['style']} | {value} | {r['limit']} | {mark} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_targets", description=__doc__.splitlines()[0])
    parser.add_argument("raw", nargs="+", type=Path, help="raw.json files of CUDA runs (.gz too)")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu-targets.md and gpu-targets.json")
    args = parser.parse_args(argv)
    rows, _ = load(args.raw)
    records = targets(rows)
    if not records:
        parser.error(f"no CUDA rows at 2^24 elements in {', '.join(map(str, args.raw))}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu-targets.json").write_text(json.dumps(records, indent=1) + "\n")
    (args.out / "gpu-targets.md").write_text(markdown(records, [str(p) for p in args.raw]))
    print(f"{sum(r['met'] is True for r in records)} of {len(records)} GPU targets met: {args.out / 'gpu-targets.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
