"""The Triton kernels of ``rows.py``, in a module of their own (as ``fused_kernels.py``): one
program per row (norms' forward, both simplex maps) or per band of rows (norms' backward, whose
weight and bias gradients it sums in registers), the row held in registers, so that the
declaration's rules (prescaling, constant rows, infinity limits, NaN) cost no trip to memory.

Each follows its ATen formula in ``impl_torch/norms.py`` or ``impl_torch/simplex.py`` term by
term; the comments say where a GPU's reductions need more care than ATen's (Triton's max and
min drop NaN on a GPU, where numpy's, in the interpreter, keep it: NaN is found by its own test).
"""

import triton
import triton.language as tl

from impl_torch._native.fused_kernels import divide

# Constants a kernel reads must be constexpr (compiled Triton refuses other globals; the
# interpreter would not say). NaN is written in place: Triton checks that a global keeps its
# value between kernels by ==, which NaN never passes.
INF = tl.constexpr(float("inf"))
TINY = tl.constexpr(1.1754943508222875e-38)  # float32's smallest normal


@triton.jit
def _row(ptr, row, n, offsets, inside, other):
    # ``row`` is an int64 (or the interpreter's int): offsets past 2^31 elements stay right.
    return tl.load(ptr + row * n + offsets, mask=inside, other=other)


