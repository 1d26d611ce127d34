"""The Triton kernels of ``channels.py``: batch_norm in training mode over an (N, C, L) input read
as M = N L rows of C channels, each program one band of rows for one block of channels (tiles
contiguous along the channels where L = 1), per-band partial results combined by the next kernel.

Forward: ``statistics`` (maximum, minimum, NaN and infinity counts, sums), ``finish`` (each
channel's scale and mean from those), ``spread`` (sums of squares about the mean), ``normalize``
(the output, the channels' rule for the backward and the new running statistics). Backward:
``gradient_sums``, then ``gradient``. Each follows ``norms._batch_norm_training`` and
``norms._CompiledNorm`` term by term: prescaling by a power of two (``row_kernels.scale_of``), a
constant channel's exact mean, the limits of a channel holding an infinity, NaN.
"""

import triton
import triton.language as tl

from impl_torch._native.fused_kernels import divide
from impl_torch._native.row_kernels import limit_signs, scale_of

INF = tl.constexpr(float("inf"))
TINY = tl.constexpr(1.1754943508222875e-38)  # float32's smallest normal
# ``statistics`` also sums x * 2^-64 (exact, bar underflow), for a channel whose plain sum
# overflows: its largest values exceed 2^100, so 2^64 / scale is an exact power of two.
DOWN = tl.constexpr(2.0**-64)
UP = tl.constexpr(2.0**64)


