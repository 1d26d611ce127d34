"""Shrink a raw.json for committing: ``python -m bench.compact RAW.json OUT.json.gz``.

Per-round times are kept (the report's intervals resample them), rounded to 4 significant
digits, below the spread of any timing here; the JSON is written without indentation and
gzip-compressed. ``python -m harness report`` reads the result as it reads raw.json.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

DIGITS = 4


def _round(values: list[float]) -> list[float]:
    return [float(f"{v:.{DIGITS}g}") for v in values]


def compact(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with its per-round lists rounded (stats.data and the paired rounds)."""
    for bench in raw.get("benchmarks", []):
        stats = bench.get("stats", {})
        if "data" in stats:
            stats["data"] = _round(stats["data"])
        paired = bench.get("extra_info", {}).get("paired")
        if paired:
            for key in ("ours_s", "against_s"):
                paired[key] = _round(paired[key])
    return raw


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.compact RAW.json OUT.json.gz", file=sys.stderr)
        return 2
    source, target = map(Path, args)
    data = json.dumps(compact(json.loads(source.read_text())), separators=(",", ":")).encode()
    with gzip.open(target, "wb", compresslevel=9) as f:
        f.write(data)
    print(f"{target}: {target.stat().st_size / 2**20:.2f} MiB (from {source.stat().st_size / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
