"""Benchmark session setup. Everything that shapes a timing is fixed here, before any framework
is imported, identically for both frameworks, and recorded in the JSON's ``machine_info``."""

from __future__ import annotations

import time
from typing import Any

import pytest

import harness
from bench import plan as benchplan
from bench.environment import describe
from bench.process import available_cores, available_memory, configure

# Device names the benchmark knows; what users also type for them.
DEVICES = ("cpu", "cuda")
DEVICE_ALIASES = {"gpu": "cuda", "cuda:0": "cuda", "nvidia": "cuda", "host": "cpu"}
# Float32 buffers a case holds at once, at most: input, cotangent, the outputs and gradients of
# both frameworks, the compiled and built-in rows', with room for the frameworks' own.
BUFFERS_PER_CASE = 12


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("output-limits benchmarks")
    group.addoption(
        "--quick",
        action="store_true",
        help="a small subset: a few techniques and every plugin's, fewer sizes and rounds",
    )
    group.addoption("--threads", default="1", help="intra-op threads for both frameworks: an int or 'all' (default 1)")
    group.addoption("--techniques", default=None, help="comma-separated technique names (default: all registered)")
    group.addoption("--sizes", default=None, help="comma-separated log2 sizes, e.g. 10,16,22 (default: the plan's)")
    group.addoption("--devices", default=None, help="comma-separated subset of cpu,cuda (default: all seen by both)")
    group.addoption("--tf32", action="store_true", help="allow TF32 matmuls on GPUs in both frameworks (recorded)")
    group.addoption(
        "--budget",
        default=None,
        type=float,
        help="timed seconds per row (default 1.0, --quick 0.1); at least 7 rounds are timed whatever it says",
    )
    group.addoption(
        "--stop-after",
        default=None,
        type=float,
        help="seconds after which the rows not yet started are skipped, so that a run cut to fit a "
        "lease still writes its JSON (order the rows that matter first with --sizes)",
    )


def _threads(config: pytest.Config) -> int:
    value = config.getoption("threads")
    available = available_cores()
    if value == "all":
        return available
    if not value.isdigit() or not 1 <= int(value) <= available:
        raise pytest.UsageError(f"--threads must be 'all' or an int from 1 to {available}, got {value!r}")
    return int(value)


def _budget(config: pytest.Config) -> float:
    value = config.getoption("budget")
    if value is None:
        return 0.1 if config.getoption("quick") else 1.0
    if not value > 0:
        raise pytest.UsageError(f"--budget must be a positive number of seconds per row, got {value!r}")
    return value


