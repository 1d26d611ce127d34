"""Turn saved pytest-benchmark JSON (one machine or several) into report.md, report.tex,
report.csv and plots: ``python -m harness report FILE.json [FILE.json ...] --out DIR``.

Per technique, size, mode and device: median time of each row (PyTorch eager, torch.compile,
JAX jit, baselines), interquartile range, the JAX/PyTorch median ratio with a bootstrap 95%
confidence interval, achieved GB/s from ideal bytes, and that as a percentage of the copy
bandwidth measured in the same run on the same device. Rows whose IQR exceeds 10% of the
median are flagged noisy. Runs whose machine labels coincide are told apart by their date, so
merging two runs of one machine shows both instead of keeping the last.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NOISY = 0.10
PAGE = 4096
# A row whose calls touched fresh pages for more than this share of its ideal bytes also timed
# the kernel zeroing them: flagged, since the allocation policy is meant to prevent it.
FAULTY = 0.10
MAIN_ROWS = ("torch-eager", "torch-compile", "jax-jit")
# One colour per row in every panel; the framework's own op dotted and the seed's baselines
# dashed, in the colour of the row they stand beside.
ROW_STYLE = {
    "torch-eager": ("tab:blue", "-"),
    "torch-compile": ("tab:purple", "-"),
    "jax-jit": ("tab:green", "-"),
    "builtin-torch-eager": ("tab:blue", ":"),
    "builtin-torch-compile": ("tab:purple", ":"),
    "builtin-jax-jit": ("tab:green", ":"),
    "baseline-torch-eager": ("tab:blue", "--"),
    "baseline-jax-jit": ("tab:green", "--"),
}


@dataclass(frozen=True)
class Row:
    """One benchmarked row of one saved run."""

    machine: str
    device: str
    technique: str
    n: int
    mode: str
    row: str
    kind: str
    median: float
    q1: float
    q3: float
    data: tuple[float, ...]
    ideal_bytes: int
    compile_s: float
    first_call_s: float
    rounds: int
    iterations: int
    check_error: float
    minor_faults_per_call: float | None = None
    # Rounds timed alternately with another row of the group (``paired_with``), per call.
    paired_with: str = ""
    paired_ours: tuple[float, ...] = ()
    paired_against: tuple[float, ...] = ()
    run: int = 1  # which of the merged files (1-based), as the report's list of runs numbers them

    @property
    def iqr_rel(self) -> float:
        return (self.q3 - self.q1) / self.median if self.median > 0 else math.inf

    @property
    def faulty(self) -> bool:
        return (self.minor_faults_per_call or 0.0) * PAGE > FAULTY * self.ideal_bytes

    @property
    def gbps(self) -> float:
        return self.ideal_bytes / self.median / 1e9


def _machine(info: dict[str, Any], device: str, device_name: str) -> str:
    ours = info.get("output_limits", {})
    name = ours.get("cpu_model") or info.get("cpu", {}).get("brand_raw", "cpu") if device == "cpu" else device_name
    return f"{device}: {name}, {ours.get('threads', '?')} thread(s)"


def _run_labels(raw: dict[str, Any]) -> dict[str, str]:
    """One run's device -> machine label."""
    extras = [b["extra_info"] for b in raw.get("benchmarks", []) if "device" in b.get("extra_info", {})]
    info = raw.get("machine_info", {})
    return {e["device"]: _machine(info, e["device"], e.get("device_name", "")) for e in extras}


def _labels(raws: list[dict[str, Any]], labels: list[dict[str, str]]) -> list[dict[str, str]]:
    """Per run, device -> machine label (``labels``, each run's own); a label two runs share gets
    each run's date added."""
    runs_per_label: dict[str, int] = defaultdict(int)
    for run in labels:
        for label in set(run.values()):
            runs_per_label[label] += 1
    for index, (run, raw) in enumerate(zip(labels, raws, strict=True)):
        stamp = raw.get("datetime") or f"run {index + 1}"
        for device, label in run.items():
            if runs_per_label[label] > 1:
                run[device] = f"{label}, {stamp}"
    return labels


