"""An op that mends, in place, the rows of a compiled graph's output that a guard rejects.

Why: a guarded fast path chosen by ``torch.cond`` needs its guard before its output, so the
statistics take a pass of their own: compiled rms_norm read its input twice where compiled
nn.RMSNorm reads it once (1.5-1.9x its time at 2^22 float32 elements, measured with the op
beside it: 1.1-1.2x). With this op the graph computes the fast output first, in inductor's one
kernel, which also writes the per-row statistic, and then calls ``mend_``: it reads the
group-sized statistic, and only where the guard rejects rows does it compute them again by the
technique's formula and write them into the output. Inductor calls it as an extern op after
the kernel and mutates the kernel's own buffer (no copy: checked in its output code). Hand the
op a reduction's own result (rms_norm: the sums of squares), not a value made from it: an
output of its own made inductor split the kernel into two loops over the input. Below
``_decisions.COMPILED_MEND_MIN`` elements the input stays in cache between the two passes and
torch.cond is as fast; for layer_norm the op (taking mean and rstd) measured no faster at 2^16
or 2^22, so only rms_norm registers a mender.

A technique registers its mender here (:func:`register`) and calls :func:`mend_` where
``_decisions.compiled_mend_serves`` allows: an eager function behind the op may branch on data
and index rows, which a compiled graph may not. A bare ``Library`` op, as in
``compiled.py`` beside it and for its reason (custom_op's layers cost tens of us a call); it has
no derivative or batching rule, so only graphs without autograd, torch.func transforms or
forward-mode AD call it, and torch.export keeps to the torch.cond form (ATen ops only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# A fragment: the namespace's DEF library is compiled.py's, which may load or not.
_LIBRARY = torch.library.Library("output_limits", "FRAGMENT")
_LIBRARY.define(
    "mend_(Tensor(a!) y, Tensor x, Tensor? weight, Tensor? bias, Tensor[] stats, str name, float eps) -> ()"
)

Mender = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", "torch.Tensor | None", list, float], None]
_MENDERS: dict[str, Mender] = {}


def register(name: str, mender: Mender) -> None:
    """Make ``mend_(..., name, eps)`` call ``mender(y, x, weight, bias, stats, eps)``, which
    rewrites in place the rows of ``y`` the guard rejects (and touches nothing where it rejects
    none). A float argument is fine with dynamic shapes (tests/test_compile.py), where a
    torch.cond branch cannot close over one."""
    _MENDERS[name] = mender


def _mend(
    y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    stats: list[torch.Tensor], name: str, eps: float,
) -> None:  # fmt: skip
    _MENDERS[name](y, x, weight, bias, stats, eps)


_LIBRARY.impl("mend_", _mend, "CPU")


@torch.library.register_fake("output_limits::mend_", lib=_LIBRARY)
def _(
    y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    stats: list[torch.Tensor], name: str, eps: float,
) -> None:  # fmt: skip
    return None


def mend_(
    y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    stats: list[torch.Tensor], name: str, eps: float,
) -> None:  # fmt: skip
    """Rewrite in place the rows of ``y`` (technique ``name``'s fast output on ``x``, the last
    axis) that the technique's guard rejects by ``stats``, its per-row statistics."""
    torch.ops.output_limits.mend_(y, x, weight, bias, stats, name, eps)
