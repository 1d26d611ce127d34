"""The Triton kernel of ``fused.py``, in a module of its own: Triton finds a kernel's helpers
among its module's globals, and importing Triton (about a second) waits for the first call."""

import triton
import triton.language as tl


@triton.jit
def clamp(v, lo, hi):
    # min(max(v, lo), hi), torch.clamp's order; NaN stays NaN (its comparisons are false).
    v = tl.where(v < lo, lo, v)
    return tl.where(v > hi, hi, v)


@triton.jit
def divide(a, b):
    """a / b correctly rounded, a zero dividend over a positive divisor kept out of the division
    (its quotient is that zero; any other b divides as given: 0 / NaN stays NaN). On NVIDIA
    GPUs div.rn takes a slow path (a subroutine) for operands of exponent field 0, zeros among
    them, and a warp waits for every lane that takes it. Zeros are common in what these kernels
    divide: masked lanes, smooth_clamp's exact middle, exp underflowed to 0, a norm's input
    after a ReLU."""
    keep = tl.where(a == 0.0, b > 0.0, False)  # not &: b may be a scalar, where the interpreter refuses it
    return tl.where(keep, a, tl.math.div_rn(tl.where(keep, 1.0, a), b))


@triton.jit
def sigmoid_from(t, q):
    # sigmoid(t) from q = exp(-|t|), on the side where it does not cancel (vmath.h).
    return tl.math.div_rn(tl.where(t >= 0.0, 1.0, q), 1.0 + q)


@triton.jit
def log1p_unit(q):
    # log(1 + q) for q in [0, 1], the rounding of 1 + q corrected (Goldberg's form). Where u
    # rounds to 1 the quotient is not used: divided by 1 there, not 0 (div.rn's slow path).
    u = 1.0 + q
    return tl.where(u == 1.0, q, tl.log(u) * divide(q, tl.where(u == 1.0, 1.0, u - 1.0)))


@triton.jit
def softplus_c(v, c):
    u = tl.math.div_rn(v, c)
    q = tl.exp(-tl.abs(u))
    return c * (tl.where(u > 0.0, u, 0.0) + log1p_unit(q)), q, u


@triton.jit
def elementwise(x_ptr, y_ptr, d_ptr, n, p0, p1, p2, p3, p4, p5, KIND: tl.constexpr, DERIVATIVE: tl.constexpr,
                BLOCK: tl.constexpr):  # fmt: skip
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    x = tl.load(x_ptr + offsets, mask=inside, other=0.0)
    # KIND: the index of the technique in _native.ELEMENTWISE.
    if KIND == 0 or KIND == 1:  # smooth_clamp(_open): p = (lo, hi, b_lo, b_hi, r, k)
        m = clamp(x, p2, p3)
        e = x - m
        q = tl.exp(-(tl.abs(e) * p5))
        tail = divide(p4 * (1.0 - q), 1.0 + q)  # 0 on the linear middle: see divide
        u = 1.0 + tail * (p5 * 0.5)  # 1 + t, t = (1 - q) / (1 + q): see the C kernel
        d = tl.where(e == e, q * u * u, e)
        y = m + tl.where(e < 0.0, -tail, tail)
        if KIND == 0:
            y = clamp(y, p0, p1)
    elif KIND == 2:  # scaled_sigmoid: p = (lo, hi, k, hi - lo)
        t = x * p2
        s = sigmoid_from(t, tl.exp(-tl.abs(t)))
        d = tl.where(t == t, p3 * (1.0 - s) * s * p2, t)
        y = tl.where(t == t, clamp(s * p3 + p0, p0, p1), t)
    elif KIND == 3:  # soft_clip: p = (lo, hi, c, shrink, hi - lo)
        inner, q1, u1 = softplus_c(x - p0, p2)
        outer, q2, u2 = softplus_c(p4 - inner, p2)
        d = tl.where(x == x, p3 * sigmoid_from(u2, q2) * sigmoid_from(u1, q1), x)
        y = tl.where(x == x, clamp(p1 - outer * p3, p0, p1), x)
    elif KIND == 4:  # leaky_clamp: p = (lo, hi, slope)
        m = clamp(x, p0, p1)
        d = tl.where(x != x, x, tl.where((x <= p0) | (x >= p1), p2, 1.0))  # NaN at NaN, as declared
        y = m + p2 * (x - m)
    else:  # softsign
        xf = clamp(x, -3.4028234663852886e38, 3.4028234663852886e38)
        t = tl.abs(xf) + 1.0
        d = tl.math.div_rn(tl.math.div_rn(1.0, t), t)
        y = tl.math.div_rn(xf, t)
    tl.store(y_ptr + offsets, y, mask=inside)
    if DERIVATIVE:
        tl.store(d_ptr + offsets, d, mask=inside)
