"""Command line: ``output-limits list [--builtin]``, ``output-limits check [NAME ...]`` and
``output-limits report FILE.json ...`` (also ``python -m harness ...``). Bad input gets one line
on stderr and exit status 2, never a traceback; ``check`` exits 1 when a check fails."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """argparse, with each error in one line (what is wrong, and where help is) instead of a
    usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _prog() -> str:
    # The name it was run by: the console script, or "python -m harness" (argv[0] is __main__.py).
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "python -m harness" if name in ("__main__.py", "-m", "") else name


def default_report_folder(files: list[Path], now: datetime.datetime | None = None) -> Path:
    """Where ``report`` writes without ``--out``: beside its one input file, or for several a new
    ``.bench/report-<UTC time>/``; never the current folder itself."""
    if len(files) == 1:
        return files[0].resolve().parent
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path(".bench") / f"report-{stamp}"


def _check_inputs(parser: argparse.ArgumentParser, files: list[Path], ratios: Path | None) -> None:
    # Existence only: the report reads each file once, and a file that is not JSON raises there.
    for path in [*files, *([ratios] if ratios else [])]:
        if not path.is_file():
            parser.error(
                f"{path}: no such file (give the raw.json that nox -s bench wrote, e.g. .bench/latest/raw.json)"
            )


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import harness
    from harness import conformance

    try:
        names = harness.registry.select(args.names)
    except LookupError as error:
        parser.error(str(error))
    if not names:
        parser.error("no plugin is installed; name the techniques to check, or 'all'")
    checks = args.checks.split(",") if args.checks else None
    unknown = [c for c in checks or () if c not in conformance.CHECKS]
    if unknown:
        parser.error(f"--checks {','.join(unknown)}: unknown; the checks are {', '.join(conformance.CHECKS)}")
    try:
        results = conformance.run(names, checks, seed=args.seed)
    except ImportError as error:
        parser.error(f"the checks run both frameworks: {error} (pip install 'output-limits[torch,jax]')")
    print(conformance.table(results))
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"FAILED {r.check} of {r.technique} ({r.case}): {r.detail}", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} checks passed for {', '.join(names)}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog=_prog(), description="output-limits registry and benchmark tools")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="print the technique table (markdown) from the registry")
    listing.add_argument(
        "--builtin", action="store_true", help="only this repository's techniques (the README's table)"
    )
    check = commands.add_parser(
        "check", help="run the conformance checks on techniques (default: every installed plugin's)"
    )
    check.add_argument("names", nargs="*", help="techniques to check; 'all' for every registered one")
    check.add_argument("--checks", default=None, help="comma-separated subset of the checks (default: all)")
    check.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    report = commands.add_parser("report", help="tables and plots from saved benchmark JSON (several files merge)")
    report.add_argument("files", nargs="+", type=Path, help="pytest-benchmark JSON files from nox -s bench")
    report.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for report.md/.tex/.csv and plots (default: beside a single input file, "
        "else a new .bench/report-<time>/)",
    )
    report.add_argument("--ratios", type=Path, default=None, help="bench/speed_ratios.py JSON to include")
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(check, args)
    if args.command == "report":
        from harness.report import write_report

        _check_inputs(report, args.files, args.ratios)
        out = args.out if args.out is not None else default_report_folder(args.files)
        if out.exists() and not out.is_dir():
            report.error(f"--out {out}: exists and is not a folder")
        try:
            written = write_report(args.files, out, args.ratios)
        except ValueError as error:
            report.error(str(error))
        except (KeyError, TypeError, AttributeError) as error:
            # JSON, but not a pytest-benchmark run of ours.
            files = ", ".join(map(str, args.files))
            report.error(f"{files}: not pytest-benchmark JSON from nox -s bench (missing or odd field {error!r})")
        for path in written:
            print(path)
        return 0
    if args.command == "list":
        from harness.table import markdown

        print(markdown(builtin_only=args.builtin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
