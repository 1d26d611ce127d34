"""Process settings shared by the benchmark session and bench/speed_ratios.py. Call
:func:`configure` before anything imports torch or jax."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any

# glibc mallopt parameters.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
# Heap grown and touched up front: several times the largest CPU working set (2^22 float32
# elements, 16 MiB a buffer), in blocks below the mmap threshold so that freeing keeps them.
_WARM_BLOCK, _WARM_BLOCKS = 16 << 20, 64


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None where
    unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _reuse_freed_memory() -> str:
    # Fresh 16 MB outputs otherwise come from mmap and page-fault on every call, making plain
    # elementwise ops several times slower in both frameworks; keep freed blocks for reuse.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallopt"):
        return "platform default (no glibc mallopt)"
    settings = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, (1 << 31) - 1), (_M_TOP_PAD, 64 << 20))
    if not all(libc.mallopt(param, value) for param, value in settings):
        return "platform default (mallopt refused)"
    # Reuse alone still let the heap grow, a 16 MiB block at a time, whenever fragmentation left no
    # free block large enough: those calls (4096 page faults each, in PyTorch's forward+backward
    # rows) paid for the kernel zeroing fresh pages. A heap touched once up front has room.
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(_WARM_BLOCK) for _ in range(_WARM_BLOCKS)]
    for block in blocks:
        if block:
            libc.memset(block, 0, _WARM_BLOCK)
    for block in blocks:
        libc.free(block)
    return (
        "glibc mallopt M_MMAP_THRESHOLD=32MiB M_TRIM_THRESHOLD=2GiB M_TOP_PAD=64MiB: freed buffers reused; "
        f"heap of {_WARM_BLOCK * _WARM_BLOCKS >> 20} MiB touched up front"
    )


def configure(threads: int, tf32: bool = False) -> dict[str, Any]:
    """Give both frameworks the same cores, threads, allocation policy and matmul precision."""
    if hasattr(os, "sched_setaffinity"):
        # No XLA flag limits XLA:CPU's thread pool; it is sized from the CPU affinity. Pinning the
        # process to `threads` cores gives both frameworks the same cores.
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    multi = "true" if threads > 1 else "false"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen={multi}".strip()
    # Two frameworks in one process: JAX must not take 75% of the GPU before PyTorch runs.
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    allocation = _reuse_freed_memory()

    import jax
    import torch
    import torch._dynamo.config as dynamo

    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
    # One compiled module serves all sizes of a case; a hit limit must fail, never fall back
    # to eager while the row still says "compile".
    dynamo.recompile_limit = 64
    dynamo.accumulated_recompile_limit = 4096
    dynamo.fail_on_recompile_limit_hit = True
    import harness

    return {
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "allocation": allocation,
        "tf32": tf32,
        # Which code PyTorch's eager CPU float32 smooth_clamp rows ran: the C kernel or ATen.
        "native_kernels": harness.backend("torch").native_kernels(),
    }
