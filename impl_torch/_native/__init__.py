"""C kernels for PyTorch's CPU path, compiled at first use by the system C compiler and loaded
with ctypes. Private to ``impl_torch``, their only user.

The functions take buffer addresses, and this module imports no framework (``node.py`` beside
it, the C++ autograd node of the elementwise kernels, builds against torch). PyTorch's eager CPU
float32 smooth_clamp, scaled_sigmoid, scaled_tanh, soft_clip, leaky_clamp and softsign use them
(``impl_torch/squashes.py``, ``impl_torch/clamps.py``): ATen has no fused op for their formulas,
and the two to ten ATen passes each takes cost up to several times the framework op they are
measured against (README, speed targets); XLA fuses the JAX side itself. So does sparsemax's
threshold (``impl_torch/simplex.py``): Michelot's iteration on rows held in the cache, where each
ATen pass over the whole tensor costs most of a softmax. Compiled, smooth_clamp on large float32
tensors calls its kernel too, as an op of the graph (``compiled.py``); ``mend.py`` holds the
other op a compiled graph calls, which rewrites in place the rows of a norm's fast output that
its guard rejects.

The kernels compute the technique's declaration as the ATen formula does (same parameters in the
same dtype, the exact linear middle, NaN and infinities alike), and the parity tests run both.
Where no compiler is found, a build fails or ``OUTPUT_LIMITS_NATIVE=0`` is set, the ATen formula
runs instead; :func:`build` says which, and every benchmark records it.
"""

from __future__ import annotations

import ctypes
import functools
import math
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

from harness.squashes import smooth_clamp_parts

SOURCES = ("squashes.c", "sparsemax.c", "guards.c")
HEADERS = ("parallel.h", "vmath.h")  # what they share: threads and jobs; exp, log1p, sigmoid, clamp
# The elementwise kernels of squashes.c: each writes the output and, on request, the derivative
# dy/dx beside it, from six float parameters (see each kernel's comment for which).
PARAMETERS = 6
# smooth_clamp_open is smooth_clamp without the final clamp to its bounds, for bounds that rounding
# cannot cross.
ELEMENTWISE = ("smooth_clamp", "smooth_clamp_open", "scaled_sigmoid", "soft_clip", "leaky_clamp", "softsign")
# -march=native: the build runs on the machine that uses it, once per process, so it may use all
# of its vector width (AVX-512 halves the time against AVX2 here). The second set is the fallback
# for compilers that reject it. Never -ffast-math: it would drop NaN and infinity handling.
# -fno-trapping-math lets the comparisons become vector selects; nothing here reads FP flags.
# -fopenmp-simd honours "#pragma omp simd" (no OpenMP runtime): the one reduction that may add in
# vector lanes says so (sparsemax.c).
# -ffp-contract=off: each product rounds before the sum that uses it, as in ATen's separate
# passes (contracted into a fused multiply-add, soft_clip(-inf) came out 2e-8 above lo, where
# the ATen formula lands on lo).
# -fno-fast-math undoes a compiler whose default is a fast model (Intel's icx); the self-check
# after loading catches one that still drops NaN or rounding.
_STRICT = ("-O3", "-fno-fast-math", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math")
FLAG_SETS: tuple[tuple[str, ...], ...] = (
    (*_STRICT, "-march=native", "-fopenmp-simd"),
    (*_STRICT, "-fopenmp-simd"),
    _STRICT,  # no -fopenmp-simd: scalar sums
)
LINK = ("-shared", "-fPIC", "-pthread")


class Build(NamedTuple):
    """The native kernels on this machine. ``library`` is None when they are off, and ``note``
    says why; ``compiler`` and ``flags`` name the build that is on."""

    library: ctypes.CDLL | None
    compiler: str | None
    flags: tuple[str, ...]
    note: str

    def record(self) -> dict[str, object]:
        """What a benchmark records about the build (machine_info)."""
        return {"on": self.library is not None, "compiler": self.compiler, "flags": list(self.flags), "note": self.note}


def _compiler() -> list[str] | None:
    chosen = os.environ.get("CC")
    if chosen:
        return shlex.split(chosen)  # CC may be a command with arguments, e.g. "ccache gcc"
    found = next((name for name in ("cc", "gcc", "clang") if shutil.which(name)), None)
    return [found] if found else None


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)


