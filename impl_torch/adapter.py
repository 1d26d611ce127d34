"""The only place tests and benchmarks touch PyTorch APIs (mirrors ``impl_jax/adapter.py``).

Arrays cross as numpy: float64 and float32 as they are; float16 and bfloat16 are made from
float32 (numpy has no bfloat16), so both frameworks round the same float32 values. They are
made on the device ``use_device`` chose (the CPU unless the tests were run with ``--device``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from harness.state import check_state

FRAMEWORK_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


# Where from_numpy puts arrays and place puts modules: the tests' --device (tests/conftest.py).
_device = torch.device("cpu")


def use_device(name: str) -> None:
    """Make arrays and place modules on ``name`` ("cpu" or "cuda") from now on (mirrors
    ``impl_jax.adapter.use_device``); raise, saying why, where PyTorch sees no such device."""
    if name not in ("cpu", "cuda"):
        raise ValueError(f"use_device takes 'cpu' or 'cuda', got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise RuntimeError(f"use_device('cuda'): torch {torch.__version__} ({build}) sees no CUDA device")
    global _device
    _device = torch.device(name)


def device() -> str:
    """The device arrays are made on: "cpu" or "cuda"."""
    return _device.type


def place(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with its parameters and buffers on the adapter's device (moved in place)."""
    return module.to(_device)


def dtype_name(x: torch.Tensor) -> str:
    """The dtype as the framework-neutral string harness uses ("float32", ...)."""
    return str(x.dtype).removeprefix("torch.")


def check_array(x: Any, name: str) -> None:
    """Raise, saying what was passed and how to make a tensor of it, unless ``x`` is a tensor
    (mirrors ``impl_jax.adapter.check_array``)."""
    if isinstance(x, torch.Tensor):
        return
    kind = type(x)
    got = f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")
    if got.startswith(("jax", "jaxlib")):
        fix = "convert it with torch.from_dlpack(x), or build the JAX module: harness.build(..., 'jax')"
    elif isinstance(x, np.ndarray):
        fix = "convert it with torch.from_numpy(x)"
    else:
        fix = "make one with torch.as_tensor(x)"
    raise TypeError(f"{name} takes a torch.Tensor, got {got}; {fix}")


def check_floats(x: Any, name: str) -> None:
    """check_array, and a floating dtype: what a function of arrays such as an inverse takes
    (mirrors ``impl_jax.adapter.check_floats``)."""
    check_array(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} takes floating inputs, got {dtype_name(x)}; cast it with x.float()")


def from_numpy(a: np.ndarray, dtype: str) -> torch.Tensor:
    """A new tensor of ``dtype`` holding ``a`` rounded once (low precision via float32)."""
    source = np.asarray(a, dtype=np.float64 if dtype == "float64" else np.float32)
    # Copied into memory PyTorch allocates (64-byte aligned), as tensors in a model are and as
    # jax.device_put gives XLA's own buffer: a numpy buffer is only 16-byte aligned, which slowed
    # some kernels measurably (an unfair input for a benchmark).
    # np.require copies only an array from_numpy cannot view (negative strides, read-only).
    view = torch.from_numpy(np.require(source, requirements=["C_CONTIGUOUS", "WRITEABLE"]))
    return view.to(_device, FRAMEWORK_DTYPES[dtype], copy=True)


def asarray(a: np.ndarray) -> torch.Tensor:
    """``a`` as a framework array of the same numpy dtype (for tests of rejected inputs)."""
    return torch.from_numpy(np.array(a)).to(_device)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """float64 stays float64; everything else comes back as float32 (exact for the low dtypes)."""
    x = x.detach().cpu()
    return x.numpy() if x.dtype == torch.float64 else x.float().numpy()