def read_json(path: Path) -> Any:
    """A saved run: raw.json as nox -s bench writes it, or gzip-compressed (``.gz``, as
    ``python -m bench.compact`` writes committed runs). A file that is not JSON raises
    ``ValueError`` naming it."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt") as f:
                return json.load(f)
        return json.loads(path.read_text())
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(f"{path}: not a JSON file ({type(error).__name__}: {first})") from error


@contextlib.contextmanager
def _odd_fields(path: Path | None, what: str) -> Iterator[None]:
    """Errors of a JSON file that is not ``what`` as one line naming it, for the CLI."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"{path}: not {what} (missing or odd field {error!r})") from error


_RUN = "pytest-benchmark JSON from nox -s bench"


def load(paths: Iterable[Path]) -> tuple[list[Row], list[dict[str, Any]]]:
    rows, infos, own = [], [], []
    paths = list(paths)
    raws = [read_json(Path(path)) for path in paths]
    for path, raw in zip(paths, raws, strict=True):
        with _odd_fields(path, _RUN):
            own.append(_run_labels(raw))
    for run, (path, raw, labels) in enumerate(zip(paths, raws, _labels(raws, own), strict=True), start=1):
        with _odd_fields(path, _RUN):
            info = raw.get("machine_info", {})
            infos.append({"file": str(path), "datetime": raw.get("datetime"), **info})
            rows += _rows(raw, labels, run)
    return rows, infos


def _rows(raw: dict[str, Any], labels: dict[str, str], run: int) -> list[Row]:
    """The rows of one pytest-benchmark run (its benchmarks of ours; others skipped)."""
    rows = []
    for bench in raw.get("benchmarks", []):
        extra, stats = bench.get("extra_info", {}), bench["stats"]
        if "technique" not in extra:
            continue
        if not (isinstance(stats["median"], (int, float)) and 0 < stats["median"] < math.inf):
            raise ValueError(f"{bench.get('name')}: median {stats['median']!r}, not a positive time")
        paired = extra.get("paired") or {}
        rows.append(
            Row(
                machine=labels[extra["device"]],
                device=extra["device"],
                technique=extra["technique"],
                n=int(extra["n"]),
                mode=extra["mode"],
                row=extra["row"],
                kind=extra["kind"],
                median=stats["median"],
                q1=stats["q1"],
                q3=stats["q3"],
                data=tuple(stats.get("data") or (stats["median"],)),
                ideal_bytes=int(extra["ideal_bytes"]),
                compile_s=float(extra.get("compile_s", 0.0)),
                first_call_s=float(extra.get("first_call_s", 0.0)),
                rounds=int(stats.get("rounds", 0)),
                iterations=int(stats.get("iterations", 1)),
                check_error=float(extra.get("check_error", 0.0)),
                minor_faults_per_call=extra.get("minor_faults_per_call"),
                paired_with=paired.get("against", ""),
                paired_ours=tuple(paired.get("ours_s", ())),
                paired_against=tuple(paired.get("against_s", ())),
                run=run,
            )
        )
    return rows