def _describe_compiler(compiler: list[str]) -> str:
    name = " ".join(compiler)
    try:
        proc = _run([*compiler, "--version"])
    except (OSError, subprocess.SubprocessError):
        return name
    first = proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else ""
    return f"{name}: {first}" if first else name


def _declare(library: ctypes.CDLL) -> None:
    for name in ELEMENTWISE:
        kernel = getattr(library, f"{name}_f32")
        kernel.argtypes = [*[ctypes.c_void_p] * 3, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int]
        kernel.restype = None
    library.sparsemax_threshold_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                                ctypes.c_int]  # fmt: skip
    library.sparsemax_threshold_f32.restype = None
    for suffix in ("f32", "f64"):
        guard = getattr(library, f"untrusted_rows_{suffix}")
        guard.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, *[ctypes.c_double] * 4]
        guard.restype = ctypes.c_int64
        first = getattr(library, f"nan_in_first_{suffix}")
        first.argtypes = [ctypes.c_void_p, *[ctypes.c_int64] * 3]
        first.restype = ctypes.c_int64


@functools.cache
def build() -> Build:
    """Compile, load and check the kernels, once per process (about 0.2 s)."""
    if os.environ.get("OUTPUT_LIMITS_NATIVE", "1") == "0":
        return Build(None, None, (), "off: OUTPUT_LIMITS_NATIVE=0; the ATen formula runs")
    compiler = _compiler()
    if compiler is None:
        return Build(None, None, (), "off: no C compiler (cc, gcc or clang; or set CC); the ATen formula runs")
    failures = []
    try:
        # Built per process into a private folder, never a shared cache: -march=native code from
        # one machine of a cluster can crash on another that shares the home folder.
        with tempfile.TemporaryDirectory(prefix="output-limits-native-", ignore_cleanup_errors=True) as folder:
            sources = [Path(folder) / name for name in SOURCES]
            for name in (*SOURCES, *HEADERS):
                (Path(folder) / name).write_text(files(__package__).joinpath(name).read_text())
            for i, flags in enumerate(FLAG_SETS):
                target = Path(folder) / f"kernels{i}.so"
                proc = _run([*compiler, *flags, *LINK, "-o", str(target), *map(str, sources)])
                if proc.returncode != 0:
                    failures.append(f"{' '.join(flags)}: {proc.stderr.strip()[-500:]}")
                    continue
                library = ctypes.CDLL(str(target))  # mapped now: the file may go with the folder
                _declare(library)
                wrong = _self_check(library)
                if wrong is None:
                    return Build(library, _describe_compiler(compiler), flags, "on")
                failures.append(f"{' '.join(flags)}: built, but {wrong}")
    except (OSError, subprocess.SubprocessError) as error:
        failures.append(f"{type(error).__name__}: {error}")
    built = ", ".join(SOURCES)
    note = f"off: {' '.join(compiler)} gave no working build of {built}; the ATen formula runs. " + " | ".join(failures)
    warnings.warn(f"output-limits native kernels {note}", RuntimeWarning, stacklevel=2)
    return Build(None, _describe_compiler(compiler), (), note)


