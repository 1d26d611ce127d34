"""Command line: ``python -m harness list [--builtin]``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description="output-limits registry tools")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="print the technique table (markdown) from the registry")
    listing.add_argument(
        "--builtin", action="store_true", help="only this repository's techniques (the README's table)"
    )
    args = parser.parse_args(argv)
    if args.command == "list":
        from harness.table import markdown

        print(markdown(builtin_only=args.builtin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