def ratio_ci(numerator: tuple[float, ...], denominator: tuple[float, ...], seed: int = 0) -> tuple[float, float, float]:
    """Median ratio and its 95% bootstrap interval, rounds of the two rows resampled
    independently. It cannot see drift between the moments the two rows were timed."""
    a, b = np.asarray(numerator), np.asarray(denominator)
    point = float(np.median(a) / np.median(b))
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(a, (2000, a.size)), axis=1) / np.median(rng.choice(b, (2000, b.size)), axis=1)
    return point, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def paired_ratio_ci(
    numerator: tuple[float, ...], denominator: tuple[float, ...], seed: int = 0
) -> tuple[float, float, float]:
    """Median ratio of rounds timed alternately, and its 95% bootstrap interval resampling whole
    pairs, so drift that moved both sides of a pair does not widen or bias it."""
    a, b = np.asarray(numerator), np.asarray(denominator)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired rounds need equal, non-zero counts, got {a.size} and {b.size}")
    point = float(np.median(a) / np.median(b))
    picks = np.random.default_rng(seed).integers(0, a.size, (2000, a.size))
    boots = np.median(a[picks], axis=1) / np.median(b[picks], axis=1)
    return point, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def row_ratio(numerator: Row, denominator: Row) -> tuple[float, float, float, bool]:
    """The numerator/denominator time ratio with its interval, and whether it is paired: from
    the alternating rounds when the numerator was paired with this denominator's row."""
    if numerator.paired_with == denominator.row and numerator.paired_ours:
        return (*paired_ratio_ci(numerator.paired_ours, numerator.paired_against), True)
    return (*ratio_ci(numerator.data, denominator.data), False)


def copy_bandwidth(rows: list[Row]) -> dict[tuple[str, int], float]:
    """Copy GB/s per (machine, size): a row's percentage divides by the copy of the same bytes
    on the same device in the same run, so cache effects at small sizes cancel."""
    return {(r.machine, r.n): r.gbps for r in rows if r.kind == "copy"}


def _time(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us:.3g} µs" if us < 1000 else f"{us / 1000:.3g} ms"


def _size(n: int) -> str:
    return f"2^{int(math.log2(n))}"