def _self_check(library: ctypes.CDLL) -> str | None:
    """What a miscompiled build gets wrong (a fast-math default drops NaN), or None: each
    elementwise kernel's output and derivative at NaN, both infinities and ordinary points
    against their closed forms in float64, and sparsemax's threshold on two rows."""
    checks = _elementwise_checks(library)
    # sparsemax: rows [0, -0.5, -3] (support of two: tau -0.75) and a NaN row.
    rows = (ctypes.c_float * 6)(0.0, -0.5, -3.0, math.nan, 0.0, -1.0)
    tau = (ctypes.c_float * 2)()
    library.sparsemax_threshold_f32(ctypes.addressof(rows), ctypes.addressof(tau), 2, 3, 1)
    # The norms' guard: a trusted row, then a NaN mean, an rstd below the low bound and one above
    # the limit.
    mean, rstd = (ctypes.c_double * 4)(0.5, math.nan, 0.5, 0.5), (ctypes.c_double * 4)(1.0, 1.0, 1e-3, 1e9)
    count = library.untrusted_rows_f64(ctypes.addressof(mean), ctypes.addressof(rstd), 4, 1e-10, 1e-8, 1e-5, 1e-2)
    checks.append(("norm guard", [float(count)], [3.0]))
    # The softmaxes' guard on 2 x 3 x 2 values (axis in the middle): a NaN off the first entries
    # is not read, one on them is.
    values = (ctypes.c_double * 12)(*[0.5] * 12)
    values[2] = math.nan  # y[0, 1, 0]
    seen = [library.nan_in_first_f64(ctypes.addressof(values), 2, 3, 2)]
    values[7] = math.nan  # y[1, 0, 1]
    seen.append(library.nan_in_first_f64(ctypes.addressof(values), 2, 3, 2))
    checks.append(("softmax guard", [float(v) for v in seen], [0.0, 1.0]))
    for name, got, want in (*checks, ("sparsemax threshold", tau, [-0.75, math.nan])):
        for a, b in zip(got, want, strict=True):
            if not (math.isnan(a) and math.isnan(b)) and a != b and not abs(a - b) <= 1e-6 * max(1.0, abs(b)):
                return f"its {name} gives {list(got)}, expected {want}"
    return None


def _elementwise_checks(library: ctypes.CDLL) -> list[tuple[str, object, list[float]]]:
    """The squashes.c kernels at NaN, both infinities and ordinary points, with their closed
    forms in float64: smooth_clamp on (-1, 1) with r = 1/2 (the middle returns x and derivative
    1, the tails hi - sigmoid(-4e) and 4 s (1 - s)), scaled_sigmoid on (-1, 3) with k = 2,
    soft_clip on (-1, 1) with c = 1/2, leaky_clamp on (-1, 1) with slope 1/4, softsign."""

    def sig(t: float) -> float:
        return 1.0 / (1.0 + math.exp(-t))

    def sp(v: float, c: float) -> float:
        return c * math.log1p(math.exp(v / c))

    shrink = 2.0 / sp(2.0, 0.5)
    x = [math.nan, math.inf, -math.inf, 0.5, -2.0]
    parts = smooth_clamp_parts(-1.0, 1.0, 0.5)
    s = sig(-6.0)
    expected = {
        "smooth_clamp": (
            [math.nan, math.inf, -math.inf, 0.25, 2.0, -2.0],
            [-1.0, 1.0, parts.b_lo, parts.b_hi, parts.r, parts.steepness],
            [math.nan, 1.0, -1.0, 0.25, 1.0 - s, -1.0 + s],
            [math.nan, 0.0, 0.0, 1.0, 4.0 * s * (1.0 - s), 4.0 * s * (1.0 - s)],
        ),
        "scaled_sigmoid": (
            x,
            [-1.0, 3.0, 2.0, 4.0],
            [math.nan, 3.0, -1.0, *(-1.0 + 4.0 * sig(2.0 * v) for v in x[3:])],
            [math.nan, 0.0, 0.0, *(8.0 * sig(2.0 * v) * (1.0 - sig(2.0 * v)) for v in x[3:])],
        ),
        "soft_clip": (
            x,
            [-1.0, 1.0, 0.5, shrink, 2.0],
            [math.nan, 1.0, -1.0, *(1.0 - sp(2.0 - sp(v + 1.0, 0.5), 0.5) * shrink for v in x[3:])],
            [math.nan, 0.0, 0.0, *(shrink * sig((2.0 - sp(v + 1.0, 0.5)) / 0.5) * sig((v + 1.0) / 0.5) for v in x[3:])],
        ),
        "leaky_clamp": (
            x,
            [-1.0, 1.0, 0.25],
            [math.nan, math.inf, -math.inf, 0.5, -1.25],
            [math.nan, 0.25, 0.25, 1.0, 0.25],  # NaN at a NaN x, as the declaration says
        ),
        "softsign": (
            x,
            [],
            [math.nan, 1.0, -1.0, *(v / (1.0 + abs(v)) for v in x[3:])],
            [math.nan, 0.0, 0.0, *(1.0 / (1.0 + abs(v)) ** 2 for v in x[3:])],
        ),
    }
    expected["smooth_clamp_open"] = expected["smooth_clamp"]  # bounds that need no clamp
    checks = []
    for name, (points, params, want_y, want_d) in expected.items():
        xs, y, d = ((ctypes.c_float * len(points))(*points) for _ in range(3))
        p = (ctypes.c_float * PARAMETERS)(*params)
        getattr(library, f"{name}_f32")(*(ctypes.addressof(b) for b in (xs, y, d)), len(points), p, 1)
        checks += [(f"{name} output", y, want_y), (f"{name} derivative", d, want_d)]
    return checks


