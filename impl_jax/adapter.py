"""The only place tests and benchmarks touch JAX APIs (mirrors ``impl_torch/adapter.py``).

Arrays cross as numpy: float64 and float32 as they are; float16 and bfloat16 are made from
float32 (numpy has no bfloat16), so both frameworks round the same float32 values. State
names are PyTorch's: an ``nnx.Linear`` ``kernel`` (in, out) appears as ``weight`` (out, in).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from harness.state import check_state
from impl_jax._common import require_x64

# JAX's name for the tests' --device (tests/conftest.py): its CUDA devices are platform "gpu".
_PLATFORMS = {"cpu": "cpu", "cuda": "gpu"}

FRAMEWORK_DTYPES: dict[str, Any] = {name: jnp.dtype(name) for name in ("float16", "bfloat16", "float32", "float64")}


def use_device(name: str) -> None:
    """Make arrays and place modules on ``name`` ("cpu" or "cuda") from now on (mirrors
    ``impl_torch.adapter.use_device``): JAX's default device; raise, saying why, where JAX
    sees no such device."""
    if name not in _PLATFORMS:
        raise ValueError(f"use_device takes 'cpu' or 'cuda', got {name!r}")
    try:
        target = jax.devices(_PLATFORMS[name])[0]
    except RuntimeError as error:
        raise RuntimeError(f"use_device({name!r}): jax {jax.__version__} sees no such device ({error})") from None
    jax.config.update("jax_default_device", target)


def _default_device() -> Any:
    return jax.config.jax_default_device or jax.devices()[0]


def device() -> str:
    """The device arrays are made on: "cpu" or "cuda"."""
    return "cuda" if _default_device().platform == "gpu" else "cpu"


def place(module: nnx.Module) -> nnx.Module:
    """``module`` with its state on the adapter's device (updated in place)."""
    nnx.update(module, jax.device_put(nnx.state(module), _default_device()))
    return module


def dtype_name(x: jax.Array) -> str:
    """The dtype as the framework-neutral string harness uses ("float32", ...)."""
    return jnp.dtype(x.dtype).name


def check_array(x: Any, name: str) -> None:
    """Raise, saying what was passed and how to make an array of it, unless ``x`` is a JAX or
    NumPy array, which jax.numpy takes (mirrors ``impl_torch.adapter.check_array``)."""
    if isinstance(x, (jax.Array, np.ndarray)):
        return
    kind = type(x)
    got = f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")
    if got.startswith("torch"):
        fix = "convert it with jnp.from_dlpack(x), or build the PyTorch module: harness.build(..., 'torch')"
    else:
        fix = "make one with jnp.asarray(x)"
    raise TypeError(f"{name} takes a jax.Array (or a NumPy array), got {got}; {fix}")


def check_floats(x: Any, name: str) -> None:
    """check_array, and a floating dtype: what a function of arrays such as an inverse takes; a
    float64 one only with x64 on, which jax.numpy would silently make float32 (mirrors
    ``impl_torch.adapter.check_floats``)."""
    check_array(x, name)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} takes floating inputs, got {dtype_name(x)}; cast it with x.astype(jnp.float32)")
    if jnp.dtype(x.dtype) == jnp.float64:
        require_x64(name)


def from_numpy(a: np.ndarray, dtype: str) -> jax.Array:
    """A new array of ``dtype`` holding ``a`` rounded once (low precision via float32)."""
    if dtype == "float64":
        require_x64("an array")
    source = np.asarray(a, dtype=np.float64 if dtype == "float64" else np.float32)
    return jnp.asarray(source).astype(FRAMEWORK_DTYPES[dtype])


def asarray(a: np.ndarray) -> jax.Array:
    """``a`` as a framework array of the same numpy dtype (for tests of rejected inputs)."""
    return jnp.asarray(a)


def to_numpy(x: jax.Array) -> np.ndarray:
    """float64 stays float64; everything else comes back as float32 (exact for the low dtypes)."""
    a = np.asarray(x)
    return a if a.dtype == np.float64 else a.astype(np.float32)


def _torch_name(path: tuple[Any, ...]) -> tuple[str, bool]:
    """PyTorch's name for an nnx state path, and whether the value is a transposed kernel."""
    *head, last = (str(p) for p in path)
    if last == "kernel":
        return ".".join([*head, "weight"]), True
    return ".".join([*head, last]), False