def _grouped(rows: list[Row]) -> dict[tuple[str, str], dict[tuple[str, int], dict[str, Row]]]:
    tables: dict[tuple[str, str], dict[tuple[str, int], dict[str, Row]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r.kind != "copy":
            tables[r.machine, r.mode][r.technique, r.n][r.row] = r
    return tables


def _cell(r: Row | None, copy_gbps: float | None) -> str:
    if r is None:
        return "–"
    flag = (" (noisy)" if r.iqr_rel > NOISY else "") + (" (page faults)" if r.faulty else "")
    pct = f", {100 * r.gbps / copy_gbps:.0f}%" if copy_gbps else ""
    return f"{_time(r.median)} ±{100 * r.iqr_rel:.0f}%{flag} · {r.gbps:.3g} GB/s{pct}"


def _spread(r: Row) -> str:
    return f"±{100 * r.iqr_rel:.0f}%{' noisy' if r.iqr_rel > NOISY else ''}"


def _ratio_cell(jax: Row | None, torch: Row | None) -> str:
    """JAX / PyTorch with its interval and the two medians it divides: those of the alternating
    rounds where the rows were paired, else the rows' own (unpaired)."""
    if jax is None or torch is None:
        return "–"
    point, lo, hi, paired = row_ratio(jax, torch)
    if paired:
        medians = f"{_time(float(np.median(jax.paired_ours)))} / {_time(float(np.median(jax.paired_against)))} paired"
    else:
        medians = f"{_time(jax.median)} / {_time(torch.median)} unpaired"
    return f"{point:.2f} [{lo:.2f}, {hi:.2f}] ({medians})"


def _over_cell(ours: Row | None, builtin: Row | None) -> str:
    """Ours / the framework's own op: the ratio of the two medians printed beside it, its
    interval (rounds resampled independently) and each median's spread."""
    if ours is None or builtin is None or builtin.median <= 0:
        return "–"
    point, lo, hi = ratio_ci(ours.data, builtin.data)
    return (
        f"{point:.2f} [{lo:.2f}, {hi:.2f}] "
        f"({_time(ours.median)} {_spread(ours)} / {_time(builtin.median)} {_spread(builtin)})"
    )


def builtin_ratios(cells: dict[str, Row]) -> str:
    """Ours / the framework's own op (bench.plan.BUILTINS), median over median, per style:
    eager, compile, jit ('–' where a row is missing)."""
    parts = []
    for row in MAIN_ROWS:
        ours, builtin = cells.get(row), cells.get(f"builtin-{row}")
        parts.append(f"{ours.median / builtin.median:.2f}" if ours and builtin and builtin.median > 0 else "–")
    return " / ".join(parts)


HEADLINE_COLUMNS = (
    "Columns: *n*, the largest size of the technique in that run (elements, float32; rows of 1024 for "
    "row-wise techniques, 64 channels for batch_norm); *run*, the machine and which input file (listed under "
    "Environment). *ours / built-in*, per style: our median over the median of the framework's own op of the "
    "same meaning in the same style (bench.plan.BUILTINS), with a bootstrap 95% interval, then the two medians "
    "it divides, each with its interquartile range as a % of it ('noisy' above 10%); below 1 ours is faster. "
    "*JAX / PyTorch eager*: the JAX jit median over the PyTorch eager one with its interval, from rounds that "
    "alternated the two rows ('paired': those rounds' medians are printed, and differ from the rows' own) or "
    "else from the rows' own rounds ('unpaired'); below 1 JAX is faster. Every interval covers the spread "
    "within one run, not the differences between runs or machines."
)


def headline(rows: list[Row], several_runs: bool = False) -> str:
    """Per technique at its largest size, both modes: ours against the framework's own op in each
    style, and JAX against PyTorch eager. The table report.md opens with, and the README's."""
    out = [
        "| technique | mode | n | run | PyTorch eager: ours / built-in | torch.compile: ours / built-in "
        "| JAX jit: ours / built-in | JAX / PyTorch eager |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (machine, mode), table in sorted(_grouped(rows).items(), key=lambda item: (item[0][1], item[0][0])):
        largest: dict[str, int] = {}
        for technique, n in table:
            largest[technique] = max(largest.get(technique, 0), n)
        for technique, n in sorted(largest.items()):
            cells = table[technique, n]
            run = next(iter(cells.values())).run
            where = f"{machine} (run {run})" if several_runs else machine
            overs = " | ".join(_over_cell(cells.get(k), cells.get(f"builtin-{k}")) for k in MAIN_ROWS)
            ratio = _ratio_cell(cells.get("jax-jit"), cells.get("torch-eager"))
            out.append(f"| {technique} | {mode} | {_size(n)} | {where} | {overs} | {ratio} |")
    return "\n".join(out) + "\n"


def markdown(rows: list[Row], infos: list[dict[str, Any]], ratios: dict[str, Any] | None = None) -> str:
    """report.md: the headline first, then the speed targets, the full tables, the environment."""
    copy = copy_bandwidth(rows)
    several = len(infos) > 1
    out = ["# output-limits benchmark report", ""]
    for index, info in enumerate(infos, start=1):
        git = info.get("output_limits", {}).get("git", {})
        commit = (git.get("commit") or "unknown commit")[:12] + (" (dirty tree)" if git.get("dirty") else "")
        out.append(f"- run {index}: `{info['file']}`, {info.get('datetime')}, commit {commit}")
    out += ["", "## Headline: ours against the frameworks' own ops, at the largest size", ""]
    out += [HEADLINE_COLUMNS, "", headline(rows, several)]
    if ratios:
        out += _ratios_section(ratios)
    out += [
        "## All sizes",
        "",
        "Cells: median per call ± interquartile range (as % of the median; 'noisy' above 10%) · achieved GB/s from "
        "ideal bytes (inputs read once, outputs written once) and its % of the bandwidth of a copy of the same size "
        "measured in the same run on the same device; 'page faults': the calls touched fresh memory pages for more "
        "than 10% of their ideal bytes, so the time includes the kernel zeroing them. *JAX / eager* and *JAX / "
        "compile*: as in the headline (the medians they divide in parentheses). *ours / built-in*: our median over the "
        "framework op's, per style. *seed baseline*: the medians of the seed document's code where one exists (its "
        "BoundedReLU, relu then clamp; its naive lo + (hi - lo) * sigmoid(x); the frameworks' own clamp, softmax "
        "and LayerNorm), PyTorch eager / JAX jit. Compile time and the first call are never in a timed round (see "
        "report.csv).",
        "",
    ]
    for machine in sorted({m for m, _ in copy}):
        sizes = ", ".join(f"{_size(n)}: {gbps:.3g}" for (m, n), gbps in sorted(copy.items()) if m == machine)
        out.append(f"- copy bandwidth (torch clone, GB/s by size), {machine}: {sizes}")
    out.append("")
    for (machine, mode), table in sorted(_grouped(rows).items()):
        out += [f"### {mode}, {machine}", ""]
        header = "| technique | n | PyTorch eager | torch.compile | JAX jit | JAX / eager | JAX / compile |"
        out.append(header + " ours / built-in (eager / compile / jit) | seed baseline (torch, jax) |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for (technique, n), cells in sorted(table.items()):
            base = [cells.get("baseline-torch-eager"), cells.get("baseline-jax-jit")]
            base_text = " / ".join(_time(b.median) if b else "–" for b in base) if any(base) else "–"
            out.append(
                f"| {technique} | {_size(n)} | "
                + " | ".join(_cell(cells.get(k), copy.get((machine, n))) for k in MAIN_ROWS)
                + f" | {_ratio_cell(cells.get('jax-jit'), cells.get('torch-eager'))}"
                + f" | {_ratio_cell(cells.get('jax-jit'), cells.get('torch-compile'))}"
                + f" | {builtin_ratios(cells)} | {base_text} |"
            )
        out.append("")
    out += _environment(infos)
    return "\n".join(out) + "\n"


def _native_text(record: dict[str, Any] | None) -> str:
    if not record:
        return "not recorded (runs before the C kernel existed used the ATen formula)"
    if not record.get("on"):
        return str(record.get("note"))
    node = f"; autograd node {record['autograd_node']}" if "autograd_node" in record else ""
    return f"on, {record.get('compiler')} {' '.join(record.get('flags', []))}{node}"


def _plugins_text(found: dict[str, Any] | None) -> str:
    if found is None:
        return "not recorded (runs before plugins were recorded)"
    packages = sorted({f"{e.get('package')} {e.get('version')}" for e in found.values()})
    return ", ".join(packages) if packages else "none installed"


def _environment(infos: list[dict[str, Any]]) -> list[str]:
    out = ["## Environment", ""]
    for index, info in enumerate(infos, start=1):
        ours = info.get("output_limits", {})
        packages = ", ".join(f"{k} {v}" for k, v in ours.get("packages", {}).items() if v)
        git = ours.get("git", {})
        out += [
            f"- run {index}, `{info['file']}` ({info.get('datetime')}): {ours.get('cpu_model')}, "
            f"python {ours.get('python')}; "
            f"{packages}",
            f"  - threads {ours.get('threads')} (torch {ours.get('torch_threads')}, CPU affinity "
            f"{ours.get('cpu_affinity')}); allocation: {ours.get('allocation')}; TF32 {ours.get('tf32')}; "
            f"devices {ours.get('devices')}",
            f"  - commit {git.get('commit')}{' (dirty tree)' if git.get('dirty') else ''}"
            f"{f', files of tree {tree}' if (tree := git.get('tree')) else ''}; environment {ours.get('env')}",
            f"  - native kernels (PyTorch eager CPU float32): {_native_text(ours.get('native_kernels'))}",
            f"  - plugins: {_plugins_text(ours.get('plugins'))}",
        ]
    return [*out, ""]


def _ratios_section(ratios: dict[str, Any]) -> list[str]:
    met = sum(r["ok"] for r in ratios["results"])
    processes = ratios.get("settings", {}).get("processes", 1)
    out = ["## Speed targets (bench/speed_ratios.py, one thread)", ""]
    within = "ours over the reference, medians of rounds interleaved in one process (the two columns beside it"
    if processes > 1:
        within = (
            f"the median over {processes} processes, one after another, of {within}: the medians of each "
            "side's times over the processes, which need not divide to the ratio"
        )
    out += [f"{met} of {len(ratios['results'])} met. Each ratio is {within}).", ""]
    out += ["| check | ours | reference | ratio | target | |", "|---|---|---|---|---|---|"]
    for r in ratios["results"]:
        mark = "met" if r["ok"] else "**missed**"
        out.append(
            f"| {r['check']} | {_time(r['ours_s'])} | {_time(r['reference_s'])} | {r['ratio']:.2f} | "
            f"<= {r['limit']} | {mark} |"
        )
    return [*out, ""]


def latex(rows: list[Row]) -> str:
    """A booktabs table per (machine, mode): median times and the JAX/PyTorch-eager ratio. A
    longtable, since a full sweep runs to well over a page."""
    out = ["% generated by python -m harness report; needs \\usepackage{booktabs,longtable}"]
    for (machine, mode), table in sorted(_grouped(rows).items()):
        header = "technique & $n$ & PyTorch eager & torch.compile & JAX jit & JAX/eager & ours/built-in \\\\"
        out += [
            "\\begin{small}\\begin{longtable}{llrrrrr}",
            f"\\caption{{{_tex(mode)}, {_tex(machine)}: median time per call}}\\\\",
            "\\toprule",
            header,
            "\\midrule",
            "\\endfirsthead",
            "\\toprule",
            header,
            "\\midrule",
            "\\endhead",
        ]
        for (technique, n), cells in sorted(table.items()):
            times = " & ".join(_tex(_time(cells[k].median)) if k in cells else "--" for k in MAIN_ROWS)
            jax, torch = cells.get("jax-jit"), cells.get("torch-eager")
            ratio = f"{row_ratio(jax, torch)[0]:.2f}" if jax and torch else "--"
            builtin = _tex(builtin_ratios(cells).replace("–", "--"))
            out.append(f"{_tex(technique)} & $2^{{{int(math.log2(n))}}}$ & {times} & {ratio} & {builtin} \\\\")
        out += ["\\bottomrule", "\\end{longtable}\\end{small}", ""]
    return "\n".join(out)


def _tex(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("µs", "$\\mu$s")


def _over_builtin(r: Row, medians: dict[tuple[Any, ...], float]) -> float | str:
    builtin = medians.get((r.machine, r.mode, r.technique, r.n, f"builtin-{r.row}"))
    return r.median / builtin if r.kind == "ours" and builtin else ""


def write_csv(rows: list[Row], path: Path) -> None:
    copy = copy_bandwidth(rows)
    fields = ["machine", "device", "mode", "technique", "n", "row", "kind", "median_s", "q1_s", "q3_s", "iqr_rel"]
    fields += ["gbps", "pct_copy", "compile_s", "first_call_s", "rounds", "iterations", "check_error"]
    fields += ["minor_faults_per_call"]
    fields += ["paired_with", "paired_ratio", "paired_lo", "paired_hi", "paired_rounds", "ours_over_builtin"]
    medians = {(r.machine, r.mode, r.technique, r.n, r.row): r.median for r in rows}
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for r in sorted(rows, key=lambda r: (r.machine, r.mode, r.technique, r.n, r.row)):
            pct = 100 * r.gbps / copy[r.machine, r.n] if copy.get((r.machine, r.n)) else ""
            writer.writerow(
                [
                    r.machine,
                    r.device,
                    r.mode,
                    r.technique,
                    r.n,
                    r.row,
                    r.kind,
                    r.median,
                    r.q1,
                    r.q3,
                    r.iqr_rel,
                    r.gbps,
                    pct,
                    r.compile_s,
                    r.first_call_s,
                    r.rounds,
                    r.iterations,
                    r.check_error,
                    "" if r.minor_faults_per_call is None else r.minor_faults_per_call,
                    r.paired_with,
                    *(paired_ratio_ci(r.paired_ours, r.paired_against) if r.paired_ours else ("", "", "")),
                    len(r.paired_ours) or "",
                    _over_builtin(r, medians),
                ]
            )


# What the plots' legends call each row.
ROW_LABEL = {
    "torch-eager": "PyTorch eager (ours)",
    "torch-compile": "torch.compile (ours)",
    "jax-jit": "JAX jit (ours)",
    "builtin-torch-eager": "PyTorch eager, framework op",
    "builtin-torch-compile": "torch.compile, framework op",
    "builtin-jax-jit": "JAX jit, framework op",
    "baseline-torch-eager": "PyTorch eager, seed code",
    "baseline-jax-jit": "JAX jit, seed code",
}
OVERVIEW = (  # (label, numerator row, denominator row, colour)
    ("PyTorch eager: ours / built-in", "torch-eager", "builtin-torch-eager", "tab:blue"),
    ("torch.compile: ours / built-in", "torch-compile", "builtin-torch-compile", "tab:purple"),
    ("JAX jit: ours / built-in", "jax-jit", "builtin-jax-jit", "tab:green"),
    ("JAX jit / PyTorch eager (ours)", "jax-jit", "torch-eager", "tab:orange"),
)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots written (pip install 'output-limits[bench]')")
        return None
    return plt


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=100, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def plots(rows: list[Row], out: Path) -> list[Path]:
    """Per machine: an overview (ratios per technique at the largest size, with their 95%
    intervals) and, per mode, a panel per technique of throughput against size with interquartile
    bands and the copy bandwidth; PNG and PDF, legends outside the data."""
    plt = _pyplot()
    if plt is None:
        return []
    written: list[Path] = []
    grouped = _grouped(rows)
    for index, machine in enumerate(sorted({m for m, _ in grouped})):
        modes = sorted(mode for m, mode in grouped if m == machine)
        fig = _overview(plt, machine, {mode: grouped[machine, mode] for mode in modes})
        written += _save(fig, out, f"overview-{index}")
        plt.close(fig)
        for mode in modes:
            fig = _throughput(plt, machine, mode, grouped[machine, mode], copy_bandwidth(rows))
            written += _save(fig, out, f"throughput-{index}-{_slug(mode)}")
            plt.close(fig)
    return written


def _ratio_axis(ax: Any, values: list[float]) -> None:
    """A log axis of time ratios labelled at powers of two, minor labels off (they overlap)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    low, high = min([*values, 0.8]), max([*values, 1.25])
    ticks = [2.0**k for k in range(math.floor(math.log2(low)), math.ceil(math.log2(high)) + 1)]
    ax.set_xscale("log")
    ax.set_xlim(low / 1.15, high * 1.15)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _overview(plt: Any, machine: str, tables: dict[str, dict[tuple[str, int], dict[str, Row]]]) -> Any:
    techniques = sorted({t for table in tables.values() for t, _ in table})
    height = 1.6 + 0.3 * len(techniques)
    fig, axes = plt.subplots(1, len(tables), figsize=(5.0 * len(tables), height), squeeze=False, sharey=True)
    for ax, (mode, table) in zip(axes[0], tables.items(), strict=True):
        largest = {t: max(n for tt, n in table if tt == t) for t in {t for t, _ in table}}
        values: list[float] = []
        for k, (label, top, bottom, colour) in enumerate(OVERVIEW):
            ys, xs, errors = [], [], [[], []]
            for i, technique in enumerate(techniques):
                cells = table.get((technique, largest.get(technique, 0)), {})
                a, b = cells.get(top), cells.get(bottom)
                if a is None or b is None:
                    continue
                point, lo, hi = row_ratio(a, b)[:3] if bottom == "torch-eager" else ratio_ci(a.data, b.data)
                ys.append(i + (k - 1.5) * 0.18)
                xs.append(point)
                errors[0].append(point - lo)
                errors[1].append(hi - point)
                values += [lo, hi]
            ax.errorbar(xs, ys, xerr=errors, fmt="o", ms=3.5, color=colour, capsize=2, lw=1, label=label)
        ax.axvline(1.0, color="black", lw=0.8)
        _ratio_axis(ax, values)
        ax.set_yticks(range(len(techniques)), techniques, fontsize=8)
        ax.set_ylim(len(techniques) - 0.5, -0.5)
        ax.set_xlabel("time ratio (below 1: the first named is faster)", fontsize=8)
        ax.set_title(mode, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"At the largest size, {machine} (95% intervals)", fontsize=10)
    fig.tight_layout()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, 0.0), frameon=False)
    return fig


def _throughput(
    plt: Any, machine: str, mode: str, table: dict[tuple[str, int], dict[str, Row]], copy: dict[tuple[str, int], float]
) -> Any:
    techniques = sorted({t for t, _ in table})
    cols = min(4, len(techniques))
    nrows = math.ceil(len(techniques) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.9 * nrows + 0.6), squeeze=False)
    for ax, technique in zip(axes.flat, techniques, strict=False):
        series: dict[str, list[Row]] = defaultdict(list)
        for (t, _), cells in table.items():
            if t == technique:
                for name, r in cells.items():
                    series[name].append(r)
        order = list(ROW_LABEL)  # ours first, then the frameworks' ops, then the seed's code
        for name, points in sorted(series.items(), key=lambda item: [*order, item[0]].index(item[0])):
            points.sort(key=lambda r: r.n)
            color, line = ROW_STYLE.get(name, ("tab:gray", ":"))
            xs = [r.n for r in points]
            # Throughput from the quartiles of time: the band is the middle half of the rounds.
            ax.plot(
                xs, [r.gbps for r in points], line, color=color, marker="o", ms=2.5, label=ROW_LABEL.get(name, name)
            )
            low = [r.ideal_bytes / r.q3 / 1e9 if r.q3 > 0 else r.gbps for r in points]
            high = [r.ideal_bytes / r.q1 / 1e9 if r.q1 > 0 else r.gbps for r in points]
            ax.fill_between(xs, low, high, color=color, alpha=0.15, lw=0)
        sizes = sorted({r.n for rs in series.values() for r in rs})
        bandwidth = [copy.get((machine, n)) for n in sizes]
        if any(bandwidth):
            ax.plot(sizes, bandwidth, "-", color="0.6", lw=1, label="copy bandwidth")
        ax.set_xscale("log", base=2)
        ax.set_title(technique, fontsize=9)
        ax.set_xlabel("elements", fontsize=8)
        ax.set_ylabel("GB/s (ideal bytes)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(techniques) :]:
        ax.axis("off")
    labels: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labels.setdefault(label, handle)
    fig.suptitle(f"{mode}, {machine}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.legend(list(labels.values()), list(labels), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=8)
    return fig


def write_report(paths: list[Path], out: Path, ratios_path: Path | None = None) -> list[Path]:
    """Write report.md, report.tex, report.csv and plots for ``paths`` into ``out``."""
    rows, infos = load(paths)
    if not rows:
        raise ValueError(f"no output-limits benchmarks in {', '.join(map(str, paths))}")
    ratios = read_json(ratios_path) if ratios_path and ratios_path.exists() else None
    if ratios:  # read now, before the folder is made; markdown() writes it
        with _odd_fields(ratios_path, "bench/speed_ratios.py JSON"):
            _ratios_section(ratios)
    out.mkdir(parents=True, exist_ok=True)  # after every input read: a bad one leaves no folder
    (out / "report.md").write_text(markdown(rows, infos, ratios))
    (out / "report.tex").write_text(latex(rows))
    write_csv(rows, out / "report.csv")
    return [out / "report.md", out / "report.tex", out / "report.csv", *plots(rows, out)]