@triton.jit
def scale_of(amax, big):
    """The prescaling power of two of a group whose largest magnitude is ``amax``:
    2^(floor(log2 amax) - 1) where ``big`` (finite and above 1), else 1, with log2 rounded to
    float32 as the formula's torch.log2 rounds it on the CPU (correctly; XLA's CPU log2 rounds
    about one in twenty of the values within 300 ulps below a power of two the other way, so the
    JAX side's scale is a binade apart there, which moves only rounding, and eps in a constant
    row near the float32 maximum; whether CUDA's log2 rounds as the CPU's was not checked; at
    the float32 maximum all give 128). From the bits, exactly: a GPU's
    log2 and exp2 are approximations. Just below 2^(e + 1), within about ln 2 ulps (of the float32
    values just below e + 1) of 2 in the mantissa (44 ulps below 2^128), the rounded log2 is
    e + 1, not e: the float32 maximum's scale is 2^127, not 2^126. A scale one binade apart would
    change nothing but rounding, were eps not lost: a constant row of the largest values has a
    derivative proportional to 1 / scale."""
    bits = amax.to(tl.int32, bitcast=True)
    e = ((bits >> 23) & 0xFF) - 127  # floor(log2 amax), exactly
    gap = 2.0 - ((bits & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True)  # 2 - mantissa, exact
    # Half an ulp of the float32 values just below e + 1: of the binade of e + 0.5 (the one
    # below e + 1 where e + 1 is a power of two).
    k = (((e.to(tl.float32) + 0.5).to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    half_ulp = ((k - 24 + 127) << 23).to(tl.float32, bitcast=True)
    # log2(2 - gap) = 1 - gap / (2 ln 2) to 1e-5 of the gap: rounds up where gap <= 2 ln 2 half_ulp.
    e = tl.where(gap <= 1.3862943611198906 * half_ulp, e + 1, e)
    return tl.where(big, ((e - 1 + 127) << 23).to(tl.float32, bitcast=True), 1.0)


@triton.jit
def limit_signs(x):
    """A group's limit values where it holds an infinity: sign(x) at the infinities, 0 elsewhere."""
    return tl.where(tl.abs(x) == INF, tl.where(x > 0, 1.0, -1.0), 0.0)


@triton.jit
def _prescale(x, inside):
    """(values, scale, minimum, constant, finite) of norms._prescale for one row; masked lanes
    of ``x`` hold 0."""
    has_nan = tl.sum(tl.where(x != x, 1, 0), axis=0) > 0
    top = tl.max(tl.where(inside, x, -INF), axis=0)
    bottom = tl.min(tl.where(inside, x, INF), axis=0)
    amax = tl.where(has_nan, float("nan"), tl.maximum(top, -bottom))
    finite = tl.abs(amax) < INF  # False for NaN
    scale = scale_of(amax, finite & (amax > 1.0))
    values = tl.where(amax == INF, limit_signs(x), divide(x, scale))
    constant = (top == bottom) & finite
    return tl.where(inside, values, 0.0), scale, tl.math.div_rn(bottom, scale), constant, finite


@triton.jit
def norm_forward(x_ptr, w_ptr, b_ptr, y_ptr, stats_ptr, rows, n, eps, bound, CENTRED: tl.constexpr,
                 WEIGHT: tl.constexpr, BIAS: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """layer_norm (CENTRED) or rms_norm of one row: the prescaled formula (norms._standardize,
    norms._rms_norm_formula), times the weight plus the bias, or clamped to +-bound without a
    weight. Writes the row's _GroupRule (scale, mean, rstd, limit) to stats[:, row]."""
    row = tl.program_id(0).to(tl.int64)
    offsets = tl.arange(0, BLOCK)
    inside = offsets < n
    x = _row(x_ptr, row, n, offsets, inside, 0.0)
    v, scale, minimum, constant, finite = _prescale(x, inside)
    mean = 0.0
    if CENTRED:
        # A constant row's mean is its value, exactly (see norms._standardize).
        mean = tl.where(constant, minimum, tl.math.div_rn(tl.sum(v, axis=0), n * 1.0))
    centred = tl.where(inside, v - mean, 0.0)
    var = tl.math.div_rn(tl.sum(centred * centred, axis=0), n * 1.0)
    root = tl.math.sqrt_rn(var + tl.maximum(tl.math.div_rn(eps, scale * scale), TINY))
    y = divide(centred, root)
    if WEIGHT:
        y = y * tl.load(w_ptr + offsets, mask=inside, other=0.0)
        if BIAS:
            y = y + tl.load(b_ptr + offsets, mask=inside, other=0.0)
    else:
        # Declared bound; the exact value lies inside, this guards rounding (NaN stays NaN).
        y = tl.where(y < -bound, -bound, y)
        y = tl.where(y > bound, bound, y)
    tl.store(y_ptr + row * n + offsets, y, mask=inside)
    # A NaN row is no limit: its derivative is NaN, as its value (norms._prescaled_rule).
    limit = (~finite) & (var == var)
    # Pointer plus row, then plus rows at a time: 2 * rows would be computed in 32 bits.
    stats = stats_ptr + row
    tl.store(stats, scale)
    tl.store(stats + rows, mean)
    tl.store(stats + rows + rows, tl.math.div_rn(1.0, root))
    tl.store(stats + rows + rows + rows, tl.where(limit, 1.0, 0.0))


@triton.jit
def norm_backward(x_ptr, w_ptr, g_ptr, stats_ptr, dx_ptr, dw_ptr, db_ptr, rows, n, band, CENTRED: tl.constexpr,
                  WEIGHT: tl.constexpr, DX: tl.constexpr, DW: tl.constexpr, DB: tl.constexpr,
                  BLOCK: tl.constexpr):  # fmt: skip
    """The derivative of norm_forward for the rows of one band, as norms._CompiledNorm writes it:
    dx = rstd / scale (g' - mean(g') - xhat mean(xhat g')), g' = g weight (no mean(g') term for
    rms_norm), zero in a row that held an infinity; this band's sums of g xhat (the limit values'
    xhat in such a row) and of g into dw[band] and db[band]."""
    program = tl.program_id(0).to(tl.int64)
    offsets = tl.arange(0, BLOCK)
    inside = offsets < n
    w = 1.0
    if WEIGHT:
        w = tl.load(w_ptr + offsets, mask=inside, other=0.0)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    db = tl.zeros([BLOCK], dtype=tl.float32)
    for row in range(program * band, tl.minimum(program * band + band, rows)):
        x = _row(x_ptr, row, n, offsets, inside, 0.0)
        g = _row(g_ptr, row, n, offsets, inside, 0.0)
        stats = stats_ptr + row  # then plus rows at a time, as norm_forward stores them
        scale = tl.load(stats)
        mean = tl.load(stats + rows)
        rstd = tl.load(stats + rows + rows)
        limit = tl.load(stats + rows + rows + rows) != 0.0
        xhat = tl.where(inside, (divide(x, scale) - mean) * rstd, 0.0)
        if DX:
            gw = g * w
            inner = gw - xhat * tl.math.div_rn(tl.sum(xhat * gw, axis=0), n * 1.0)
            if CENTRED:
                inner = inner - tl.math.div_rn(tl.sum(gw, axis=0), n * 1.0)
            dx = tl.where(limit, 0.0, tl.math.div_rn(rstd, scale) * inner)
            tl.store(dx_ptr + row * n + offsets, dx, mask=inside)
        if DW:
            dw += g * tl.where(limit, tl.where(inside, (limit_signs(x) - mean) * rstd, 0.0), xhat)
        if DB:
            db += g
    if DW:
        tl.store(dw_ptr + program * n + offsets, dw, mask=inside)
    if DB:
        tl.store(db_ptr + program * n + offsets, db, mask=inside)


@triton.jit
def _shifted(x):
    """(z, has_nan, finite) of simplex._limit_shift for one row (masked lanes of ``x`` hold
    -inf, and so do those of z unless the row is all -inf): x less its maximum, or its limit's
    (+inf entries at 0 and the rest at -inf where the maximum is +inf, all at 0 where it is
    -inf); NaN everywhere in a NaN row; whether the maximum is finite."""
    has_nan = tl.sum(tl.where(x != x, 1, 0), axis=0) > 0
    top = tl.where(has_nan, float("nan"), tl.max(x, axis=0))
    finite = tl.abs(top) < INF
    limit = tl.where(top == INF, tl.where(x == INF, 0.0, -INF), 0.0)
    z = tl.where(finite, x - tl.where(finite, top, 0.0), limit)
    return tl.where(has_nan, float("nan"), z), has_nan, finite


@triton.jit
def _finiteness(has_nan, finite):
    # 1.0 where the row's maximum is finite, 0.0 where the row took its limit, NaN for a NaN row
    # (whose derivative is NaN, as its value).
    return tl.where(has_nan, float("nan"), tl.where(finite, 1.0, 0.0))


@triton.jit
def simplex_forward(x_ptr, y_ptr, finite_ptr, n, LOG: tl.constexpr, BLOCK: tl.constexpr):
    """softmax (or log_softmax, LOG) of one row shifted by its maximum, or its limit's (see
    _shifted), and the row's _finiteness to finite[row]."""
    row = tl.program_id(0).to(tl.int64)
    offsets = tl.arange(0, BLOCK)
    inside = offsets < n
    z, has_nan, finite = _shifted(_row(x_ptr, row, n, offsets, inside, -INF))
    e = tl.where(inside, tl.exp(z), 0.0)
    total = tl.sum(e, axis=0)
    if LOG:
        # log(sum) as log1p of the sum less the maximum's exp(0) = 1 (rounded at 1, a sum keeps
        # 2^-24 of the rest: 4e-6 of a log near 0.003), by Goldberg's form (u = 1 + rest). Each
        # entry at the maximum adds one, the others their exp; rest >= 0, so log(sum) >= 0 and z
        # <= 0 keep the output at or below 0.
        at_top = tl.sum(tl.where(inside & (z == 0.0), 1.0, 0.0), axis=0)
        rest = tl.sum(tl.where(inside & (z < 0.0), e, 0.0), axis=0) + (at_top - 1.0)
        u = 1.0 + rest
        y = z - tl.where(u == 1.0, rest, tl.log(u) * tl.math.div_rn(rest, u - 1.0))
    else:
        # e / sum(e) with sum(e) >= e: never above 1.
        y = divide(e, total)
    tl.store(y_ptr + row * n + offsets, y, mask=inside)
    tl.store(finite_ptr + row, _finiteness(has_nan, finite))


@triton.jit
def _above(z, t):
    # Michelot's step: (sum of the z above t, less 1) / their count (at least 1).
    above = z > t
    count = tl.sum(tl.where(above, 1, 0), axis=0)
    return tl.math.div_rn(tl.sum(tl.where(above, z, 0.0), axis=0) - 1.0, tl.maximum(count, 1) * 1.0)


@triton.jit
def sparsemax_forward(x_ptr, y_ptr, finite_ptr, n, BLOCK: tl.constexpr):
    """sparsemax of one row (shifted as softmax's, see _shifted): max(z - tau, 0), at most 1,
    with tau by Michelot's iteration as sparsemax.c finds it (read the reasoning there): from
    max(-1, (sum z - 1) / n), t' = (sum of the z > t, less 1) / their count while it rises. The
    row stays in registers for every step, where the CPU's stays in the L1 cache."""
    row = tl.program_id(0).to(tl.int64)
    offsets = tl.arange(0, BLOCK)
    inside = offsets < n
    z, has_nan, finite = _shifted(_row(x_ptr, row, n, offsets, inside, -INF))
    z = tl.where(inside, z, -INF)  # never above a threshold
    # -inf entries (a row that held +inf) make the sum -inf: the bound is then -1.
    t = tl.maximum(tl.math.div_rn(tl.sum(tl.where(inside, z, 0.0), axis=0) - 1.0, n * 1.0), -1.0)
    following = _above(z, t)
    while following > t:  # rises strictly, so it stops (at most n + 1 steps); False for NaN
        t = following
        following = _above(z, t)
    y = z - following
    y = tl.where(y < 0.0, 0.0, y)
    # The largest output is max(z) - tau <= 1 in exact arithmetic; this guards the rounding.
    y = tl.where(y > 1.0, 1.0, y)
    tl.store(y_ptr + row * n + offsets, tl.where(has_nan, float("nan"), y), mask=inside)
    tl.store(finite_ptr + row, _finiteness(has_nan, finite))


@triton.jit
def sparsemax_backward(y_ptr, g_ptr, finite_ptr, dx_ptr, n, BLOCK: tl.constexpr):
    """The derivative of sparsemax_forward from its output, as simplex._Sparsemax's: g less its
    mean over the support (y > 0) on the support, zero elsewhere and in a row whose limit was
    taken, NaN in a NaN row."""
    row = tl.program_id(0).to(tl.int64)
    offsets = tl.arange(0, BLOCK)
    inside = offsets < n
    y = _row(y_ptr, row, n, offsets, inside, 0.0)
    g = _row(g_ptr, row, n, offsets, inside, 0.0)
    finite = tl.load(finite_ptr + row)
    on = y > 0.0
    count = tl.maximum(tl.sum(tl.where(on, 1, 0), axis=0), 1) * 1.0
    dx = tl.where(on, g - tl.math.div_rn(tl.sum(tl.where(on, g, 0.0), axis=0), count), 0.0)
    dx = tl.where(finite == 0.0, 0.0, dx)
    tl.store(dx_ptr + row * n + offsets, tl.where(finite == finite, dx, float("nan")), mask=inside)


@triton.jit
def simplex_backward(y_ptr, g_ptr, finite_ptr, dx_ptr, n, LOG: tl.constexpr, BLOCK: tl.constexpr):
    """The derivative of simplex_forward from its output, as ATen's: y (g - sum(g y)), or
    g - exp(y) sum(g); zero in a row whose limit was taken, whatever its cotangent."""
    row = tl.program_id(0).to(tl.int64)
    offsets = tl.arange(0, BLOCK)
    inside = offsets < n
    g = _row(g_ptr, row, n, offsets, inside, 0.0)
    finite = tl.load(finite_ptr + row)
    if LOG:
        y = _row(y_ptr, row, n, offsets, inside, -INF)
        dx = g - tl.exp(y) * tl.sum(g, axis=0)
    else:
        y = _row(y_ptr, row, n, offsets, inside, 0.0)
        dx = y * (g - tl.sum(g * y, axis=0))
    tl.store(dx_ptr + row * n + offsets, tl.where(finite == 0.0, 0.0, dx), mask=inside)