def vjp(
    module: torch.nn.Module, x: np.ndarray, cotangent: np.ndarray, dtype: str
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(output, input VJP, parameter VJPs by name) for one call of ``module`` in its current mode.

    Like any call, a training-mode call updates running statistics.
    """
    xt = from_numpy(x, dtype).requires_grad_(True)
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    y = module(xt)
    grads = torch.autograd.grad(
        y, [xt, *(p for _, p in named)], grad_outputs=from_numpy(cotangent, dtype), allow_unused=True
    )
    dx, *dparams = (
        torch.zeros_like(t) if g is None else g for g, t in zip(grads, [xt, *(p for _, p in named)], strict=False)
    )
    return to_numpy(y), to_numpy(dx), {name: to_numpy(g) for (name, _), g in zip(named, dparams, strict=False)}


def jvp(module: torch.nn.Module, x: np.ndarray, tangent: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(output, its tangent) for the input tangent ``tangent``, by forward mode (``torch.func.jvp``)."""
    y, dy = torch.func.jvp(module, (from_numpy(x, dtype),), (from_numpy(tangent, dtype),))
    return to_numpy(y), to_numpy(dy)


def vmapped(module: torch.nn.Module, xs: np.ndarray, dtype: str) -> np.ndarray:
    """``module`` mapped over the leading axis of ``xs`` by ``torch.func.vmap``."""
    return to_numpy(torch.func.vmap(module)(from_numpy(xs, dtype)))


def second_order(
    module: torch.nn.Module, x: np.ndarray, cotangent: np.ndarray, tangent: np.ndarray, dtype: str
) -> np.ndarray:
    """The Hessian of <cotangent, module(x)> applied to ``tangent``: double backward."""
    xt = from_numpy(x, dtype).requires_grad_(True)
    (dx,) = torch.autograd.grad(module(xt), xt, from_numpy(cotangent, dtype), create_graph=True)
    if not dx.requires_grad:  # the first derivative does not depend on x: the second is 0
        return to_numpy(torch.zeros_like(dx))
    (h,) = torch.autograd.grad(dx, xt, from_numpy(tangent, dtype), allow_unused=True)
    return to_numpy(torch.zeros_like(dx) if h is None else h)


def jacobians(module: torch.nn.Module, x: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The input Jacobian by reverse mode and by forward mode (``torch.func.jacrev``, ``jacfwd``)."""
    xt = from_numpy(x, dtype)
    return to_numpy(torch.func.jacrev(module)(xt)), to_numpy(torch.func.jacfwd(module)(xt))


def per_sample_gradients(
    module: torch.nn.Module, xs: np.ndarray, cotangents: np.ndarray, dtype: str
) -> dict[str, np.ndarray]:
    """Each sample's parameter gradient of <cotangent_i, module(x_i)>, by name, for a batch along
    the leading axis: ``torch.func.vmap`` of ``torch.func.grad`` over ``functional_call``."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    buffers = dict(module.named_buffers())

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.vdot(c.reshape(-1), torch.func.functional_call(module, (p, buffers), (x[None],))[0].reshape(-1))

    batched = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))
    grads = batched(params, from_numpy(xs, dtype), from_numpy(cotangents, dtype))
    return {name: to_numpy(g) for name, g in grads.items()}


def get_state(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """Parameters and buffers by PyTorch state-dict name (Linear weights are (out, in))."""
    return {name: to_numpy(t) for name, t in module.state_dict().items()}


def set_state(module: torch.nn.Module, state: Mapping[str, np.ndarray]) -> None:
    """Load values by state-dict name; the keys and shapes must match exactly."""
    own = module.state_dict()
    check_state({name: tuple(t.shape) for name, t in own.items()}, state)
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(from_numpy(state[name], dtype_name(tensor)))


def is_training(module: torch.nn.Module) -> bool | None:
    """Whether ``module`` is in training mode (batch statistics in normalization layers)."""
    return module.training


def set_training(module: torch.nn.Module, training: bool | None) -> None:
    """Put ``module`` in training (True) or evaluation (False) mode; None leaves it as it is."""
    if training is not None:
        module.train(training)
