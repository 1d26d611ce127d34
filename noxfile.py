"""nox sessions for output-limits. ``nox`` alone runs lint and tests; ``nox -s bench`` is opt-in.

On a machine without a package index whose frameworks are already installed (a GPU box), run
``nox --no-venv -s tests`` or ``nox --no-venv -s bench``: installs are skipped and the
environment is used, and recorded, as it is.
"""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"

# Exact CPU versions of torch, jax, jaxlib, flax (and the test tools) for every session.
CONSTRAINTS = ("-c", "constraints-cpu.txt")
# The example plugins: one without parameters, one with (lo, hi) and its own tolerances.
EXAMPLE_PLUGINS = ("./examples/erf_plugin", "./examples/interval_softsign_plugin")
# The techniques whose PyTorch eager CPU path runs C (impl_torch/_native): float32 kernels, and the
# norms' guard (layer_norm, batch_norm).
# The elementwise ones also have a Triton kernel on eager CUDA (impl_torch/_native/fused.py).
FUSED_TECHNIQUES = ("smooth_clamp", "scaled_sigmoid", "scaled_tanh", "soft_clip", "leaky_clamp", "softsign")
# And these Triton kernels of whole rows (impl_torch/_native/rows.py) or channels (channels.py).
ROW_TECHNIQUES = ("layer_norm", "rms_norm", "softmax", "log_softmax", "sparsemax", "batch_norm")
NATIVE_TECHNIQUES = (*FUSED_TECHNIQUES, "sparsemax", "layer_norm", "batch_norm")
# The benchmark machinery: a local package of its own (bench/pyproject.toml), outside the wheel.
BENCH = "./bench"


def _can_install(session: nox.Session) -> bool:
    if session.venv_backend == "none":
        session.log("no virtualenv (--no-venv): using the installed packages as they are")
        return False
    return True


def _user_plugins() -> list[str]:
    """Plugins named by OUTPUT_LIMITS_PLUGINS: local folders or requirement specifiers, separated
    by commas (or the path separator). A folder installs editable, so edits need no reinstall."""
    given = os.environ.get("OUTPUT_LIMITS_PLUGINS", "")
    return [p.strip() for p in given.replace(os.pathsep, ",").split(",") if p.strip()]


def _install_plugins(session: nox.Session, plugins: list[str]) -> None:
    for plugin in plugins:
        if Path(plugin).is_dir():
            session.install(*CONSTRAINTS, "-e", plugin)
        else:
            session.install(*CONSTRAINTS, plugin)


