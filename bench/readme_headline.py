"""The README's tables of the committed reference run, generated from it so they cannot drift:
``python -m bench.readme_headline [RUN_FOLDER]`` rewrites them in README.md; the tests check
that README.md holds what this generates.

Two tables: the report's headline (harness.report.headline) and the speed targets per technique
and style (ratios.json), each between its markers.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from harness.report import headline, load, read_json

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "bench" / "results" / "cpu-2026-12-05"
MARKERS = {
    "headline": ("<!-- headline:begin", "<!-- headline:end -->"),
    "targets": ("<!-- targets:begin", "<!-- targets:end -->"),
}


def targets(ratios: dict) -> str:
    """Per technique and style: ours / the reference at 2^22 and 2^16, forward and
    forward+backward, the missed ones in bold."""
    cells: dict[tuple[str, str], dict[tuple[int, str], str]] = defaultdict(dict)
    for r in ratios["results"]:
        if r.get("style") is None or r.get("kind") == "seed" or "seed" in r["check"]:
            continue
        text = f"{r['ratio']:.2f}" if r["ok"] else f"**{r['ratio']:.2f}**"
        cells[r["technique"], f"{r['framework']} {r['style']}"][r["n"], r["mode"]] = text
    sizes = ((2**22, "forward"), (2**22, "forward+backward"), (2**16, "forward"), (2**16, "forward+backward"))
    out = [
        "| technique | style | 2^22 forward | 2^22 forward+backward | 2^16 forward | 2^16 forward+backward |",
        "|---|---|---|---|---|---|",
    ]
    for (technique, style), row in sorted(cells.items()):
        out.append(f"| {technique} | {style} | " + " | ".join(row.get(k, "–") for k in sizes) + " |")
    met = sum(r["ok"] for r in ratios["results"])
    return "\n".join(out) + f"\n\n{met} of {len(ratios['results'])} checks met (bold: missed).\n"


def tables(run: Path = RUN) -> dict[str, str]:
    rows, _ = load([run / "raw.json.gz"])
    return {"headline": headline(rows), "targets": targets(read_json(run / "ratios.json"))}


def rewrite(readme: str, generated: dict[str, str]) -> str:
    for name, (begin, end) in MARKERS.items():
        start = readme.index(begin)
        head_end = readme.index("\n", start) + 1
        stop = readme.index(end)
        readme = readme[:head_end] + generated[name] + readme[stop:]
    return readme


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    run = Path(args[0]) if args else RUN
    path = ROOT / "README.md"
    path.write_text(rewrite(path.read_text(), tables(run)))
    print(f"README.md: tables of {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
