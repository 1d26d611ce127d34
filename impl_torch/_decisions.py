"""Every decision of the PyTorch side that depends on the environment rather than the formula.

One small function per question (device, kernel available, gradient tracked, compiled on the
CPU), so the families ask here instead of each inspecting torch's state its own way; whether
dynamo traces the call they ask torch's ``is_compiling`` by name (a wrapper would be one more
guard of every compiled module). Each answer is
about the call at hand; only the C kernel's build is made once per process (``_native.build``).
"""

from __future__ import annotations

import os

import torch
from torch import is_grad_enabled
from torch.autograd import forward_ad
from torch.compiler import is_compiling

from impl_torch import _native
from impl_torch._native import fused, rows
from impl_torch._native.memory import has_memory

# The functions a compiled frame traces call torch's by these names, not through the torch
# module: dynamo guards on each module and attribute it reads, and on the torch module reached
# from a second module's globals with a costlier check (one of those per module, each about as
# costly as a dozen others, in a guard set checked at every call of a compiled module).

# torch.compiler.is_exporting came with torch 2.6; before it, torch.export ran dynamo as
# torch.compile does, and nothing says which.
is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)

# torch.func's own switch: no public function says whether a transform is active. Without it,
# every call counts as transformed (the declared rules always run: right, only slower).
_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: True)

_is_tracing = torch._C._is_tracing  # bound once: plain_eager runs on every eager call

# How many TorchDispatchModes are active: 40 ns a call, so it is asked first, and only then
# whether one is FakeTensorMode or make_fx's proxy mode, whose tensors have no memory and under
# which a branch on data is refused or recorded. Others (FlopCounterMode, selective activation
# checkpointing) compute on real tensors, and the fast paths serve there.
_dispatch_modes = torch._C._len_torch_dispatch_stack
_MEMORYLESS_MODES = (torch._C._TorchDispatchModeKey.FAKE, torch._C._TorchDispatchModeKey.PROXY)


def _memoryless_mode() -> bool:
    return any(torch._C._get_dispatch_mode(key) is not None for key in _MEMORYLESS_MODES)


# The tests' way to run the Triton kernels without a GPU, in Triton's interpreter (both variables
# set; compiled Triton code cannot take CPU memory): eager CPU float32 then takes them instead of
# the C kernels.
TRITON_ON_CPU = os.environ.get("OUTPUT_LIMITS_TRITON_CPU") == "1" and os.environ.get("TRITON_INTERPRET") == "1"

# Elements per block on CPU: a block's temporaries stay in cache, so a formula of several passes
# costs about one trip to memory (see bench/speed_ratios.py for the measured effect).
CPU_BLOCK = 1 << 19

# The tensor types whose memory a kernel may read by address (subclasses may hold none).
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def transforming() -> bool:
    """Whether a torch.func transform (vmap, grad, jvp, jacrev, jacfwd, hessian, functional_call
    under them) or forward-mode AD (torch.autograd.forward_ad) is active. Then the plain op's own
    derivative rule would be ATen's convention, not the declaration's, a Python branch on tensor
    data fails (vmap) and an ``out=`` op has no batching or forward rule."""
    if is_compiling():  # dynamo traces none of this; torch.compile's own AOT autograd takes the rules
        return False
    return _functorch_active() or forward_ad._current_level >= 0


def tracing() -> bool:
    """Whether torch.jit.trace is recording: a Python branch on data would be frozen into the
    trace (wrong for the next input that takes the other side), and writes into buffers the
    formula allocates replay badly; the branch-free, out-of-place forms trace as they run."""
    # torch.jit.is_tracing() less its check for TorchScript, which never runs this code: a
    # third of the cost, on every call of every technique.
    return torch._C._is_tracing()


def plain_eager() -> bool:
    """Whether this call runs plainly eager: no torch.compile, torch.func transform, forward-mode
    AD, torch.jit.trace, FakeTensorMode or proxy mode at work (fake tensors have no memory for
    the kernels and guards to read). Only then may a formula branch on data or write into
    buffers it allocates (see transforming, tracing and may_write_in_place for why each of the
    others forbids it)."""
    # One expression rather than the calls: it runs on every eager call, and on this project's
    # CPU machine each Python call costs 0.1-0.2 us against a 10 us clamp.
    return not (
        is_compiling()
        or _is_tracing()
        or _functorch_active()
        or forward_ad._current_level >= 0
        or (_dispatch_modes() and _memoryless_mode())
    )


