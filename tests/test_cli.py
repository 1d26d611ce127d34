"""The command line answers bad input with one line on stderr and exit status 2, never a
traceback, and writes nothing into the folder it is run from unless told to."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_report import _run

ROOT = Path(__file__).resolve().parents[1]


def _cli(cwd: Path, *args: str, command: tuple[str, ...] = (sys.executable, "-m", "harness")):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)


def _one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert all(word in lines[0] for word in words), done.stderr


def test_bad_report_inputs_get_one_line_and_write_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"benchmarks": [{"extra_info": {"technique": "clamp"}}]}))
    (tmp_path / "empty.json").write_text(json.dumps({"benchmarks": []}))
    _one_line_error(_cli(work, "report", "missing.json"), "missing.json", "no such file")
    _one_line_error(_cli(work, "report", str(tmp_path / "broken.json")), "broken.json", "not a JSON file")
    _one_line_error(_cli(work, "report", str(tmp_path / "other.json")), "other.json", "not pytest-benchmark JSON")
    _one_line_error(_cli(work, "report", str(tmp_path / "empty.json")), "no output-limits benchmarks")
    _one_line_error(_cli(work, "report", "x.json", "--bogus"), "unrecognized arguments")
    _one_line_error(_cli(work, "report"), "required: files")
    assert not any(work.iterdir()), list(work.iterdir())


def test_odd_fields_of_a_run_or_of_its_ratios_name_their_file(tmp_path: Path) -> None:
    """A median of 0 (a ZeroDivisionError's traceback), a non-integer size (an error that named
    no file), a list for a run (a traceback) and a malformed --ratios file (blamed on the run)
    each get one line naming the file at fault."""
    work = tmp_path / "work"
    work.mkdir()
    for field, value, words in (("median", 0.0, "not a positive time"), ("n", "many", "invalid literal")):
        run = _run(tmp_path / f"{field}.json", "Test CPU", "cpu", 1.0, 0)
        raw = json.loads(run.read_text())
        where = raw["benchmarks"][1]["stats" if field == "median" else "extra_info"]
        where[field] = value
        run.write_text(json.dumps(raw))
        _one_line_error(_cli(work, "report", str(run), "--out", str(tmp_path / "out")), f"{field}.json", words)
    (tmp_path / "list.json").write_text("[1, 2]")
    _one_line_error(_cli(work, "report", str(tmp_path / "list.json")), "list.json: not pytest-benchmark JSON")
    good = _run(tmp_path / "good.json", "Test CPU", "cpu", 1.0, 0)
    (tmp_path / "ratios.json").write_text(json.dumps({"results": 3}))
    done = _cli(work, "report", str(good), "--ratios", str(tmp_path / "ratios.json"), "--out", str(tmp_path / "out"))
    _one_line_error(done, "ratios.json: not bench/speed_ratios.py JSON")
    assert not (tmp_path / "out").exists()


def test_report_writes_beside_its_input_or_into_a_new_bench_folder(tmp_path: Path) -> None:
    work, runs = tmp_path / "work", tmp_path / "runs"
    work.mkdir()
    runs.mkdir()
    one = _run(runs / "raw.json", "Test CPU", "cpu", 1.0, 0)
    done = _cli(work, "report", str(one))
    assert done.returncode == 0, done.stderr
    assert (runs / "report.md").is_file() and not any(work.iterdir())
    two = _run(runs / "second.json", "Other CPU", "cpu", 2.0, 1)
    done = _cli(work, "report", str(one), str(two))
    assert done.returncode == 0, done.stderr
    (folder,) = (work / ".bench").iterdir()
    assert folder.name.startswith("report-") and (folder / "report.md").is_file()
    assert [p.name for p in work.iterdir()] == [".bench"]


@pytest.mark.parametrize("command", [(sys.executable, "-m", "harness"), ("output-limits",)])
def test_help_names_the_command_it_was_run_by(tmp_path: Path, command: tuple[str, ...]) -> None:
    if command[0] == "output-limits" and shutil.which("output-limits") is None:
        pytest.skip("the console script is not installed here (pip install -e .)")
    done = _cli(tmp_path, "--help", command=command)
    name = "python -m harness" if command[0] == sys.executable else command[0]
    assert done.returncode == 0 and done.stdout.startswith(f"usage: {name} "), done


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("--sizes=40", ("--sizes 40", "GiB", "the largest size that fits is")),
        ("--sizes=a,b", ("comma-separated log2 sizes",)),
        ("--devices=gpu", ("unknown device", "did you mean cuda?")),
        ("--techniques=softmaxx", ("unknown technique 'softmaxx'", "softmax")),
        ("--threads=0", ("--threads must be",)),
        ("--stop-after=0", ("--stop-after takes a positive number of seconds",)),
    ],
)
def test_bench_options_are_checked_before_anything_is_allocated(option: str, words: tuple[str, ...]) -> None:
    command = [sys.executable, "-m", "pytest", "bench/test_bench.py", option, "--benchmark-disable", "-q"]
    done = _cli(ROOT, "-p", "no:cacheprovider", command=tuple(command))
    assert done.returncode == 4 and "Traceback" not in done.stdout + done.stderr, done
    (line,) = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("ERROR: ")]
    assert all(word in line for word in words), line


def test_a_broken_ratios_file_leaves_no_report_folder(tmp_path: Path) -> None:
    run = _run(tmp_path / "raw.json", "Test CPU", "cpu", 1.0, 0)
    (tmp_path / "ratios.json").write_text("{not json")
    done = _cli(tmp_path, "report", str(run), "--ratios", str(tmp_path / "ratios.json"), "--out", "out")
    _one_line_error(done, "ratios.json", "not a JSON file")
    assert not (tmp_path / "out").exists()


def test_rows_not_started_before_stop_after_are_skipped() -> None:
    # A deadline already past: every row is skipped, none fails, and the session ends normally
    # (pytest-benchmark then writes the JSON of what ran; here nothing did).
    command = [sys.executable, "-m", "pytest", "bench/test_bench.py", "--techniques=clamp", "--sizes=10"]
    done = _cli(ROOT, *("--stop-after=1e-9", "--benchmark-disable", "-p", "no:cacheprovider"), command=tuple(command))
    assert done.returncode == 0 and " passed" not in done.stdout, done.stdout[-2000:]
    skipped = [line for line in done.stdout.splitlines() if "--stop-after 1e-09: not started in time" in line]
    assert skipped and skipped[0].startswith("SKIPPED ["), done.stdout[-2000:]
