"""The conformance kit as tests of a plugin's own suite: a pytest plugin (entry point
``pytest11``, loaded wherever output-limits is installed) that does nothing until a test file
asks for it.

Opt in with one line in any test file of the plugin package::

    from harness.pytest_plugin import test_output_limits_conformance  # noqa: F401

Every check of ``harness.conformance`` then runs as one test per (technique, check), on the
techniques named by ``--output-limits NAME,...`` or the ini option ``output_limits_techniques``,
by default every installed plugin's. A failure names the check, the technique, the case, the
worst error and its limit, as ``python -m harness check`` does. Importing this module imports
no framework.
"""

from __future__ import annotations

from typing import Any

import pytest

OPTION = "--output-limits"
INI = "output_limits_techniques"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        OPTION, default=None, help="output-limits conformance: comma-separated techniques, or 'all' (default: plugins')"
    )
    parser.addini(INI, "output-limits conformance: the techniques to check (default: every plugin's)", type="args")


def _techniques(config: pytest.Config) -> list[str]:
    import harness

    given = config.getoption(OPTION)
    try:
        return harness.registry.select(given.split(",") if given else list(config.getini(INI)))
    except LookupError as error:
        raise pytest.UsageError(f"{OPTION}: {error}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "output_limits_check" not in metafunc.fixturenames:
        return
    from harness.conformance import CHECKS

    cases = [(name, check) for name in _techniques(metafunc.config) for check in CHECKS]
    metafunc.parametrize("output_limits_check", cases, ids=[f"{n}-{c.replace(' ', '_')}" for n, c in cases])


def test_output_limits_conformance(output_limits_check: tuple[str, str]) -> None:
    """One conformance check of one technique, every case of it."""
    import numpy as np

    from harness import conformance

    name, check = output_limits_check
    conformance.prepare()
    results: list[Any] = conformance.CHECKS[check](name, np.random.default_rng(0))
    failed = [r for r in results if not r.ok]
    assert not failed, "\n".join(
        f"{r.check} of {r.technique} ({r.case}): worst {r.worst:.3g}, limit {r.limit:.3g}; {r.detail}" for r in failed
    )