def tracks_grad(x: torch.Tensor, *more: torch.Tensor | None) -> bool:
    """Whether a derivative of this call may be asked for: autograd records it for ``x`` (or for
    one of ``more``, a norm's weights, which may want gradients where its input does not), or a
    transform or forward-mode AD is active, or torch.jit.trace records the call: the trace is
    replayed on inputs that may need a gradient, and the plain op it would record carries ATen's
    rule. Whatever the grad mode: torch.jit.trace's own check traces again under another one,
    and two different graphs fail it. Only then does a custom Function, which adds the declared
    derivative rules, run; without it the plain fused op does."""
    # ``more`` read only when given: this runs on every call of the elementwise techniques.
    grad = is_grad_enabled()
    if grad and (x.requires_grad or (bool(more) and any(t is not None and t.requires_grad for t in more))):
        return True
    # transforming() written out, is_compiling asked once: this runs on every call without grad.
    # Nor is _is_tracing asked while compiling: dynamo breaks the graph at a non-tensor result.
    if is_compiling():
        return False
    return _functorch_active() or forward_ad._current_level >= 0 or _is_tracing()


def compiled_cpu(x: torch.Tensor) -> bool:
    """Whether torch.compile traces this call on the CPU. A data-dependent choice is then
    ``torch.cond``: dynamo captures it without a graph break and inductor compiles a branch that
    runs one side only. On an accelerator the branch reads its predicate on the host, a
    synchronization per call, so the branch-free formula runs there."""
    return is_compiling() and x.is_cpu


def eager_cpu(x: torch.Tensor) -> bool:
    """Whether a data-dependent fast path pays off: eager mode on CPU, where torch.where costs as
    much as six sigmoids. Under torch.compile or on an accelerator the branch-free form is fast
    as is (and a host-side branch would break the graph or synchronize the device); under a
    torch.func transform a branch on data fails."""
    return x.is_cpu and plain_eager()  # is_cpu: see kernel_serves


def block_size(x: torch.Tensor) -> int:
    """Elements per block of a blocked formula: one block when compiling (inductor fuses anyway)
    or on an accelerator (launches cost more than cache misses)."""
    return CPU_BLOCK if eager_cpu(x) else max(x.numel(), 1)


def may_write_in_place() -> bool:
    """Whether a formula may write into buffers it allocates (``out=``, in place): only when
    plainly eager. Under torch.func transforms or forward-mode AD ``out=`` ops have no batching
    or forward rule; a trace replays such writes badly; and under torch.compile torch 2.11 routes
    the gradient of such an output to the wrong slot and returns dx = 0 without an error
    (pytorch#180642; this repository's H100 run caught it: bench/results/cuda-h100-2026-11-26 as
    of commit 3f95132), while inductor fuses the out-of-place form into one kernel, so writing in
    place gains nothing. The same release does the same to an output that aliases an
    intermediate: see ``_common.as_dtype``."""
    return plain_eager()


def kernel_serves(x: torch.Tensor) -> bool:
    """Whether the C kernels (``_native``) compute sparsemax's threshold and, through
    elementwise_serves (which takes this body written out; tests/test_fused.py checks that the two
    agree on the CPU), smooth_clamp, scaled_sigmoid, scaled_tanh, soft_clip, leaky_clamp and
    softsign for ``x``: eager, CPU, float32, where they built. ATen has no fused op for those
    formulas, and its passes cost up to several times the kernel's one (smooth_clamp: about 2.7
    sigmoids against 1.1; README, speed targets); under torch.compile inductor fuses (except where
    compiled_kernel_serves says otherwise).

    Only a plain tensor with memory behind it: under torch.func transforms and vmap tensors are
    wrappers without storage, fake tensors (torch.export, FakeTensorMode) have a null one, and
    torch.jit.trace would record an empty output, since it sees no op the kernel performs."""
    # x.is_cpu, not x.device.type: that builds a device object (0.4 us, a twentieth of a
    # 2^16-element clamp).
    if x.dtype is not torch.float32 or not x.is_cpu or type(x) not in _PLAIN:
        return False
    return plain_eager() and _native.available() and has_memory(x)


