"""Command line: ``python -m harness list [--builtin]`` and ``python -m harness report FILE.json ...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description="output-limits registry tools")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="print the technique table (markdown) from the registry")
    listing.add_argument(
        "--builtin", action="store_true", help="only this repository's techniques (the README's table)"
    )
    report = commands.add_parser("report", help="tables and plots from saved benchmark JSON (several files merge)")
    report.add_argument("files", nargs="+", type=Path, help="pytest-benchmark JSON files from nox -s bench")
    report.add_argument("--out", type=Path, default=Path("."), help="folder for report.md/.tex/.csv and plots")
    report.add_argument("--ratios", type=Path, default=None, help="bench/speed_ratios.py JSON to include")
    args = parser.parse_args(argv)
    if args.command == "report":
        from harness.report import write_report

        for path in write_report(args.files, args.out, args.ratios):
            print(path)
        return 0
    if args.command == "list":
        from harness.table import markdown

        print(markdown(builtin_only=args.builtin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