def available() -> bool:
    return build().library is not None


def _library() -> ctypes.CDLL:
    library = build().library
    if library is None:
        raise RuntimeError(f"native kernels are {build().note}; check available() first")
    return library


class Elementwise:
    """One technique of ELEMENTWISE with its parameters fixed, ready to call on buffers: the
    ctypes function and the float32 parameter array are made once (see :func:`elementwise`),
    not per call, where they cost more than the kernel on small tensors."""

    def __init__(self, name: str, params: tuple[float, ...]) -> None:
        self.name, self.params = name, params
        self._kernel = getattr(_library(), f"{name}_f32")
        # ctypes rounds the Python floats to float32, as ATen rounds a Python scalar.
        self._params = (ctypes.c_float * PARAMETERS)(*params)
        # For a caller that runs the kernel from compiled code (impl_torch's C++ autograd node):
        # valid while this object lives.
        self.address: int = ctypes.cast(self._kernel, ctypes.c_void_p).value or 0
        self.params_address: int = ctypes.addressof(self._params)

    def __call__(self, x: int, y: int, d: int | None, n: int, threads: int) -> None:
        """Write the technique of the ``n`` contiguous float32 at address ``x`` to address ``y``,
        and its derivative dy/dx to address ``d`` unless ``d`` is None."""
        self._kernel(x, y, d, n, self._params, threads)


@functools.lru_cache(maxsize=1024)
def elementwise(name: str, params: tuple[float, ...]) -> Elementwise:
    """The kernel of technique ``name`` (one of ELEMENTWISE) with ``params`` (at most PARAMETERS,
    as its kernel reads them), made once per process and parameters."""
    return Elementwise(name, params)


def sparsemax_threshold_f32(z: int, tau: int, rows: int, n: int, *, threads: int) -> None:
    """Write sparsemax's threshold of each of ``rows`` contiguous float32 rows of ``n`` at
    address ``z`` (shifted: maximum 0, or NaN) to address ``tau``."""
    _library().sparsemax_threshold_f32(z, tau, rows, n, threads)


def nan_in_first(y: int, outer: int, n: int, inner: int, *, double: bool) -> bool:
    """Whether any first entry along the middle axis of the ``outer`` x ``n`` x ``inner``
    contiguous float32 or (``double``) float64 values at address ``y`` is NaN (guards.c)."""
    library = _library()
    return bool((library.nan_in_first_f64 if double else library.nan_in_first_f32)(y, outer, n, inner))


def row_guard(double: bool, k: float, floor: float, eps: float, low: float) -> Callable[[int | None, int, int], int]:
    """The norms' trust rule (guards.c; ``impl_torch/norms.py`` holds its numpy twin) for float32
    or (``double``) float64 statistics, its constants fixed: ``(mean, rstd, rows)`` -> how many
    of ``rows`` contiguous (mean, rstd) pairs at those addresses fail it; ``mean`` None is the
    rule on rstd alone. Make it once per rule (norms._row_guard caches it): the lookups and
    keyword arguments at each call measured 3-6 us above the bare ctypes call, after a 55 us
    RMSNorm of 64 rows (one process, this project's CPU machine)."""
    library = _library()
    guard = library.untrusted_rows_f64 if double else library.untrusted_rows_f32
    return lambda mean, rstd, rows: guard(mean, rstd, rows, k, floor, eps, low)
