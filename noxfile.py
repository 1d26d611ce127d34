"""nox sessions for output-limits. ``nox`` alone runs lint and tests; ``nox -s bench`` is opt-in.

On a machine without a package index whose frameworks are already installed (a GPU box), run
``nox --no-venv -s tests``: installs are skipped and the environment is used as it is.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"

# Exact CPU versions of torch, jax, jaxlib, flax (and the test tools) for every session.
CONSTRAINTS = ("-c", "constraints-cpu.txt")
PLUGIN = "./examples/erf_plugin"


def _can_install(session: nox.Session) -> bool:
    if session.venv_backend == "none":
        session.log("no virtualenv (--no-venv): using the installed packages as they are")
        return False
    return True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole suite on CPU: parity, kinks, bounds, errors, heads, the example plugin.

    Extra arguments go to pytest, e.g. ``nox -s tests -- -k softmax -x``.
    """
    env = {}
    if _can_install(session):
        session.install(*CONSTRAINTS, "-e", ".[torch,jax,test]")
        session.install(*CONSTRAINTS, "-e", PLUGIN)
        # The plugin's own test asserts it is registered; it only runs where we installed it.
        env["OUTPUT_LIMITS_EXAMPLE_PLUGIN"] = "1"
    session.run("pytest", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the repository."""
    if _can_install(session):
        session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