def _local_packages(session: nox.Session) -> dict[str, str]:
    """Environment variables that make this checkout's packages importable. Installed sessions
    need none (editable installs); with --no-venv, where nothing is installed, the checkout's
    root goes on PYTHONPATH so that harness, impl_*, and bench import from it."""
    if session.venv_backend != "none":
        return {}
    root = str(Path(__file__).resolve().parent)
    return {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole suite on CPU: parity, kinks, bounds, errors, heads, the example plugins.

    Extra arguments go to pytest, e.g. ``nox -s tests -- -k softmax -x``. Plugins named by
    OUTPUT_LIMITS_PLUGINS (folders or requirements, comma-separated) are installed too, and every
    generic test runs on their techniques: ``OUTPUT_LIMITS_PLUGINS=../my_plugin nox -s tests``.
    """
    env = _local_packages(session)
    if _can_install(session):
        session.install(*CONSTRAINTS, "-e", ".[torch,jax,test]", "-e", BENCH)
        _install_plugins(session, [*EXAMPLE_PLUGINS, *_user_plugins()])
        # The example plugins' own tests assert they are registered; they run where we installed them.
        env["OUTPUT_LIMITS_EXAMPLE_PLUGIN"] = "1"
    session.run("pytest", *session.posargs, env=env)
    # Again without the C kernels (impl_torch/_native): the ATen formulas that run where no compiler is
    # must keep their float32 coverage. These techniques have kernels; torch.compile never uses one.
    if not session.posargs:
        fallback = {"OUTPUT_LIMITS_NATIVE": "0", "OUTPUT_LIMITS_PARITY_DIR": ".parity/native-off"}
        kernels = " or ".join(NATIVE_TECHNIQUES)
        session.run("pytest", "-q", "-k", f"({kernels}) and not compile", env={**env, **fallback})
    # The benchmark files once, with timing disabled, so they cannot rot (outputs still checked).
    session.run("pytest", "bench/test_bench.py", "--quick", "--benchmark-disable", "-q", env=env)
    # Again through the Triton kernels of the eager CUDA path (impl_torch/_native/fused.py and
    # rows.py), in Triton's interpreter on the CPU: no GPU needed. Installed last, so that the
    # passes above run as on a CPU-only install, without Triton. JAX takes its GPU forms too, the
    # branch-free ones (impl_jax._common.cpu_or_accelerator), whose techniques are the row kernels'.
    if not session.posargs and _can_install(session):
        session.install(*CONSTRAINTS, "triton")
        fused = {
            "OUTPUT_LIMITS_TRITON_CPU": "1",
            "TRITON_INTERPRET": "1",
            "OUTPUT_LIMITS_JAX_FORMS": "accelerator",
            "OUTPUT_LIMITS_PARITY_DIR": ".parity/triton",
        }
        kernels = " or ".join((*FUSED_TECHNIQUES, *ROW_TECHNIQUES))
        # And the kernels' own test files whole: many of their tests name no technique.
        kernel_tests = f"(({kernels}) and not compile) or test_fused.py or test_rows.py"
        session.run("pytest", "-q", "-k", kernel_tests, env={**env, **fused})


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmark every registered technique in PyTorch and JAX; write .bench/<timestamp>/.

    The folder holds raw.json (pytest-benchmark, environment in machine_info), ratios.json (the
    speed targets), report.md, report.tex, report.csv and plots; .bench/latest points at it.
    Arguments go to pytest: ``-- --quick`` (a subset in minutes, the speed targets in one
    process), ``-- --threads all``,
    ``-- --techniques clamp,softmax``, ``-- --sizes 10,16,22``, ``-- --devices cuda``, ``-- --tf32``,
    ``-- --budget 0.2`` (timed seconds per row).
    Plugins named by OUTPUT_LIMITS_PLUGINS (as for the tests) are installed and benchmarked.
    With OUTPUT_LIMITS_CUDA=1 the environment gets CUDA builds: PyPI's torch wheel for Linux x86-64
    is one already (CUDA 13), JAX's comes with its cuda13 extra (same pinned versions).
    """
    env = _local_packages(session)
    if _can_install(session):
        if os.environ.get("OUTPUT_LIMITS_CUDA") == "1":
            # cuda13, as torch==2.13.0's wheel (cuda-toolkit 13.0, nvidia-cudnn-cu13): one CUDA
            # and one cuDNN in the process, not a second set for JAX.
            session.install(*CONSTRAINTS, "-e", ".[torch,bench]", "-e", BENCH, "jax[cuda13]", "flax")
        else:
            session.install(*CONSTRAINTS, "-e", ".[torch,jax,bench]", "-e", BENCH)
        # Plugins named by OUTPUT_LIMITS_PLUGINS are benchmarked with the rest (--quick too).
        _install_plugins(session, _user_plugins())
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(".bench") / stamp
    out.mkdir(parents=True)
    raw = out / "raw.json"
    try:
        session.run(
            "pytest", "bench/test_bench.py", f"--benchmark-json={raw}", "-p", "no:cacheprovider", *session.posargs,
            env=env,
        )  # fmt: skip
        # The speed targets are measured on the CPU: a run on other devices alone has none to check.
        ratios = []
        if "cpu" in _bench_devices(session.posargs):
            # --quick measures them in one process, not three (bench/speed_ratios.py: 4 minutes
            # here against 12).
            once = ["--processes", "1"] if "--quick" in session.posargs else []
            session.run("python", "-m", "bench.speed_ratios", "--out", str(out / "ratios.json"), *once, env=env)
            ratios = ["--ratios", str(out / "ratios.json")]
        session.run("python", "-m", "harness", "report", str(raw), *ratios, "--out", str(out), env=env)
    except BaseException:
        # A run that failed before its raw.json (a bad option, an interrupt) leaves no folder to
        # mistake for a result; one that wrote it keeps it, for `python -m harness report`.
        if not raw.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    latest = Path(".bench") / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    os.symlink(stamp, latest)
    session.log(f"report: {out / 'report.md'}")


def _bench_devices(posargs: list[str]) -> list[str]:
    """The devices ``--devices`` names in the bench's arguments (the CPU where it is not given:
    every device seen includes it)."""
    for i, arg in enumerate(posargs):
        if arg.startswith("--devices="):
            return arg.split("=", 1)[1].split(",")
        if arg == "--devices" and i + 1 < len(posargs):
            return posargs[i + 1].split(",")
    return ["cpu"]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the repository."""
    if _can_install(session):
        session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
