"""The C++ autograd nodes of the elementwise kernels, the clamps and hardsigmoid (``_native/node.cpp``):
built against the installed torch by the system C++ compiler once, cached, and loaded as
``torch.ops``.

Why: a Python ``torch.autograd.Function`` adds 15-20 us to each forward+backward, a quarter of a
2^16-element sigmoid's; the node adds a few. Where it is off (no C++ compiler or torch headers,
a failed build, ``OUTPUT_LIMITS_NATIVE_NODE=0``), ``_common._NativeElementwise`` does the same in
Python; the tests run both.

Why a cache is safe here, where the C kernels are built per process: the node is built for no
particular machine (it calls the kernels by address; its one loop of its own, the clamps'
backward, carries an AVX2 variant chosen at load time), so one build serves every machine with
the same torch, compiler and source, which the cache key names. Builds land atomically (written
to a temporary name, then renamed), so concurrent first uses only duplicate work.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

import torch

SOURCE = "node.cpp"
Rule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_RULES: list[Rule] = []  # elementwise_rule's numbers index this list


class Node(NamedTuple):
    """The loaded nodes: ``op`` (the elementwise C kernels' node), ``hardsigmoid``, ``values``,
    ``recorded`` and ``clamp_inside`` are None when they are off, and ``note`` says why."""

    op: Callable[..., torch.Tensor] | None
    note: str
    hardsigmoid: Callable[..., torch.Tensor] | None = None
    values: Callable[..., torch.Tensor] | None = None  # the kernel's output alone, no autograd node
    # recorded(x, y, d, number): y with the node of a kernel that already wrote y and d = dy/dx
    # (the Triton kernels, launched from Python).
    recorded: Callable[..., torch.Tensor] | None = None
    # clamp_inside(x, lo, hi, number): clamp with the clamps' declared gradient.
    clamp_inside: Callable[..., torch.Tensor] | None = None


def _compiler() -> list[str] | None:
    chosen = os.environ.get("CXX")
    if chosen:
        return shlex.split(chosen)
    found = next((name for name in ("c++", "g++", "clang++") if shutil.which(name)), None)
    return [found] if found else None


def _cache_folder() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "output-limits"


def _command(compiler: list[str], source: Path, target: Path) -> list[str]:
    root = Path(torch.__file__).parent
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        *compiler, "-O2", "-std=c++20", "-shared", "-fPIC", "-w", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-I{root / 'include'}", f"-I{root / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
        str(source), f"-L{root / 'lib'}", "-lc10", "-ltorch_cpu", "-o", str(target),
    ]  # fmt: skip


def _key(compiler: list[str], text: str) -> str:
    try:
        version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    torch_build = f"{torch.__version__} {torch.version.git_version} {Path(torch.__file__).parent}"
    return hashlib.sha256("\0".join([text, torch_build, " ".join(compiler), version]).encode()).hexdigest()[:20]


def _build(compiler: list[str]) -> Path:
    """The cached library for this torch and compiler, built first if missing."""
    text = files("impl_torch._native").joinpath(SOURCE).read_text()
    name = f"node-{_key(compiler, text)}.so"
    for folder in (_cache_folder(), Path(tempfile.gettempdir()) / f"output-limits-{os.getuid()}"):
        target = folder / name
        if target.exists():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder, prefix="build-") as work:
                source = Path(work) / SOURCE
                source.write_text(text)
                partial = Path(work) / name
                proc = subprocess.run(_command(compiler, source, partial), capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr.strip()[-800:])
                os.replace(partial, target)
            return target
        except OSError:
            continue  # an unwritable cache: the next folder
    raise OSError("no writable folder for the build (set XDG_CACHE_HOME)")


@functools.cache
def node() -> Node:
    """Build (once per torch and compiler, about 15 s), load and register the node."""
    for switch in ("OUTPUT_LIMITS_NATIVE", "OUTPUT_LIMITS_NATIVE_NODE"):  # all compiled code, or the node
        if os.environ.get(switch, "1") == "0":
            return Node(None, f"off: {switch}=0; a Python autograd Function runs")
    compiler = _compiler()
    if compiler is None:
        return Node(None, "off: no C++ compiler (c++, g++ or clang++; or set CXX); a Python autograd Function runs")
    try:
        torch.ops.load_library(str(_build(compiler)))
        library = torch.library.Library("output_limits_native", "IMPL")
        library.impl("elementwise_rule", _rule, "CompositeImplicitAutograd")
        _LIBRARIES.append(library)  # a Library unregisters its kernels when collected
        ops = torch.ops.output_limits_native
        # ._op: the C++ entry, without torch.ops' Python layers (0.5-1 us a call).
        op, hardsigmoid = ops.elementwise.default._op, ops.hardsigmoid.default._op
        values, recorded = ops.elementwise_values.default._op, ops.recorded.default._op
        clamp_inside = ops.clamp_inside.default._op
    # AttributeError: a library without one of the ops (built from another source) is off too.
    except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as error:
        failure = f"{type(error).__name__}: {error}"
        note = f"off: the C++ node did not build or load ({failure}); a Python autograd Function runs"
        warnings.warn(f"output-limits {note}", RuntimeWarning, stacklevel=2)
        return Node(None, note)
    return Node(op, "on", hardsigmoid, values, recorded, clamp_inside)


_LIBRARIES: list[torch.library.Library] = []


def _rule(x: torch.Tensor, grad: torch.Tensor, number: int) -> torch.Tensor:
    return _RULES[number](x, grad)


def number(rule: Rule) -> int:
    """A number that stands for ``rule`` in the node (kept for the process: callers make one
    rule per technique and parameters, ``_common.NativeKernel``)."""
    _RULES.append(rule)
    return len(_RULES) - 1
