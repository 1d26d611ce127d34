"""Moving built modules, with their trained values, between PyTorch and JAX, and loading
PyTorch checkpoints safely.

Every module made by :func:`harness.build` or :func:`harness.head` carries a
:class:`BuildRecord` saying how it was made; conversion rebuilds it in the other framework and
copies every parameter and running statistic by PyTorch state-dict name, then the train/eval mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.build import RECORD_ATTRIBUTE, BuildRecord, backend, build, head, record_of
from harness.registry import check_framework
from harness.spec import Framework


def rebuild(record: BuildRecord, framework: Framework | str) -> Any:
    """A fresh module in ``framework`` made the way ``record`` says."""
    params = dict(record.params)
    if record.kind == "head":
        return head(
            record.name,
            framework,
            record.in_features,
            record.out_features,
            seed=record.seed,
            dtype=record.dtype,
            **params,
        )
    return build(record.name, framework, **params)


def convert(module: Any, source: Framework | str, target: Framework | str) -> Any:
    """``module`` (made in ``source``) rebuilt in ``target`` with the same values and mode."""
    check_framework(source)
    check_framework(target)
    _check_made_in(module, source, target)
    record = record_of(module)
    out = rebuild(record, target)
    backend(target).set_state(out, backend(source).get_state(module))
    backend(target).set_training(out, backend(source).is_training(module))
    return out


# Where each framework's module classes live, read off the class so that no framework is imported.
_MODULE_BASES = {"torch": ("torch.nn.modules.module", "Module"), "jax": ("flax.nnx.module", "Module")}
_KINDS = {"torch": "a torch.nn.Module", "jax": "a flax.nnx.Module"}
_NAMES = {"torch": "PyTorch", "jax": "JAX"}


def _framework_of(module: Any) -> str | None:
    for framework, (where, name) in _MODULE_BASES.items():
        if any(c.__module__ == where and c.__name__ == name for c in type(module).__mro__):
            return framework
    return None


def _check_made_in(module: Any, source: str, target: str) -> None:
    made_in = _framework_of(module)
    if made_in == source:
        return
    kind = type(module)
    got = f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")
    if made_in == target:
        fix = f"it is a {_NAMES[target]} module already; harness.to_{source}(module) goes the other way"
    else:
        fix = f"pass a module made by harness.build(..., {source!r}) or harness.head(..., {source!r})"
    raise TypeError(f"to_{target} takes {_KINDS[source]} made by harness.build or harness.head, got {got}; {fix}")


def to_jax(torch_module: Any) -> Any:
    """The ``flax.nnx`` twin of a PyTorch module made by ``build`` or ``head``, trained values included."""
    return convert(torch_module, "torch", "jax")


def to_torch(jax_module: Any) -> Any:
    """The PyTorch twin of a ``flax.nnx`` module made by ``build`` or ``head``, trained values included."""
    return convert(jax_module, "jax", "torch")


def load_torch_checkpoint(module: Any, path: str | Path, framework: Framework | str) -> None:
    """Load a PyTorch state-dict file into ``module`` (of ``framework``).

    The file is read with ``torch.load(..., weights_only=True)``: tensors and plain containers
    only, never arbitrary unpickling. Keys and shapes must match the module exactly; the error
    names the first mismatch.
    """
    import torch

    _check_framework_of(module, framework, "load_torch_checkpoint")
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TypeError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    for key, value in state.items():
        if value.is_complex():
            raise TypeError(f"{path}: {key} holds {value.dtype} values; a state dict of real numbers is needed")
    arrays = {k: v.detach().double().numpy() if v.dtype != torch.float64 else v.numpy() for k, v in state.items()}
    backend(framework).set_state(module, arrays)


def save_torch_checkpoint(module: Any, path: str | Path, framework: Framework | str) -> None:
    """Write ``module``'s state (of ``framework``) as a PyTorch state-dict file, its tensors in
    the module's own dtype, as ``torch.save(module.state_dict())`` writes them (the adapters
    hand float16 and bfloat16 values over as float32, exactly)."""
    import torch

    _check_framework_of(module, framework, "save_torch_checkpoint")
    dtype = _state_dtype(module)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in backend(framework).get_state(module).items()}
    if dtype is not None:
        tensors = {k: t.to(getattr(torch, dtype)) if t.is_floating_point() else t for k, t in tensors.items()}
    torch.save(tensors, Path(path))


def _state_dtype(module: Any) -> str | None:
    """The dtype of a built module's parameters and statistics (None: not made by harness)."""
    record = getattr(module, RECORD_ATTRIBUTE, None)
    if not isinstance(record, BuildRecord):
        return None
    return dict(record.params).get("dtype", record.dtype if record.kind == "head" else None)


def _check_framework_of(module: Any, framework: Framework | str, what: str) -> None:
    check_framework(framework)
    made_in = _framework_of(module)
    if made_in is not None and made_in != framework:
        given = Framework(framework).value
        raise TypeError(f"{what} got {_KINDS[made_in]} with framework={given!r}; pass framework={made_in!r}")
