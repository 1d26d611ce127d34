"""Benchmark session setup. Everything that shapes a timing is fixed here, before any framework
is imported, identically for both frameworks, and recorded in the JSON's ``machine_info``."""

from __future__ import annotations

from typing import Any

import pytest

import harness
from bench import plan as benchplan
from bench.environment import describe
from bench.process import available_cores, configure


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("output-limits benchmarks")
    group.addoption("--quick", action="store_true", help="a small subset: a few techniques, sizes and styles")
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


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config.option, "threads"):
        return
    settings = configure(_threads(config), tf32=bool(config.getoption("tf32")))
    devices = tuple(d for d in harness.backend("torch").bench_devices() if d in harness.backend("jax").bench_devices())
    wanted = config.getoption("devices")
    if wanted:
        missing = [d for d in wanted.split(",") if d not in devices]
        if missing:
            raise pytest.UsageError(f"--devices {','.join(missing)}: not seen by both frameworks (seen: {devices})")
        devices = tuple(wanted.split(","))
    config.stash[SETTINGS] = {
        **settings,
        "quick": bool(config.getoption("quick")),
        "budget_s": _budget(config),
        "bench_devices": devices,
        "timer": "time.perf_counter, read after blocking on the last output (torch.cuda.synchronize on GPU)",
    }


SETTINGS = pytest.StashKey[dict]()


def _plan(config: pytest.Config) -> list[benchplan.BenchCase]:
    settings = config.stash[SETTINGS]
    devices = settings["bench_devices"]
    quick = settings["quick"]
    techniques = config.getoption("techniques")
    names = tuple(techniques.split(",")) if techniques else (benchplan.QUICK_TECHNIQUES if quick else None)
    sizes = config.getoption("sizes")
    if sizes:
        chosen = tuple(2 ** int(k) for k in sizes.split(","))
        by_device = dict.fromkeys(devices, chosen)
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
