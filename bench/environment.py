"""The environment recorded with every benchmark result (``machine_info`` in the raw JSON).

Versions are read from package metadata, so recording imports no framework; device details
come from the framework adapters the benchmark already loaded.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "jax",
    "jaxlib",
    # CUDA builds: JAX's plugin and cuDNN come as separate wheels, one name per CUDA major.
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "nvidia-cudnn-cu12",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
    "nvidia-cudnn-cu13",
    "flax",
    "numpy",
    "pytest-benchmark",
    "output-limits",
)
ENV_VARS = (
    "XLA_FLAGS",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "PYTORCH_CUDA_ALLOC_CONF",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_ALLOCATOR",
    "JAX_PLATFORMS",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
)


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state(root: Path | None = None) -> dict[str, Any]:
    """The commit, whether the working tree had uncommitted changes, and the tree it holds.

    ``tree`` is the id of the tree git would commit from the files as they are (tracked files
    and untracked ones git does not ignore): it equals ``git rev-parse C^{tree}`` for a commit C
    of the same files. A copy of the tree run elsewhere (a GPU box whose .git lags behind) is
    matched to its commit by it. None where git cannot tell.
    """
    cwd = root or Path.cwd()

    def git(*args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env=env, timeout=120)
        return done.stdout

    try:
        commit, status = git("rev-parse", "HEAD").strip(), git("status", "--porcelain")
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None, "tree": None}
    try:
        tree = _working_tree_id(git, cwd)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        tree = None
    return {"commit": commit, "dirty": bool(status.strip()), "tree": tree}


def _working_tree_id(git: Any, cwd: Path) -> str:
    index = cwd / git("rev-parse", "--git-path", "index").strip()
    objects = cwd / git("rev-parse", "--git-path", "objects").strip()
    with tempfile.TemporaryDirectory() as scratch:
        # A copy of the index (files tracked despite .gitignore stay in, unchanged files are not
        # hashed again), and new objects written to a scratch store that reads the repository's:
        # the repository, its index and what is staged there stay untouched.
        scratch_index, scratch_objects = Path(scratch) / "index", Path(scratch) / "objects"
        scratch_objects.mkdir()
        if index.exists():
            shutil.copyfile(index, scratch_index)
        env = {
            **os.environ,
            "GIT_INDEX_FILE": str(scratch_index),
            "GIT_OBJECT_DIRECTORY": str(scratch_objects),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(objects.resolve()),
        }
        git("add", "--all", env=env)
        return git("write-tree", env=env).strip()


def plugins() -> dict[str, dict[str, Any]]:
    """Every installed plugin entry point of the registry's groups: its group, target, and the
    package (and version) that ships it, so that a plugin's rows can be traced to its release."""
    from harness.registry import DECLARATION_GROUP, IMPLEMENTATION_GROUP

    found: dict[str, dict[str, Any]] = {}
    for group in (DECLARATION_GROUP, *IMPLEMENTATION_GROUP.values()):
        for ep in entry_points(group=group):
            dist = getattr(ep, "dist", None)
            found[f"{group}:{ep.name}"] = {
                "value": ep.value,
                "package": dist.name if dist else None,
                "version": dist.version if dist else None,
            }
    return found


def describe(settings: dict[str, Any], devices: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Everything a reader needs to reproduce or judge a benchmark table."""
    return {
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "plugins": plugins(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "env": {name: os.environ.get(name) for name in ENV_VARS},
        "git": git_state(),
        "devices": devices,
        **settings,
    }