# Once per process, and a constant to dynamo: traced, the build's ctypes would break the graph.
# A function of its own: assume_constant_result marks the function it is given.
@torch.compiler.assume_constant_result
def _built() -> bool:
    return _native.available()


# Elements from which a compiled graph calls a C kernel (the op of _native/compiled.py) rather
# than inductor's code: the op has a fixed cost per call (Python, two allocations), which
# smooth_clamp's kernel saves back at about 2^17 elements (a tie there, a clear gain at 2^18 and
# above). Its forward in compiled sigmoids, through the op against inductor's code: 1.42-1.64
# and 1.28-1.35 at 2^16, 1.38-1.41 and 1.41 at 2^17, 1.27 and 1.43-1.47 at 2^18, 1.10-1.15 and
# 1.5-1.6 at 2^22 (one process each).
COMPILED_KERNEL_MIN = 1 << 17

# Which techniques' compiled graphs call their C kernel's op, and from how many elements, without
# autograd ("forward") and with it ("forward+backward"): where it measured faster than inductor's
# code for the formula (the comment at each call says by how much), since the op gives up fusion
# with the ops around it. tests/test_compile.py checks that these and no others do.
COMPILED_KERNELS: dict[str, dict[str, int]] = {
    "smooth_clamp": {"forward": COMPILED_KERNEL_MIN, "forward+backward": COMPILED_KERNEL_MIN},
    # The forward through the op against the formula in compiled sigmoids: 1.20-1.24 against
    # 1.04-1.07 at 2^17, a tie at 2^18 (1.07-1.08 and 1.06-1.07), 1.02-1.04 against 1.06 at 2^19.
    "scaled_sigmoid": {"forward": 1 << 19, "forward+backward": COMPILED_KERNEL_MIN},
    "scaled_tanh": {"forward": 1 << 19, "forward+backward": COMPILED_KERNEL_MIN},
    "soft_clip": {"forward": COMPILED_KERNEL_MIN, "forward+backward": COMPILED_KERNEL_MIN},
    "leaky_clamp": {"forward+backward": COMPILED_KERNEL_MIN},
}


def compiled_kernel_serves(x: torch.Tensor, name: str) -> bool:
    """Whether technique ``name``'s C kernel runs inside a torch.compile'd graph, as the op of
    ``_native/compiled.py``: from the elements COMPILED_KERNELS names for it with autograd or
    without, compiling (not exporting: an exported program keeps to ATen ops), CPU, float32, no
    torch.func transform or forward-mode AD inside the compiled function (dynamo then
    differentiates a custom Function's forward as written, and the op has no derivative rule:
    compiled vmap(grad(...)) of smooth_clamp gave a wrong gradient, and forward_ad no tangent,
    without an error), where the kernels built."""
    if x.dtype is not torch.float32:
        return False
    least = COMPILED_KERNELS.get(name, {}).get("forward+backward" if tracks_grad(x) else "forward")
    # Allowed first: exporting with a dynamic dimension, the size test would be a guard on a
    # symbolic size, which torch.export refuses (an AssertionError from its symbolic shapes).
    return least is not None and _extern_op_allowed(x) and x.numel() >= least and _built()


# Elements from which a compiled graph without autograd mends a norm's rejected rows after its
# fast output (the op of _native/mend.py) rather than choosing by torch.cond before it. The saved
# pass over the input pays only once the input no longer stays in cache between two passes;
# below, the op's fixed cost (about 20 us: Python, rstd from the sums, the guard's C call) evens
# it out. rms_norm forward over compiled nn.RMSNorm, float32, mend / torch.cond, in one process:
# 1.99-2.10 / 2.03-2.12 at 2^16, 1.51-1.64 / 1.61-1.68 at 2^18, 1.09-1.14 / 1.19-1.30 at 2^20;
# at 2^22, alternating processes, 1.13-1.23 / 1.49-1.94 (a noisy hour: both far above 1 at 2^16).
COMPILED_MEND_MIN = 1 << 20


def compiled_mend_serves(x: torch.Tensor) -> bool:
    """Whether a compiled graph computes a norm's fast output first and mends the rows its guard
    rejects in place (``_native/mend.py``): compiling (not exporting), CPU, at least COMPILED_MEND_MIN
    elements, no torch.func transform or forward-mode AD (the op has no batching or derivative
    rule). The caller asks only where no derivative is recorded either."""
    return _extern_op_allowed(x) and x.numel() >= COMPILED_MEND_MIN  # allowed first: as above


