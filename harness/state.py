"""Framework-neutral checks for moving parameter and running-statistic values into a module."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def check_state(expected: Mapping[str, tuple[int, ...]], given: Mapping[str, np.ndarray]) -> None:
    """Raise naming the first mismatch between a module's entries (name -> shape) and ``given``.

    Names are PyTorch state-dict names in both frameworks (Linear ``weight`` is (out, in)).
    """
    for name in sorted(set(expected) | set(given)):
        if name not in given:
            raise KeyError(f"state is missing {name!r} (shape {expected[name]})")
        if name not in expected:
            raise KeyError(f"unexpected state entry {name!r}; expected: {', '.join(sorted(expected))}")
        if tuple(np.shape(given[name])) != tuple(expected[name]):
            raise ValueError(f"state entry {name!r} has shape {np.shape(given[name])}, expected {expected[name]}")
