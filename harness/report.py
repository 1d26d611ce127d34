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

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable
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


def _labels(raws: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Per run, device -> machine label; a label two runs share gets each run's date added."""
    labels = []
    for raw in raws:
        extras = [b["extra_info"] for b in raw.get("benchmarks", []) if "device" in b.get("extra_info", {})]
        info = raw.get("machine_info", {})
        labels.append({e["device"]: _machine(info, e["device"], e.get("device_name", "")) for e in extras})
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


def load(paths: Iterable[Path]) -> tuple[list[Row], list[dict[str, Any]]]:
    rows, infos = [], []
    paths = list(paths)
    raws = [json.loads(Path(path).read_text()) for path in paths]
    for path, raw, labels in zip(paths, raws, _labels(raws), strict=True):
        info = raw.get("machine_info", {})
        infos.append({"file": str(path), "datetime": raw.get("datetime"), **info})
        for bench in raw.get("benchmarks", []):
            extra, stats = bench.get("extra_info", {}), bench["stats"]
            if "technique" not in extra:
                continue
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
                )
            )
    return rows, infos


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


def _ratio_cell(jax: Row | None, torch: Row | None) -> str:
    if jax is None or torch is None:
        return "–"
    point, lo, hi, paired = row_ratio(jax, torch)
    return f"{point:.2f} [{lo:.2f}, {hi:.2f}]{'' if paired else ' (unpaired)'}"


def builtin_ratios(cells: dict[str, Row]) -> str:
    """Ours / the framework's own op (bench.plan.BUILTINS), median over median, per style:
    eager, compile, jit ('–' where a row is missing)."""
    parts = []
    for row in MAIN_ROWS:
        ours, builtin = cells.get(row), cells.get(f"builtin-{row}")
        parts.append(f"{ours.median / builtin.median:.2f}" if ours and builtin and builtin.median > 0 else "–")
    return " / ".join(parts)


def markdown(rows: list[Row], infos: list[dict[str, Any]], ratios: dict[str, Any] | None = None) -> str:
    copy = copy_bandwidth(rows)
    out = ["# output-limits benchmark report", ""]
    out += _environment(infos)
    out += [
        "Cells: median per call ± interquartile range (as % of the median; 'noisy' above 10%) · achieved GB/s from "
        "ideal bytes (inputs read once, outputs written once) and its % of the bandwidth of a copy of the same size "
        "measured in the same run on the same device; 'page faults': the calls touched fresh memory pages for more "
        "than 10% of their ideal bytes, so the time includes the kernel zeroing them. Ratios are JAX median / "
        "PyTorch median with a bootstrap 95% interval: below 1, JAX is faster. JAX / eager comes from extra rounds "
        "that alternate the two rows, resampled as pairs; ratios marked (unpaired) compare rows timed at different "
        "moments, resampled independently. Either interval covers the spread within this run only, not the "
        "differences between runs or machines. Compile time and the first call are never in a timed round (see "
        "report.csv).",
        "",
    ]
    for machine in sorted({m for m, _ in copy}):
        sizes = ", ".join(f"{_size(n)}: {gbps:.3g}" for (m, n), gbps in sorted(copy.items()) if m == machine)
        out.append(f"- copy bandwidth (torch clone, GB/s by size), {machine}: {sizes}")
    out.append("")
    if ratios:
        out += _ratios_section(ratios)
    for (machine, mode), table in sorted(_grouped(rows).items()):
        out += [f"## {mode}, {machine}", ""]
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
    return "\n".join(out) + "\n"


def _native_text(record: dict[str, Any] | None) -> str:
    if not record:
        return "not recorded (runs before the C kernel existed used the ATen formula)"
    if not record.get("on"):
        return str(record.get("note"))
    return f"on, {record.get('compiler')} {' '.join(record.get('flags', []))}"


def _plugins_text(found: dict[str, Any] | None) -> str:
    if found is None:
        return "not recorded (runs before plugins were recorded)"
    packages = sorted({f"{e.get('package')} {e.get('version')}" for e in found.values()})
    return ", ".join(packages) if packages else "none installed"