def _extern_op_allowed(x: torch.Tensor) -> bool:
    """Whether a compiled graph may call one of this project's ops, opaque to inductor, on ``x``:
    compiling but not exporting (an exported program keeps to ATen ops), on the CPU, and no
    torch.func transform or forward-mode AD inside the compiled function (dynamo then
    differentiates or batches the ops as written, and ours have no rules for that)."""
    return (
        is_compiling() and not is_exporting() and x.is_cpu and not _functorch_active() and forward_ad._current_level < 0
    )


def triton_serves(x: torch.Tensor) -> bool:
    """Whether the Triton kernels (``_native/fused.py``) compute the elementwise composites of
    kernel_serves for ``x``: eager, CUDA, float32, where Triton is installed. ATen takes two to
    ten launches for those formulas, a trip to memory each; under torch.compile inductor fuses.
    A plain tensor only, as for kernel_serves."""
    if x.dtype is not torch.float32 or type(x) not in _PLAIN:
        return False
    if not (x.is_cuda or (TRITON_ON_CPU and x.is_cpu)):
        return False
    return plain_eager() and fused.available() and has_memory(x)


def norm_kernels_take(x: torch.Tensor, params: tuple[torch.Tensor | None, ...], features: int | None = None) -> bool:
    """Whether the Triton kernels of the norms and simplex maps (``_native/rows.py``,
    ``channels.py``) may take ``x`` with weights ``params``: where triton_serves, a non-empty
    ``x`` of at least one axis, and weights that are plain float32 tensors beside it of shape
    (``features``,), the last axis' length unless given; any other shape raises from the
    formula, which the kernels would read past. On CUDA the formula they replace takes a dozen
    launches, and the CPU's guard (ATen's op, then a look at its statistics) would synchronize
    the device at every call. What each family's kernels take beyond this, rows_serve and
    ``channels.serves`` say."""
    if x.is_cpu and not TRITON_ON_CPU:  # first: eager CPU asks at every call of a norm
        return False
    if not triton_serves(x) or x.ndim == 0 or x.numel() == 0:
        return False
    shape = (x.shape[-1] if features is None else features,)
    # A loop, not all() over a generator: 1 us less a call, of the host time that a GPU call
    # of a norm waits for (bench/results/cuda-h200-2026-12-04).
    for p in params:
        if p is not None and not (
            p.dtype is torch.float32 and type(p) in _PLAIN and p.device == x.device and p.shape == shape
        ):
            return False
    return True


def rows_serve(x: torch.Tensor, *params: torch.Tensor | None) -> bool:
    """Whether the row kernels (``_native/rows.py``) compute a norm or a simplex map of ``x``
    over its last axis, with weights ``params``: where norm_kernels_take, rows of at most
    ``rows.MAX_ROW`` elements, at most 2^31 - 1 of them (a launch grid's limit)."""
    return norm_kernels_take(x, params) and x.shape[-1] <= rows.MAX_ROW and x.numel() // x.shape[-1] < 1 << 31


def elementwise_serves(x: torch.Tensor) -> bool:
    """Whether a one-pass kernel computes an elementwise composite for ``x``: the C kernels on
    the CPU (kernel_serves' test), the Triton kernels on CUDA (triton_serves)."""
    # kernel_serves written out rather than called: one Python call less on every eager call of
    # six techniques, where at 2^16 elements, with input and output filling the CPU's cache,
    # each call costs several times what a loop of calls shows. The type first: modules.Limit
    # asks this of any input, before the input check. plain_eager before anything dynamo cannot
    # trace: a frame it compiles alone must come out False here (_common.native_elementwise).
    if type(x) not in _PLAIN or x.dtype is not torch.float32:
        return False
    if x.is_cpu and not TRITON_ON_CPU:
        return plain_eager() and _native.available() and has_memory(x)
    return triton_serves(x)


def runs_triton(x: torch.Tensor) -> bool:
    """For a tensor that elementwise_serves: whether the Triton kernels take it (else the C ones)."""
    return not x.is_cpu or TRITON_ON_CPU
