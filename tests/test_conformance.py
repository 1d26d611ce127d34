"""``harness check``, the conformance kit: it passes careful plugins, fails a naive one naming
the check that failed, and answers bad input in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A naive plugin: clamp on each framework's own primitive, declared with clamp's kinks (gradient 0
# at the bounds). torch.clamp passes the gradient there, jnp.clip splits it: the kink check fails.
NAIVE = """
import dataclasses, sys
import harness
harness.declare(dataclasses.replace(harness.get("clamp"), name="naive_clamp", family="naive"))

@harness.implements("naive_clamp", "torch")
def _torch(x, *, lo, hi):
    import torch
    return torch.clamp(x, lo, hi)

@harness.implements("naive_clamp", "jax")
def _jax(x, *, lo, hi):
    import jax.numpy as jnp
    return jnp.clip(x, lo, hi)

from harness.__main__ import main
sys.exit(main(["check", "naive_clamp", *sys.argv[1:]]))
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def test_a_naive_plugin_fails_naming_the_check() -> None:
    done = _run("-c", NAIVE, "--checks", "kinks,parity,bounds")
    assert done.returncode == 1, done
    failed = [line for line in done.stderr.splitlines() if line.startswith("FAILED ")]
    assert failed and all(line.startswith("FAILED kinks of naive_clamp") for line in failed), done.stderr
    assert "| naive_clamp | kinks |" in done.stdout and "| naive_clamp | parity values |" in done.stdout


@pytest.mark.skipif(os.environ.get("OUTPUT_LIMITS_EXAMPLE_PLUGIN") != "1", reason="example plugins not installed")
def test_the_example_plugins_pass_every_check() -> None:
    done = _run("-m", "harness", "check")  # without names: every installed plugin's techniques
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| interval_softsign | bad parameters |" in done.stdout and "| erf_squash | kinks |" not in done.stdout
    assert done.stdout.rstrip().endswith("checks passed for erf_squash, interval_softsign"), done.stdout


def test_bad_check_arguments_get_one_line() -> None:
    for args, words in ((["nope"], "unknown technique 'nope'"), (["clamp", "--checks", "kink"], "--checks kink")):
        done = _run("-m", "harness", "check", *args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done
        assert words in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_pytest_plugin_runs_the_checks_in_a_plugins_own_suite(tmp_path: Path) -> None:
    declaration = NAIVE.split("from harness.__main__")[0]
    (tmp_path / "conftest.py").write_text(declaration)  # the plugin under test, registered in-process
    (tmp_path / "test_mine.py").write_text("from harness.pytest_plugin import test_output_limits_conformance\n")
    # The plugin by module, whether or not the package's pytest11 entry point is installed here.
    plugin = ["-p", "no:output_limits", "-p", "harness.pytest_plugin"]
    command = ["-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, "--rootdir", str(tmp_path), str(tmp_path)]
    done = _run(*command, "--output-limits", "naive_clamp", "-k", "kinks or shapes")
    assert done.returncode == 1 and "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    assert "naive_clamp-kinks" in done.stdout and "kinks of naive_clamp" in done.stdout, done.stdout
    done = _run(*command, "--output-limits", "clamp,softmax", "-k", "shapes or bad_parameters")
    assert done.returncode == 0 and "4 passed" in done.stdout, done.stdout + done.stderr


def test_bounds_hold_on_infinite_bounds_too() -> None:
    """leaky_clamp's range is the reals and log_softmax's reaches -inf: an output on an infinite
    bound is inside it, not a NaN distance from it."""
    import numpy as np

    from harness import conformance

    conformance.prepare()
    for name in ("leaky_clamp", "log_softmax"):
        results = conformance.check_bounds(name, np.random.default_rng(0))
        assert results and all(r.ok for r in results), [r for r in results if not r.ok][:2]


def test_reference_checks_resolve_dtype_dependent_defaults() -> None:
    """rms_norm's default eps is the machine epsilon of the dtype it is built in: the float64
    reference must take float64's, not float32's (a 1e-7 error against 1e-11 otherwise)."""
    import numpy as np

    from harness import conformance

    conformance.prepare()
    results = conformance.check_reference("rms_norm", np.random.default_rng(0))
    assert results and all(r.ok for r in results), [r for r in results if not r.ok][:2]
