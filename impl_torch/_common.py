"""What the PyTorch families share: precision handling and the two clamps with explicit gradients.

Every kink gradient is chosen explicitly: custom autograd Functions state the rule, never the
convention of the primitive that computes the forward. Mirrors ``impl_jax/_common.py``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import is_grad_enabled
from torch.compiler import is_compiling

import harness
from harness.build import RECORD_ATTRIBUTE, retyped
from impl_torch import _decisions, _native
from impl_torch._decisions import (
    block_size,
    elementwise_serves,
    may_write_in_place,
    plain_eager,
    runs_triton,
    tracing,
    tracks_grad,
)
from impl_torch._native import compiled, fused
from impl_torch._native import node as _node
from impl_torch.adapter import FRAMEWORK_DTYPES, check_array, dtype_name

LOW = (torch.float16, torch.bfloat16)


def upcast(x: torch.Tensor) -> torch.Tensor:
    # Composite formulas run in float32 for float16/bfloat16 and round once at the end, so
    # both frameworks round the same value (XLA and ATen round intermediates differently).
    return x.float() if x.dtype in LOW else x


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype ``upcast`` computes ``x`` in."""
    return torch.float32 if x.dtype in LOW else x.dtype


def as_dtype(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Not y.to(dtype) when y has it already: that returns an alias of y, and a compiled custom
    # Function whose forward returns an alias gets dx = 0 from torch 2.11 (see may_write_in_place).
    return y if y.dtype == dtype else y.to(dtype)


def autocast_input(x: torch.Tensor, spec: harness.TechniqueSpec) -> torch.Tensor:
    """``x`` as ``torch.autocast`` hands it to the technique: in float32 where the declaration
    says autocast runs it in float32 on this device (``autocast_float32``), else as it is."""
    if x.dtype in LOW and x.device.type in spec.autocast_float32 and torch.is_autocast_enabled(x.device.type):
        return x.float()
    return x


class _TracedRule(NamedTuple):
    """check_input's decision as a compiled frame reads it: the dtypes it takes (``direct``: of
    those, the ones autocast never changes), the least rank, the ``axis`` parameter if any, and
    the feature size at ``feature_axis``."""

    dtypes: frozenset[torch.dtype]
    direct: frozenset[torch.dtype]
    min_rank: int
    axis: int | None
    feature_axis: int | None
    num_features: int | None


class InputCheck:
    """The declaration's input check of one module (``TechniqueSpec.check_input``: a tensor, a
    dtype it takes, its rank, axis and feature size), remembered for the last (dtype, shape) that
    passed: a module called on batches of one shape checks once, not at every call (2-3 us of
    Python, a tenth of a 64-row layer norm). ``forget`` after the module's parameters change
    (a dtype move).

    Under torch.compile it decides from a few attributes made in advance (``rule``), and
    only an input that fails them runs the declaration's check, which raises its error. Every
    global and attribute that dynamo reads while tracing becomes a guard, checked at every call
    of the compiled module: with check_input traced, compiled rms_norm held 159 guards (143 with
    this rule), and all its guards cost it a third of nn.RMSNorm's time at 2^16 elements (1.24
    of nn.RMSNorm's against 0.87 with the tensor guards only, one process each). Under
    torch.jit.trace it checks every time, as the trace records the call once anyway."""

    def __init__(self, spec: harness.TechniqueSpec, params: dict[str, Any]) -> None:
        self.spec, self.params = spec, params
        self._passed: tuple[torch.dtype, torch.Size] | None = None
        self.rule = self._traced_rule()

    def _traced_rule(self) -> _TracedRule:
        spec, params = self.spec, self.params
        dtypes = frozenset(t for name, t in FRAMEWORK_DTYPES.items() if spec.takes_dtype(params, name))
        # autocast_input changes float16 and bfloat16 inputs at most.
        direct = dtypes - set(LOW)
        return _TracedRule(
            dtypes, direct, spec.min_rank, params.get("axis"), spec.feature_axis, params.get("num_features")
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the technique takes it (``autocast_input``), once the check passed."""
        spec = self.spec
        if is_compiling():
            if self.traced_takes(x):
                return x if x.dtype in self.rule.direct else autocast_input(x, spec)
        elif (
            # Not while torch.jit.trace records: its shapes are traced values, and comparing them
            # would freeze the comparison into the trace. (is_compiling() came first: dynamo cannot
            # trace tracing()'s torch._C call.)
            self._passed is not None
            and not tracing()
            and isinstance(x, torch.Tensor)
            and (x.dtype, x.shape) == self._passed
        ):
            return autocast_input(x, spec)
        check_array(x, spec.name)
        spec.check_input(dtype_name(x), tuple(x.shape), self.params, framework="torch")
        if not (is_compiling() or tracing()):
            self._passed = (x.dtype, x.shape)
        return autocast_input(x, spec)

    def traced_takes(self, x: Any) -> bool:
        """Whether check_input accepts ``x``, as a compiled frame decides it (``_TracedRule``)."""
        rule = self.rule
        # getattr, not isinstance(x, torch.Tensor): that would read this module's torch, one more
        # guard (a non-tensor fails here, and check_array raises).
        ndim = getattr(x, "ndim", -1)
        return (
            ndim >= rule.min_rank
            and x.dtype in rule.dtypes
            and (rule.axis is None or -ndim <= rule.axis < ndim)
            and (rule.feature_axis is None or x.shape[rule.feature_axis] == rule.num_features)
        )

    def forget(self) -> None:
        """After the module's dtype moved: what it takes moved with it."""
        self._passed = None
        self.rule = self._traced_rule()

    # Pickled as the declaration and parameters only: the declaration comes back by name, as it
    # is where the pickle loads, and the rule is made again from it, never carried over stale.
    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "params": self.params}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"], state["params"])


def follow_dtype(module: torch.nn.Module, held: torch.Tensor) -> str:
    """After ``module`` moved to the dtype of ``held``, one of its tensors (``.double()``,
    ``.half()``, ``.to(dtype)``), its build record says so too, so that conversion and pickling
    rebuild it as moved; returns the dtype's name. A dtype no technique takes raises here, at
    the move, not at the next call."""
    name = dtype_name(held)
    if name not in harness.DTYPES:
        raise TypeError(
            f"{type(module).__name__} holds {', '.join(harness.DTYPES)} parameters, got {name}; "
            "move it with .to(torch.float32) or another of those"
        )
    record = getattr(module, RECORD_ATTRIBUTE, None)
    if record is not None:
        object.__setattr__(module, RECORD_ATTRIBUTE, retyped(record, name))
    return name


def refuse_mixed_assigned_load(module: torch.nn.Module, state_dict: dict, prefix: str, metadata: dict, *_: Any) -> None:
    """A load_state_dict pre-hook of the norms and heads. With ``assign=True`` the loaded tensors
    are put in place in their own dtype, and the module becomes one of that dtype (its post-hook,
    as after ``.to(dtype)``); tensors of two dtypes are refused here, before any is in place."""
    if not metadata.get("assign_to_params_buffers", False):
        return
    found = {v.dtype for k, v in state_dict.items() if k.startswith(prefix) and torch.is_tensor(v)}
    if len(found) > 1:
        names = ", ".join(sorted(str(d).removeprefix("torch.") for d in found))
        raise TypeError(
            f"{type(module).__name__} holds tensors of one dtype, got {names} from load_state_dict(assign=True); "
            "convert the state dict's tensors to one dtype, or load without assign=True"
        )


def blocks(x: torch.Tensor) -> list[slice]:
    """Slices of ``x.reshape(-1)`` of ``block_size(x)`` elements each."""
    step = block_size(x)
    return [slice(start, start + step) for start in range(0, x.numel(), step)]


def save_input(ctx: Any, x: torch.Tensor) -> None:
    """Keep ``x`` for the backward and for the forward-mode rule (jvp) alike."""
    ctx.save_for_backward(x)
    ctx.save_for_forward(x)


# Every custom Function here states its derivative once, as a linear map of the incoming
# cotangent or tangent: the elementwise (and sparsemax's symmetric) Jacobians make the VJP and
# the JVP the same map, so ``backward`` and the forward-mode rule both call its ``derivative``
# (a Function whose tangent map differs defines ``tangent_rule``). Written in differentiable ops,
# so that second order (double backward, Hessian-vector products) differentiates the rule
# itself. See ``apply`` for how the forward-mode rule is attached.


def apply(function: type[torch.autograd.Function], *args: Any) -> torch.Tensor:
    """``function.apply(*args)``: with its forward-mode rule and a vmap rule under torch.func
    transforms, forward-mode AD and tracing; as written under torch.compile; and as a classic
    ``forward(ctx, ...)`` Function when plainly eager.

    Dynamo does not trace a Function that defines ``jvp`` (a graph break, "Unsupported custom
    jvp"), and torch.compile takes no forward-mode or vmap rule from one anyway. Plainly eager
    neither rule can be asked for, and torch's ``apply`` of a Function with ``setup_context``
    binds its arguments through ``inspect.signature`` on every call: 45 us measured here, most of
    a 2^16-element op's time.
    """
    if is_compiling():
        return function.apply(*args)
    if plain_eager():
        return _eager_only(function).apply(*args)
    return _with_forward_mode(function).apply(*args)


@functools.cache
def _eager_only(function: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    # The same forward, context and backward in the classic form, which apply passes through.
    # Every forward here takes its arguments positionally and without defaults.
    def forward(ctx: Any, *args: Any) -> Any:
        output = function.forward(*args)
        function.setup_context(ctx, args, output)
        return output

    body = {"forward": staticmethod(forward), "backward": staticmethod(function.backward)}
    return type(function.__name__, (torch.autograd.Function,), body)


@functools.cache
def _with_forward_mode(function: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    # A Function's tangent rule is its own ``tangent_rule``, or else its ``derivative`` applied
    # to the first input's tangent (the others are parameters, not differentiated).
    rule = getattr(function, "tangent_rule", None)
    if rule is None:

        def rule(ctx: Any, tangent: torch.Tensor, *_: Any) -> torch.Tensor:
            return function.derivative(ctx, tangent)

    return type(function.__name__, (function,), {"jvp": staticmethod(rule), "generate_vmap_rule": True})


def at_nan(nan: torch.Tensor, derivative: torch.Tensor) -> torch.Tensor:
    """``derivative`` with NaN where ``nan`` (the input's isnan) is set: the declared derivative at
    a NaN input (harness.TechniqueSpec, reduction_axes), which the piecewise rules' comparisons
    would not give (ATen's hardtanh_backward gives 0 there in its vector lanes and the cotangent
    in its scalar tail). A product with a factor made without a graph (1, or NaN), as JAX's side:
    a select of x itself would be differentiated with respect to x (second order 1 at NaN)."""
    return derivative * torch.where(nan, float("nan"), 1.0).to(derivative.dtype)


def clamp_inside_rule(x: torch.Tensor, v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """v strictly inside (lo, hi), 0 at and beyond the bounds whatever v is (NaN at a NaN x):
    ATen's fused hardtanh_backward (three times faster than torch.where on CPU; the kink tests pin
    it at and beside both bounds, release after release), times at_nan's factor. A NaN x is
    given to it as a point inside: differentiated in v (a JVP by double backward) the op masks
    its cotangent again, which would be 0 at a NaN in its vector lanes where the rule says NaN;
    differentiated in x it keeps its graph (second order 0, as before). Plainly eager the C++
    node's loop computes the first order in one pass (_native/node.cpp)."""
    if is_compiling():
        # Two selects, which inductor makes one vectorized pass of; hardtanh_backward and the
        # factor's select of a NaN constant it does not vectorize on the CPU. Compiled clamp
        # forward+backward at 2^22 took 1.6 of compiled torch.clamp's that way, 0.11-0.13 now
        # (whose own backward is as slow); 0.27 at 2^16 (one process each). A compiled graph
        # has no double backward, so x.detach()'s NaN needs no factor made without a graph.
        return torch.where((x > lo) & (x < hi), v, torch.where(torch.isnan(x), x.detach(), 0.0))
    nan = torch.isnan(x.detach())
    inside = torch.where(nan, (lo + hi) / 2.0, x)
    return at_nan(nan, torch.ops.aten.hardtanh_backward(v, inside, lo, hi))


@functools.lru_cache(maxsize=256)
def _clamp_inside_number(lo: float, hi: float) -> int:
    """The number of clamp_inside_rule with these bounds in the C++ node (second order)."""
    return _node.number(functools.partial(clamp_inside_rule, lo=lo, hi=hi))


class _ClampInside(torch.autograd.Function):
    """clamp with gradient 1 strictly inside (lo, hi), 0 at and beyond the bounds, NaN at NaN."""

    @staticmethod
    def forward(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return torch.clamp(x, lo, hi)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, ctx.lo, ctx.hi = inputs
        save_input(ctx, x)

    @staticmethod
    def derivative(ctx: Any, v: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return clamp_inside_rule(x, v, ctx.lo, ctx.hi)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _ClampInside.derivative(ctx, grad), None, None


class _ClampStraightThrough(torch.autograd.Function):
    """clamp whose gradient is 1 everywhere."""

    @staticmethod
    def forward(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return torch.clamp(x, lo, hi)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None

    @staticmethod
    def tangent_rule(ctx: Any, x_t: torch.Tensor, *_: Any) -> torch.Tensor:
        # A fresh tensor: forward-mode AD refuses a tangent that is the input's own.
        return x_t.clone()


def clamp_inside(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """clamp with gradient 1 strictly inside (lo, hi), 0 at and beyond the bounds, NaN at NaN."""
    # Without autograd the plain fused clamp runs; the Function only adds the kink rule.
    if not tracks_grad(x):
        return x.clamp(lo, hi)  # a method: see _decisions on torch functions in traced code
    if plain_eager():
        # The Function's rule in a C++ node (_native/node.cpp): the Function's Python costs 30-40
        # us a call, most of a 2^16-element forward+backward. Its backward is one pass of its own
        # on the CPU where ATen's hardtanh node (hardtanh_backward) would be the rule but at NaN.
        # Only plainly eager: under transforms and forward mode the Function's rules must run.
        node = _node.node().clamp_inside
        if node is not None:
            return node(x, float(lo), float(hi), _clamp_inside_number(float(lo), float(hi)))
    return apply(_ClampInside, x, lo, hi)


def clamp_straight_through(x: torch.Tensor, lo: float, hi: float, *, fresh: bool = False) -> torch.Tensor:
    """clamp with gradient 1 everywhere (rounding guards, ste_clamp). ``fresh``: ``x`` is a
    temporary made by the caller, so without autograd it is clamped in place."""
    if tracks_grad(x):
        return apply(_ClampStraightThrough, x, lo, hi)
    # In place only where allowed: a trace recorded without grad may be replayed with it.
    return x.clamp_(lo, hi) if fresh and may_write_in_place() else torch.clamp(x, lo, hi)


def patch_rows(
    x: torch.Tensor,
    good: torch.Tensor,
    native: Callable[[torch.Tensor], torch.Tensor],
    formula: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``native`` on the rows of ``x`` (its last axis) that ``good`` (a bool per row) marks, and
    ``formula`` on the others: the rare-case fallback of a guarded fast path (eager only).

    ``native`` runs again on the good rows alone, not reused from the whole tensor: a NaN a bad
    row left in its output would reach the input gradient through the op's backward (0 * NaN)."""
    n = x.shape[-1]
    flat = x.reshape(-1, n)
    rows = flat.new_zeros(flat.shape).index_put((good,), native(flat[good]))
    return rows.index_put((~good,), formula(flat[~good])).reshape(x.shape)


Derivative = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Technique = Callable[..., torch.Tensor]


def _run_kernel(native: NativeKernel, x: torch.Tensor, derivative: bool) -> tuple[torch.Tensor, ...]:
    """(output, derivative dy/dx or None) of ``native`` on ``x``, fresh and contiguous: the C
    kernel on the CPU, the Triton one on CUDA (see _decisions.elementwise_serves)."""
    x = x.contiguous()
    y = torch.empty_like(x)
    d = torch.empty_like(x) if derivative else None
    if x.numel():
        if runs_triton(x):
            fused.run(native.launch, x, y, d)
        else:
            native.kernel(x.data_ptr(), y.data_ptr(), None if d is None else d.data_ptr(), x.numel(),
                          torch.get_num_threads())  # fmt: skip
    return y, d


class _NativeElementwise(torch.autograd.Function):
    """An elementwise technique whose forward is a one-pass kernel (``_native`` on the CPU,
    ``_native.fused`` on CUDA) that also writes the derivative dy/dx, so that the backward is one
    multiplication (where the kernel's exp, or two exp and two log1p, would run again). Only
    plain eager float32 tensors reach it (``elementwise_serves``), so it is written in the
    classic form and needs no forward-mode or vmap rule; ``rule(x, grad)``, the technique's
    derivative in differentiable ATen ops, takes over where the backward is itself
    differentiated (second order): x is kept for it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, native: NativeKernel) -> torch.Tensor:
        y, d = _run_kernel(native, x, derivative=True)
        ctx.rule = native.rule
        ctx.save_for_backward(x, d)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, d = ctx.saved_tensors
        if torch.is_grad_enabled():
            return ctx.rule(x, grad), None
        return grad * d, None


class NativeKernel(NamedTuple):
    """An elementwise technique's kernels with its parameters fixed: the C kernel (None where it
    did not build); the technique's derivative ``rule(x, grad)`` in differentiable ATen ops
    (second order); the number that stands for that rule in the C++ node (``_node``); and what
    a Triton launch passes (``fused.launch``: the technique and its parameters). Each technique
    makes one per parameters and keeps it (``functools.lru_cache``): made per call, the rule's
    partial, the parameters' derivation and the kernel's lookup cost 1-2 us, a tenth of a
    2^16-element clamp."""

    kernel: _native.Elementwise | None
    rule: Derivative
    number: int
    launch: fused.Launch


def native_kernel(name: str, params: tuple[float, ...], rule: Derivative) -> NativeKernel:
    """The kernel of technique ``name`` (of ``_native.ELEMENTWISE``) with ``params``, and its rule."""
    kernel = _native.elementwise(name, params) if _native.available() else None
    return NativeKernel(kernel, rule, _node.number(rule), fused.launch(name, params))


def native_elementwise(
    x: torch.Tensor, kernel: Callable[..., NativeKernel], params: Mapping[str, float] | None = None
) -> torch.Tensor | None:
    """The one-pass kernel ``kernel(**params)`` of an elementwise technique on ``x`` where one
    serves it (``elementwise_serves``) and ``kernel`` takes ``params`` (else it returns None), else
    None: the technique then runs its ATen formula (see native_first). One pass forward (with the
    derivative beside the output where autograd records the call) and one multiplication back, where
    the formula takes several passes each way. The autograd node is the C++ one where it built (on
    CUDA it records what the Triton kernel wrote), else ``_NativeElementwise``; without autograd the
    node's values op runs the C kernel (its C++ entry: about 1 us less than allocating from Python
    and calling through ctypes, which runs where the node is off).

    The decision and the run in one frame, and ``kernel`` called only once a kernel serves: a frame
    that dynamo compiles alone (after torch.compile under vmap, say, it skips the frames above for
    good and compiles their callees) then decides as compiled code, where the kernel's buffer
    addresses would go stale (the output came out NaN without an error when the decision was taken
    in the eager frame above). That holds while elementwise_serves asks plain_eager before anything
    dynamo cannot trace (tests/test_compile.py compiles this frame alone). One frame also costs less
    on the hot path: at 2^16 elements, where input and output fill the cache, each Python call costs
    several times what a loop of calls shows. For the same reason ``params`` is a mapping, not
    keywords (an empty one is not built at each call of a module, whose kernel is bound to its
    parameters), and the common case, the CPU without autograd, is asked first."""
    if not elementwise_serves(x):
        return None
    native = kernel(**params) if params else kernel()
    if native is None:  # parameters the technique does not take: its formula says so
        return None
    grad = is_grad_enabled() and x.requires_grad
    if x.is_cpu and not _decisions.TRITON_ON_CPU:  # runs_triton(x), a call less
        node = _node.node()
        if not grad and node.values is not None:
            return node.values(x, native.kernel.address, native.kernel.params_address)
        if grad and node.op is not None:
            return node.op(x, native.kernel.address, native.kernel.params_address, native.number)
    elif grad and (node := _node.node()).recorded is not None:  # no C++ build for CUDA inference
        # The Triton kernel launches from Python; the node records its output and derivative.
        # detach: a contiguous copy of x need not enter the graph.
        return node.recorded(x, *_run_kernel(native, x.detach(), derivative=True), native.number)
    if grad:
        return _NativeElementwise.apply(x, native)
    return _run_kernel(native, x, derivative=False)[0]


def native_first(kernel: Callable[..., NativeKernel]) -> Callable[[Technique], Technique]:
    """An elementwise technique whose eager path is a one-pass kernel: the decorated function is
    its formula, run wherever ``native_elementwise`` does not serve ``x`` (other dtypes,
    torch.compile, transforms, no kernel built). ``kernel(*params)`` is the technique's
    NativeKernel for its parameters in ``kernel``'s order, made once per parameters (an
    ``lru_cache``). The technique keeps its kernel by the parameters' names (``.kernel``) and its
    formula (``__wrapped__``): a module binds the kernel to its parameters once and makes this
    call itself (``modules.Limit``, where the comment says what that saves)."""
    names = tuple(inspect.signature(kernel).parameters)

    def by_name(**params: float) -> NativeKernel | None:
        # Looked up by position: one NativeKernel (and one derivative rule in the C++ node) per
        # parameters, in whatever order a caller names them. None where they are not the
        # technique's: its formula then raises the error in its own name.
        if len(params) != len(names) or not all(n in params for n in names):
            return None
        return kernel(*(params[n] for n in names))

    def wrap(formula: Technique) -> Technique:
        @functools.wraps(formula)
        def technique(x: torch.Tensor, **params: float) -> torch.Tensor:
            if (y := native_elementwise(x, by_name, params)) is not None:
                return y
            return formula(x, **params)

        technique.kernel = by_name  # type: ignore[attr-defined]
        return technique

    return wrap


class _CompiledKernel(torch.autograd.Function):
    """An elementwise C kernel inside a compiled graph (see compiled_elementwise): output and
    derivative in one pass, the backward one product (``compiled.times``: AOT autograd then
    refuses double backward, as it does for the ATen formulas)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, name: str, params: tuple[float, ...]) -> torch.Tensor:
        y, d = compiled.elementwise(x, name, list(params), True)
        ctx.save_for_backward(x, d)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, d = ctx.saved_tensors
        return compiled.times(grad, d, x), None, None


def compiled_elementwise(x: torch.Tensor, name: str, params: tuple[float, ...]) -> torch.Tensor:
    """Technique ``name``'s C kernel (of ``_native.ELEMENTWISE``) with ``params`` on ``x`` inside
    a compiled graph, where ``compiled_kernel_serves(x, name)``: the op of ``_native/compiled.py``,
    with the derivative beside the output where autograd records the call. ``name`` and
    ``params`` must be constants to dynamo: a technique derives them in a function under
    ``torch.compiler.assume_constant_result``, from float() of its parameters."""
    if tracks_grad(x):
        return _CompiledKernel.apply(x, name, params)
    return compiled.elementwise(x, name, list(params), False)[0]