def vjp(
    module: nnx.Module, x: np.ndarray, cotangent: np.ndarray, dtype: str
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(output, input VJP, parameter VJPs by name) for one call of ``module`` in its current mode.

    Like any call, a training-mode call updates running statistics.
    """
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    y, (dparams, dx), stats = _vjp(graphdef, params, rest, from_numpy(x, dtype), from_numpy(cotangent, dtype))
    nnx.update(module, stats)
    grads = {}
    for path, var in nnx.to_flat_state(dparams):
        name, transposed = _torch_name(path)
        value = to_numpy(var[...])
        grads[name] = value.T if transposed else value
    return to_numpy(y), to_numpy(dx), grads


@functools.partial(jax.jit, static_argnums=0)
def _vjp(graphdef: Any, params: Any, rest: Any, x: jax.Array, cotangent: jax.Array) -> tuple[Any, ...]:
    # The call and its pullback in one program, compiled once per module graph and shapes (equal
    # for modules built alike), where an eager jax.vjp compiles the linearized call and its
    # transpose apart: the suite's time is mostly compiles.
    def call(p: Any, xj: jax.Array) -> tuple[jax.Array, Any]:
        # copy=True: the merged module is created under this trace, so it may update its stats.
        merged = nnx.merge(graphdef, p, rest, copy=True)
        return merged(xj), nnx.state(merged, nnx.BatchStat)

    y, pullback, stats = jax.vjp(call, params, x, has_aux=True)
    return y, pullback(cotangent), stats


@functools.partial(jax.jit, static_argnums=(0, 1))
def _of_input(transform: Any, graphdef: Any, state: Any, *arrays: jax.Array) -> Any:
    """``transform`` of the module as a pure function of its input, parameters and statistics
    held fixed (a training-mode call's statistics update is dropped: transforms of a call do not
    train). Jitted once per transform, module graph and shapes: the same rules as eager, and a
    data-dependent Python branch would fail here as under any jit."""
    return transform(lambda xj: nnx.merge(graphdef, state, copy=True)(xj), *arrays)


def _jvp_of(f: Any, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jax.jvp(f, (x,), (t,))


def _vmap_of(f: Any, xs: jax.Array) -> jax.Array:
    return jax.vmap(f)(xs)


def _hvp_of(f: Any, x: jax.Array, cotangent: jax.Array, t: jax.Array) -> jax.Array:
    return jax.jvp(lambda xj: jax.vjp(f, xj)[1](cotangent)[0], (x,), (t,))[1]


def _jacobians_of(f: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jax.jacrev(f)(x), jax.jacfwd(f)(x)


def jvp(module: nnx.Module, x: np.ndarray, tangent: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(output, its tangent) for the input tangent ``tangent``, by forward mode (``jax.jvp``)."""
    y, dy = _of_input(_jvp_of, *nnx.split(module), from_numpy(x, dtype), from_numpy(tangent, dtype))
    return to_numpy(y), to_numpy(dy)


def vmapped(module: nnx.Module, xs: np.ndarray, dtype: str) -> np.ndarray:
    """``module`` mapped over the leading axis of ``xs`` by ``jax.vmap``."""
    return to_numpy(_of_input(_vmap_of, *nnx.split(module), from_numpy(xs, dtype)))


def second_order(
    module: nnx.Module, x: np.ndarray, cotangent: np.ndarray, tangent: np.ndarray, dtype: str
) -> np.ndarray:
    """The Hessian of <cotangent, module(x)> applied to ``tangent``: forward mode over reverse."""
    arrays = (from_numpy(a, dtype) for a in (x, cotangent, tangent))
    return to_numpy(_of_input(_hvp_of, *nnx.split(module), *arrays))


def jacobians(module: nnx.Module, x: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The input Jacobian by reverse mode and by forward mode (``jax.jacrev``, ``jax.jacfwd``)."""
    reverse, forward = _of_input(_jacobians_of, *nnx.split(module), from_numpy(x, dtype))
    return to_numpy(reverse), to_numpy(forward)


@functools.partial(jax.jit, static_argnums=0)
def _per_sample(graphdef: Any, params: Any, rest: Any, xs: jax.Array, cotangents: jax.Array) -> Any:
    def loss(p: Any, x: jax.Array, c: jax.Array) -> jax.Array:
        return jnp.vdot(c, nnx.merge(graphdef, p, rest, copy=True)(x[None])[0])

    return jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, xs, cotangents)


def per_sample_gradients(
    module: nnx.Module, xs: np.ndarray, cotangents: np.ndarray, dtype: str
) -> dict[str, np.ndarray]:
    """Each sample's parameter gradient of <cotangent_i, module(x_i)>, by name, for a batch along
    the leading axis: ``jax.vmap`` of ``jax.grad`` over the module's parameters."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    grads = _per_sample(graphdef, params, rest, from_numpy(xs, dtype), from_numpy(cotangents, dtype))
    out = {}
    for path, var in nnx.to_flat_state(grads):
        name, transposed = _torch_name(path)
        value = to_numpy(var[...])
        out[name] = np.swapaxes(value, -1, -2) if transposed else value
    return out


def get_state(module: nnx.Module) -> dict[str, np.ndarray]:
    """Parameters and running statistics by PyTorch state-dict name."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(module)):
        name, transposed = _torch_name(path)
        value = to_numpy(var[...])
        out[name] = value.T if transposed else value
    return out


def set_state(module: nnx.Module, state: Mapping[str, np.ndarray]) -> None:
    """Load values by PyTorch state-dict name; the keys and shapes must match exactly."""
    flat = list(nnx.to_flat_state(nnx.state(module)))
    expected = {}
    for path, var in flat:
        name, transposed = _torch_name(path)
        shape = tuple(var[...].shape)
        expected[name] = shape[::-1] if transposed else shape
    check_state(expected, state)
    for path, var in flat:
        name, transposed = _torch_name(path)
        value = np.asarray(state[name])
        var[...] = from_numpy(value.T if transposed else value, dtype_name(var[...]))


def is_training(module: nnx.Module) -> bool | None:
    """Whether ``module`` is in training mode (batch statistics in normalization layers); None
    when nothing in it has a mode (Flax modes live on the layers that use them)."""
    modes = [m.use_running_average for _, m in nnx.iter_graph(module) if hasattr(m, "use_running_average")]
    return None if not modes else not all(modes)


def set_training(module: nnx.Module, training: bool | None) -> None:
    """Put ``module`` in training (True) or evaluation (False) mode."""
    if training is None:
        return
    if training:
        module.train()
    else:
        module.eval()