def _sizes(config: pytest.Config) -> tuple[int, ...] | None:
    """--sizes as element counts, checked against this machine's memory before anything is
    allocated."""
    value = config.getoption("sizes")
    if value is None:
        return None
    try:
        logs = [int(k) for k in value.split(",")]
    except ValueError:
        raise pytest.UsageError(f"--sizes takes comma-separated log2 sizes such as 10,16,22, got {value!r}") from None
    if not logs or min(logs) < 0:
        raise pytest.UsageError(f"--sizes takes log2 sizes from 0 up, such as 10,16,22, got {value!r}")
    largest = max(logs)
    need, have = 4 * BUFFERS_PER_CASE * 2**largest, available_memory()
    if have is not None and need > have:
        fits = max(0, (have // (4 * BUFFERS_PER_CASE)).bit_length() - 1)
        raise pytest.UsageError(
            f"--sizes {largest}: a case of 2^{largest} float32 elements needs about {need / 2**30:.3g} GiB, and "
            f"{have / 2**30:.3g} GiB are available here; the largest size that fits is {fits}"
        )
    return tuple(2**k for k in logs)


def _devices(config: pytest.Config) -> tuple[str, ...]:
    seen = tuple(d for d in harness.backend("torch").bench_devices() if d in harness.backend("jax").bench_devices())
    wanted = config.getoption("devices")
    if not wanted:
        return seen
    names = tuple(wanted.split(","))
    for name in names:
        if name not in DEVICES:
            hint = f"did you mean {DEVICE_ALIASES[name]}? " if name in DEVICE_ALIASES else ""
            raise pytest.UsageError(
                f"--devices {name}: unknown device; {hint}the devices are {', '.join(DEVICES)} "
                f"(seen by both frameworks here: {', '.join(seen)})"
            )
    missing = [d for d in names if d not in seen]
    if missing:
        raise pytest.UsageError(
            f"--devices {','.join(missing)}: not seen by both frameworks here (seen: {', '.join(seen)}); "
            "a CUDA run needs CUDA builds of both (OUTPUT_LIMITS_CUDA=1 nox -s bench)"
        )
    return names


def _techniques(config: pytest.Config) -> tuple[str, ...] | None:
    value = config.getoption("techniques")
    if not value:
        return None
    try:
        return tuple(harness.registry.select(value.split(",")))
    except LookupError as error:
        raise pytest.UsageError(f"--techniques: {error}") from None


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config.option, "threads"):
        return
    sizes, techniques = _sizes(config), _techniques(config)
    settings = configure(_threads(config), tf32=bool(config.getoption("tf32")))
    devices = _devices(config)
    config.stash[SETTINGS] = {
        **settings,
        "quick": bool(config.getoption("quick")),
        "budget_s": _budget(config),
        "bench_devices": devices,
        "sizes": sizes,
        "techniques": techniques,
        "timer": "time.perf_counter, read after blocking on the last output (torch.cuda.synchronize on GPU)",
        "stop_after_s": _stop_after(config),
    }
    config.stash[DEADLINE] = time.monotonic() + (config.stash[SETTINGS]["stop_after_s"] or float("inf"))


def _stop_after(config: pytest.Config) -> float | None:
    value = config.getoption("stop_after")
    if value is not None and not value > 0:
        raise pytest.UsageError(f"--stop-after takes a positive number of seconds, got {value!r}")
    return value


def pytest_runtest_setup(item: pytest.Item) -> None:
    # A row not started by the deadline is skipped, not cut short: the JSON is written at the
    # end of the session, so a run killed from outside keeps nothing.
    callspec = getattr(item, "callspec", None)
    late = time.monotonic() > item.config.stash.get(DEADLINE, float("inf"))
    if late and callspec is not None and "bench_case" in callspec.params:
        pytest.skip(f"--stop-after {item.config.stash[SETTINGS]['stop_after_s']:g}: not started in time")


SETTINGS = pytest.StashKey[dict]()
DEADLINE = pytest.StashKey[float]()


def _plan(config: pytest.Config) -> list[benchplan.BenchCase]:
    settings = config.stash[SETTINGS]
    devices = settings["bench_devices"]
    quick = settings["quick"]
    techniques, sizes = settings["techniques"], settings["sizes"]
    # --quick keeps every installed plugin's techniques: a plugin's author benches it in minutes.
    names = techniques or ((*benchplan.QUICK_TECHNIQUES, *harness.registry.plugin_names()) if quick else None)
    if sizes:
        by_device = dict.fromkeys(devices, sizes)
    else:
        by_device = {d: benchplan.QUICK_SIZES for d in devices} if quick else None
    styles = {"torch": ("eager", "compile"), "jax": ("jit",)}
    return benchplan.cases(devices, names, by_device, styles)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_case" in metafunc.fixturenames:
        plan = _plan(metafunc.config)
        metafunc.parametrize("bench_case", plan, ids=[c.id for c in plan])


@pytest.fixture(scope="session")
def bench_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.config.stash[SETTINGS]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    settings = config.stash[SETTINGS]
    devices = {
        fw: {d: harness.backend(fw).device_name(d) for d in settings["bench_devices"]} for fw in harness.FRAMEWORKS
    }
    import torch

    cuda = {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    recorded = {**settings, "bench_devices": list(settings["bench_devices"]), **cuda}
    machine_info["output_limits"] = describe(recorded, devices)