@triton.jit
def _offsets(first, m, c, inner, channels, BLOCK_R: tl.constexpr):
    """Where rows [first, first + BLOCK_R) of ``channels`` lie in an (n, c, inner) array read as
    m = n * inner rows of c channels (row r: n = r // inner, position r % inner), and which of
    them exist. Triton specializes inner == 1 (2-D inputs): plain row-major tiles."""
    r = first + tl.arange(0, BLOCK_R)
    inside = (r[:, None] < m) & (channels[None, :] < c)
    rows = ((r // inner).to(tl.int64)[:, None] * c + channels[None, :]) * inner
    return rows + (r % inner)[:, None], inside


@triton.jit
def _tile(ptr, first, m, c, inner, channels, BLOCK_R: tl.constexpr, other):
    """The tile of rows [first, first + BLOCK_R) and ``channels`` (see _offsets); its mask."""
    offsets, inside = _offsets(first, m, c, inner, channels, BLOCK_R)
    return tl.load(ptr + offsets, mask=inside, other=other), inside


@triton.jit
def statistics(x_ptr, part_ptr, m, c, inner, bands, band, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per channel over one band of rows: maximum and minimum (of the non-NaN values), counts of
    NaN, +inf and -inf, the sum and the sum of x * 2^-64, to part[k, band, channel], k in that
    order."""
    channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    index = tl.program_id(1).to(tl.int64)
    top = tl.full([BLOCK_C], -INF, tl.float32)
    bottom = tl.full([BLOCK_C], INF, tl.float32)
    nans = tl.zeros([BLOCK_C], tl.float32)
    above = tl.zeros([BLOCK_C], tl.float32)
    below = tl.zeros([BLOCK_C], tl.float32)
    total = tl.zeros([BLOCK_C], tl.float32)
    small = tl.zeros([BLOCK_C], tl.float32)
    for first in range(index * band, tl.minimum(index * band + band, m), BLOCK_R):
        x, inside = _tile(x_ptr, first, m, c, inner, channels, BLOCK_R, 0.0)
        # NaN counted apart: a GPU's max and min drop it, where the interpreter's keep it.
        number = inside & (x == x)
        top = tl.maximum(top, tl.max(tl.where(number, x, -INF), axis=0))
        bottom = tl.minimum(bottom, tl.min(tl.where(number, x, INF), axis=0))
        nans += tl.sum(tl.where(x != x, 1.0, 0.0), axis=0)
        above += tl.sum(tl.where(x == INF, 1.0, 0.0), axis=0)
        below += tl.sum(tl.where(x == -INF, 1.0, 0.0), axis=0)
        total += tl.sum(x, axis=0)
        small += tl.sum(x * DOWN, axis=0)
    out = part_ptr + index * c + channels
    keep = channels < c
    stride = bands * c
    tl.store(out, top, mask=keep)
    tl.store(out + stride, bottom, mask=keep)
    tl.store(out + 2 * stride, nans, mask=keep)
    tl.store(out + 3 * stride, above, mask=keep)
    tl.store(out + 4 * stride, below, mask=keep)
    tl.store(out + 5 * stride, total, mask=keep)
    tl.store(out + 6 * stride, small, mask=keep)


@triton.jit
def _combined(part_ptr, k, bands, c, channels, how: tl.constexpr):
    """part[k, :, channels] combined over the bands, CHUNK at a time: "max", "min" or "sum"."""
    CHUNK: tl.constexpr = 16
    if how == "max":
        out = tl.full([channels.shape[0]], -INF, tl.float32)
    elif how == "min":
        out = tl.full([channels.shape[0]], INF, tl.float32)
    else:
        out = tl.zeros([channels.shape[0]], tl.float32)
    for first in range(0, bands, CHUNK):
        b = first + tl.arange(0, CHUNK)
        inside = (b[:, None] < bands) & (channels[None, :] < c)
        where = part_ptr + (k * bands + b[:, None]).to(tl.int64) * c + channels[None, :]
        if how == "max":
            out = tl.maximum(out, tl.max(tl.load(where, mask=inside, other=-INF), axis=0))
        elif how == "min":
            out = tl.minimum(out, tl.min(tl.load(where, mask=inside, other=INF), axis=0))
        else:
            out += tl.sum(tl.load(where, mask=inside, other=0.0), axis=0)
    return out


@triton.jit
def _channel(part_ptr, bands, m, c, channels):
    """(scale, mean, limit values wanted, finite) per channel from ``statistics``' parts, as
    norms._prescale and norms._standardize make them: scale the power of two that brings the
    largest magnitude below 4; the mean of x / scale, or of the limit values (sign(x) at the
    infinities, 0 elsewhere) in a channel holding an infinity, or the minimum in a constant
    channel, NaN in a NaN channel."""
    top = _combined(part_ptr, 0, bands, c, channels, "max")
    bottom = _combined(part_ptr, 1, bands, c, channels, "min")
    has_nan = _combined(part_ptr, 2, bands, c, channels, "sum") > 0.0
    above = _combined(part_ptr, 3, bands, c, channels, "sum")
    below = _combined(part_ptr, 4, bands, c, channels, "sum")
    total = _combined(part_ptr, 5, bands, c, channels, "sum")
    small = _combined(part_ptr, 6, bands, c, channels, "sum")
    amax = tl.where(has_nan, float("nan"), tl.maximum(top, -bottom))
    finite = tl.abs(amax) < INF
    scale = scale_of(amax, finite & (amax > 1.0))
    count = m * 1.0
    plain = tl.where(tl.abs(total) < INF, tl.math.div_rn(total, scale), small * tl.math.div_rn(UP, scale))
    mean = tl.where(amax == INF, tl.math.div_rn(above - below, count), tl.math.div_rn(plain, count))
    constant = (top == bottom) & finite
    mean = tl.where(constant, tl.math.div_rn(bottom, scale), mean)
    return scale, tl.where(has_nan, float("nan"), mean), amax == INF, finite


@triton.jit
def finish(part_ptr, channel_ptr, m, c, bands, BLOCK_C: tl.constexpr):
    """Per channel, from ``statistics``' parts: scale, mean, whether the channel holds an
    infinity and whether it is finite (see _channel), to channel[4, c], once: read from every
    program of the next kernels instead, the parts would cost more traffic than the input."""
    channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    keep = channels < c
    scale, mean, limits, finite = _channel(part_ptr, bands, m, c, channels)
    tl.store(channel_ptr + channels, scale, mask=keep)
    tl.store(channel_ptr + c + channels, mean, mask=keep)
    tl.store(channel_ptr + 2 * c + channels, tl.where(limits, 1.0, 0.0), mask=keep)
    tl.store(channel_ptr + 3 * c + channels, tl.where(finite, 1.0, 0.0), mask=keep)


@triton.jit
def _finished(channel_ptr, c, channels):
    """(scale, mean, limits, finite) per channel as ``finish`` wrote them."""
    keep = channels < c
    scale = tl.load(channel_ptr + channels, mask=keep, other=1.0)
    mean = tl.load(channel_ptr + c + channels, mask=keep, other=0.0)
    limits = tl.load(channel_ptr + 2 * c + channels, mask=keep, other=0.0) != 0.0
    finite = tl.load(channel_ptr + 3 * c + channels, mask=keep, other=1.0) != 0.0
    return scale, mean, limits, finite


@triton.jit
def _values(x, scale, limits):
    # x / scale, or a limit channel's values.
    return tl.where(limits[None, :], limit_signs(x), divide(x, scale[None, :]))


@triton.jit
def spread(x_ptr, channel_ptr, square_ptr, m, c, inner, bands, band, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per channel over one band of rows: the sum of (values - mean)^2 to square[band, channel]."""
    channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    index = tl.program_id(1).to(tl.int64)
    scale, mean, limits, _ = _finished(channel_ptr, c, channels)
    squares = tl.zeros([BLOCK_C], tl.float32)
    for first in range(index * band, tl.minimum(index * band + band, m), BLOCK_R):
        x, inside = _tile(x_ptr, first, m, c, inner, channels, BLOCK_R, 0.0)
        centred = tl.where(inside, _values(x, scale, limits) - mean[None, :], 0.0)
        squares += tl.sum(centred * centred, axis=0)
    tl.store(square_ptr + index * c + channels, squares, mask=channels < c)


@triton.jit
def normalize(x_ptr, w_ptr, b_ptr, y_ptr, channel_ptr, square_ptr, rule_ptr, mean_ptr, var_ptr, new_ptr, m, c, inner,
              bands, band, eps, keep_old, take_new, unbias, BLOCK_R: tl.constexpr,
              BLOCK_C: tl.constexpr):  # fmt: skip
    """bias + (values - mean) / sqrt(var + eps / scale^2) * weight over one band of rows. The
    first band's programs also write the channels' rule for the backward (scale, mean, rstd,
    limit: norms._prescaled_rule) to rule[4, c], and the new running statistics to new[2, c]
    from the old ones (``mean``, ``var``): keep_old * old + take_new * new, with the batch's
    mean and unbiased variance (``unbias`` = m / (m - 1)), non-finite for a channel holding an
    infinity (norms._statistics)."""
    channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    index = tl.program_id(1).to(tl.int64)
    keep = channels < c
    scale, mean, limits, finite = _finished(channel_ptr, c, channels)
    var = tl.math.div_rn(_combined(square_ptr, 0, bands, c, channels, "sum"), m * 1.0)
    root = tl.math.sqrt_rn(var + tl.maximum(tl.math.div_rn(eps, scale * scale), TINY))
    w = tl.load(w_ptr + channels, mask=keep, other=0.0)
    b = tl.load(b_ptr + channels, mask=keep, other=0.0)
    for first in range(index * band, tl.minimum(index * band + band, m), BLOCK_R):
        x, inside = _tile(x_ptr, first, m, c, inner, channels, BLOCK_R, 0.0)
        xhat = divide(_values(x, scale, limits) - mean[None, :], root[None, :])
        offsets, _ = _offsets(first, m, c, inner, channels, BLOCK_R)
        tl.store(y_ptr + offsets, b[None, :] + xhat * w[None, :], mask=inside)
    if index == 0:
        limit = (~finite) & (var == var)  # a NaN channel is no limit (norms._prescaled_rule)
        tl.store(rule_ptr + channels, scale, mask=keep)
        tl.store(rule_ptr + c + channels, mean, mask=keep)
        tl.store(rule_ptr + 2 * c + channels, tl.math.div_rn(1.0, root), mask=keep)
        tl.store(rule_ptr + 3 * c + channels, tl.where(limit, 1.0, 0.0), mask=keep)
        raw_mean = mean * tl.where(finite, scale, INF)
        variance_scale = tl.where(finite, scale, float("nan"))
        raw_var = (var * variance_scale) * variance_scale
        old_mean = tl.load(mean_ptr + channels, mask=keep, other=0.0)
        old_var = tl.load(var_ptr + channels, mask=keep, other=0.0)
        tl.store(new_ptr + channels, keep_old * old_mean + take_new * raw_mean, mask=keep)
        tl.store(new_ptr + c + channels, keep_old * old_var + take_new * (raw_var * unbias), mask=keep)


@triton.jit
def _xhat(x, rule_ptr, c, channels, keep):
    """(xhat, scale, rstd, limit) of the forward from its rule: (x / scale - mean) rstd, or in a
    channel that held an infinity its limit values' (sign(x) at the infinities, 0 elsewhere)."""
    scale = tl.load(rule_ptr + channels, mask=keep, other=1.0)
    mean = tl.load(rule_ptr + c + channels, mask=keep, other=0.0)
    rstd = tl.load(rule_ptr + 2 * c + channels, mask=keep, other=0.0)
    limit = tl.load(rule_ptr + 3 * c + channels, mask=keep, other=0.0) != 0.0
    xhat = (_values(x, scale, limit) - mean[None, :]) * rstd[None, :]
    return xhat, scale, rstd, limit


@triton.jit
def gradient_sums(x_ptr, g_ptr, rule_ptr, part_ptr, m, c, inner, bands, band, BLOCK_R: tl.constexpr,
                  BLOCK_C: tl.constexpr):  # fmt: skip
    """Per channel over one band of rows: sum(g) and sum(g xhat) to part[0 and 1, band, channel]."""
    channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    index = tl.program_id(1).to(tl.int64)
    keep = channels < c
    total = tl.zeros([BLOCK_C], tl.float32)
    product = tl.zeros([BLOCK_C], tl.float32)
    for first in range(index * band, tl.minimum(index * band + band, m), BLOCK_R):
        x, inside = _tile(x_ptr, first, m, c, inner, channels, BLOCK_R, 0.0)
        g, _ = _tile(g_ptr, first, m, c, inner, channels, BLOCK_R, 0.0)
        xhat, _, _, _ = _xhat(x, rule_ptr, c, channels, keep)
        total += tl.sum(g, axis=0)
        product += tl.sum(tl.where(inside, g * xhat, 0.0), axis=0)
    tl.store(part_ptr + index * c + channels, total, mask=keep)
    tl.store(part_ptr + (bands + index) * c + channels, product, mask=keep)


@triton.jit
def gradient(x_ptr, g_ptr, w_ptr, rule_ptr, part_ptr, dx_ptr, dw_ptr, db_ptr, m, c, inner, bands, band,
             BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    """dx = rstd / scale (g w - mean(g w) - xhat mean(xhat g w)) over one band of rows, zero in a
    channel that held an infinity; the first band's programs write dweight = sum(g xhat) and
    dbias = sum(g)."""
    channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    index = tl.program_id(1).to(tl.int64)
    keep = channels < c
    count = m * 1.0
    total = _combined(part_ptr, 0, bands, c, channels, "sum")
    product = _combined(part_ptr, 1, bands, c, channels, "sum")
    w = tl.load(w_ptr + channels, mask=keep, other=0.0)
    mean_g = tl.math.div_rn(total * w, count)
    mean_gx = tl.math.div_rn(product * w, count)
    for first in range(index * band, tl.minimum(index * band + band, m), BLOCK_R):
        x, inside = _tile(x_ptr, first, m, c, inner, channels, BLOCK_R, 0.0)
        g, _ = _tile(g_ptr, first, m, c, inner, channels, BLOCK_R, 0.0)
        xhat, scale, rstd, limit = _xhat(x, rule_ptr, c, channels, keep)
        centred = g * w[None, :] - xhat * mean_gx[None, :] - mean_g[None, :]
        dx = tl.where(limit[None, :], 0.0, tl.math.div_rn(rstd, scale)[None, :] * centred)
        offsets, _ = _offsets(first, m, c, inner, channels, BLOCK_R)
        tl.store(dx_ptr + offsets, dx, mask=inside)
    if index == 0:
        tl.store(dw_ptr + channels, product, mask=keep)
        tl.store(db_ptr + channels, total, mask=keep)