def _environment(infos: list[dict[str, Any]]) -> list[str]:
    out = ["## Environment", ""]
    for info in infos:
        ours = info.get("output_limits", {})
        packages = ", ".join(f"{k} {v}" for k, v in ours.get("packages", {}).items() if v)
        git = ours.get("git", {})
        out += [
            f"- `{info['file']}` ({info.get('datetime')}): {ours.get('cpu_model')}, python {ours.get('python')}; "
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
    out = ["## Speed targets of our implementations (bench/speed_ratios.py, one process, one thread)", ""]
    out += ["| check | ours | reference | ratio | target | |", "|---|---|---|---|---|---|"]
    for r in ratios["results"]:
        mark = "met" if r["ok"] else "**missed**"
        out.append(
            f"| {r['check']} | {_time(r['ours_s'])} | {_time(r['reference_s'])} | {r['ratio']:.2f} | "
            f"<= {r['limit']} | {mark} |"
        )
    return [*out, ""]


def headline(rows: list[Row]) -> str:
    """The largest size of each technique, both modes: the README's table."""
    out = [
        "| technique | mode | n | PyTorch eager | torch.compile | JAX jit | JAX / eager |",
        "|---|---|---|---|---|---|---|",
    ]
    for (_machine, mode), table in sorted(_grouped(rows).items()):
        largest: dict[str, int] = {}
        for technique, n in table:
            largest[technique] = max(largest.get(technique, 0), n)
        for technique, n in sorted(largest.items()):
            cells = table[technique, n]
            times = " | ".join(_time(cells[k].median) if k in cells else "–" for k in MAIN_ROWS)
            ratio = _ratio_cell(cells.get("jax-jit"), cells.get("torch-eager"))
            out.append(f"| {technique} | {mode} | {_size(n)} | {times} | {ratio} |")
    return "\n".join(out) + "\n"


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


def plots(rows: list[Row], out: Path) -> list[Path]:
    """One PNG per (machine, mode): a panel per technique, median time against size, every row."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots written (pip install 'output-limits[bench]')")
        return []
    written = []
    for index, ((machine, mode), table) in enumerate(sorted(_grouped(rows).items())):
        techniques = sorted({t for t, _ in table})
        cols = min(4, len(techniques))
        nrows = math.ceil(len(techniques) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
        for ax, technique in zip(axes.flat, techniques, strict=False):
            series: dict[str, list[tuple[int, float]]] = defaultdict(list)
            for (t, n), cells in table.items():
                if t == technique:
                    for name, r in cells.items():
                        series[name].append((n, r.median))
            for name, points in sorted(series.items()):
                points.sort()
                color, line = ROW_STYLE.get(name, ("tab:gray", ":"))
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                ax.plot(xs, ys, line, color=color, marker="o", ms=3, label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(technique)
            ax.set_xlabel("elements")
            ax.set_ylabel("median time (s)")
            ax.grid(True, which="both", alpha=0.3)
        for ax in list(axes.flat)[len(techniques) :]:
            ax.axis("off")
        labels = {}
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                labels.setdefault(label, handle)
        fig.legend(list(labels.values()), list(labels), loc="upper right", fontsize=8)
        fig.suptitle(f"{mode}, {machine}")
        fig.tight_layout(rect=(0, 0, 0.9, 1))
        path = out / f"plot-{index}-{mode.replace('+', '_')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_report(paths: list[Path], out: Path, ratios_path: Path | None = None) -> list[Path]:
    """Write report.md, report.tex, report.csv and plots for ``paths`` into ``out``."""
    rows, infos = load(paths)
    if not rows:
        raise ValueError(f"no output-limits benchmarks in {', '.join(map(str, paths))}")
    out.mkdir(parents=True, exist_ok=True)
    ratios = json.loads(ratios_path.read_text()) if ratios_path and ratios_path.exists() else None
    (out / "report.md").write_text(markdown(rows, infos, ratios) + "\n## Headline\n\n" + headline(rows))
    (out / "report.tex").write_text(latex(rows))
    write_csv(rows, out / "report.csv")
    return [out / "report.md", out / "report.tex", out / "report.csv", *plots(rows, out)]
