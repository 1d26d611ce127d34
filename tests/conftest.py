"""Framework numerics are set here, once, before any test touches a framework.

* JAX float64 (``jax_enable_x64``) is on for the whole test session: float64 parity needs it.
  The library never sets it; ``impl_jax.adapter.from_numpy`` refuses float64 without it.
* TF32 is off in both frameworks and JAX matmuls run at full precision, so a GPU run compares
  like with like; JAX does not preallocate GPU memory next to PyTorch.
* PyTorch uses one intra-op thread: on a shared 2-core machine two threads can be 40x slower.
* ``--device cuda`` makes the adapters (``harness.backend(fw).from_numpy``, ``place``) put arrays
  and modules on the GPU in both frameworks, and JAX's default device with them. It is meant for
  the tests that go through the adapters alone: tests/test_parity.py, tests/test_fused.py and
  test_compile.py's ``other_parameters`` (bench/gpu_run.sh); other tests make CPU tensors.
"""

from __future__ import annotations

import json
import os
import platform
import zlib
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import numpy as np
import pytest
import torch
from hypothesis import settings

import harness

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_num_threads(1)

# Derandomized: CI must not find a new counterexample on its own; failures are reproducible.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=60, print_blob=True)
settings.load_profile("ci")

# nox -s tests runs a second, smaller pass (the ATen fallback) that must not overwrite the first.
PARITY_DIR = Path(os.environ.get("OUTPUT_LIMITS_PARITY_DIR", ".parity"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="where the adapters make arrays and place modules in both frameworks (default cpu); "
        "cuda needs CUDA builds of torch and jax",
    )


def pytest_configure(config: pytest.Config) -> None:
    device = config.getoption("device")
    for framework in harness.FRAMEWORKS:
        try:
            harness.backend(framework).use_device(device)
        except RuntimeError as error:
            raise pytest.UsageError(f"--device {device}: {error}") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    import flax

    return [
        f"output-limits: python {platform.python_version()}, torch {torch.__version__}, jax {jax.__version__}, "
        f"flax {flax.__version__}, numpy {np.__version__}",
        f"devices: jax {[str(d) for d in jax.devices()]}, torch cuda {torch.cuda.is_available()}, "
        f"torch threads {torch.get_num_threads()}, adapters on --device {config.getoption('device')}",
    ]


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test id: stable across runs, different across cases."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


_RECORDS: list[dict] = []


@pytest.fixture
def record_parity():
    """Record a comparison's measured error (the numbers are the product, pass or fail)."""

    device = harness.backend("torch").device()

    def record(technique: str, case: str, dtype: str, quantity: str, comparison) -> None:
        _RECORDS.append(
            {
                "device": device,
                "technique": technique,
                "case": case,
                "dtype": dtype,
                "quantity": quantity,
                "max_abs": comparison.max_abs,
                "max_rel": comparison.max_rel,
                "rtol": comparison.rtol,
            }
        )

    return record


def pytest_sessionstart(session: pytest.Session) -> None:
    # Under pytest-xdist each worker writes its own file (below): a former run's, made with more
    # workers, would be read with this run's. The controller clears them before any worker ends.
    if not os.environ.get("PYTEST_XDIST_WORKER") and PARITY_DIR.is_dir():
        for stale in PARITY_DIR.glob("parity-gw*.*"):
            stale.unlink()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _RECORDS:
        return
    PARITY_DIR.mkdir(exist_ok=True, parents=True)
    # One file per pytest-xdist worker, where there are workers: each has its own records.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    suffix = f"-{worker}" if worker else ""
    (PARITY_DIR / f"parity{suffix}.json").write_text(json.dumps(_RECORDS, indent=1))
    worst: dict[tuple[str, str, str], dict] = {}
    for r in _RECORDS:
        key = (r["technique"], r["dtype"], r["quantity"])
        if key not in worst or r["max_rel"] > worst[key]["max_rel"]:
            worst[key] = r
    lines = ["| technique | dtype | quantity | worst scaled error | tolerance | case |", "|---|---|---|---|---|---|"]
    for (tech, dtype, quantity), r in sorted(worst.items()):
        lines.append(f"| {tech} | {dtype} | {quantity} | {r['max_rel']:.2e} | {r['rtol']:.0e} | {r['case']} |")
    (PARITY_DIR / f"parity{suffix}.md").write_text("\n".join(lines) + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _RECORDS:
        ratio = max(r["max_rel"] / r["rtol"] for r in _RECORDS)
        terminalreporter.write_line(
            f"parity: {len(_RECORDS)} comparisons recorded in {PARITY_DIR}/parity.md; "
            f"worst error is {ratio:.1%} of its tolerance"
        )
