"""The Triton kernels of ``channels.py``: batch_norm in training mode over an (N, C, L) input read
as M = N L rows of C channels, each program one band of rows for one block of channels (tiles
contiguous along the channels where L = 1), per-band partial results combined by the next kernel.

Forward: ``statistics`` (maximum, minimum, NaN and infinity counts, and each band's mean and
squared deviations, one read of the input), ``finish`` (each channel's scale, mean and variance
from those), ``normalize`` (the output, the channels' rule for the backward and the new running
statistics): two reads of the input and one write, as ATen's. Backward: ``gradient_sums``, then
``gradient``. Each follows ``norms._batch_norm_training`` and ``norms._CompiledNorm``: prescaling
by a power of two (``row_kernels.scale_of``), a constant channel's exact mean and zero variance,
the limits of a channel holding an infinity, NaN.
"""

import triton
import triton.language as tl

from impl_torch._native.row_kernels import scale_of

INF = tl.constexpr(float("inf"))
TINY = tl.constexpr(1.1754943508222875e-38)  # float32's smallest normal


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
    NaN, +inf and -inf, and the band's scale (scale_of its largest magnitude so far), mean and
    sum of squared deviations of x / scale, to part[k, band, channel], k in that order.

    The mean and the squares in one pass (ATen's batch norm takes one too): each tile's two-pass
    statistics in registers, on x / scale with the scale of everything read so far, combined
    with the band's by Chan's rule (a mean moved by delta * n_b / n, the squares by delta^2 n_a
    n_b / n), the band's first brought to a larger scale where the tile's is (exact: powers of
    two). A channel's statistics come out those of the prescaled formula's values to rounding,
    without its second pass over the input."""
    channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    index = tl.program_id(1).to(tl.int64)
    top = tl.full([BLOCK_C], -INF, tl.float32)
    bottom = tl.full([BLOCK_C], INF, tl.float32)
    nans = tl.zeros([BLOCK_C], tl.float32)
    above = tl.zeros([BLOCK_C], tl.float32)
    below = tl.zeros([BLOCK_C], tl.float32)
    scale = tl.full([BLOCK_C], 1.0, tl.float32)
    mean = tl.zeros([BLOCK_C], tl.float32)
    squares = tl.zeros([BLOCK_C], tl.float32)
    count = 0.0
    end = tl.minimum(index * band + band, m)
    for first in range(index * band, end, BLOCK_R):
        x, inside = _tile(x_ptr, first, m, c, inner, channels, BLOCK_R, 0.0)
        # NaN counted apart: a GPU's max and min drop it, where the interpreter's keep it.
        number = inside & (x == x)
        tile_top = tl.max(tl.where(number, x, -INF), axis=0)
        tile_bottom = tl.min(tl.where(number, x, INF), axis=0)
        top = tl.maximum(top, tile_top)
        bottom = tl.minimum(bottom, tile_bottom)
        nans += tl.sum(tl.where(x != x, 1.0, 0.0), axis=0)
        above += tl.sum(tl.where(x == INF, 1.0, 0.0), axis=0)
        below += tl.sum(tl.where(x == -INF, 1.0, 0.0), axis=0)
        here = tl.minimum(end - first, BLOCK_R) * 1.0
        amax = tl.maximum(tile_top, -tile_bottom)
        larger = tl.maximum(scale, scale_of(amax, (amax < INF) & (amax > 1.0)))
        v = tl.where(inside, tl.math.div_rn(x, larger[None, :]), 0.0)
        tile_mean = tl.math.div_rn(tl.sum(v, axis=0), here)
        deviation = tl.where(inside, v - tile_mean[None, :], 0.0)
        mean, squares, count = _chan(mean, squares, count, scale, tile_mean, tl.sum(deviation * deviation, axis=0),
                                     here, larger)  # fmt: skip
        scale = larger
    out = part_ptr + index * c + channels
    keep = channels < c
    stride = bands * c
    tl.store(out, top, mask=keep)
    tl.store(out + stride, bottom, mask=keep)
    tl.store(out + 2 * stride, nans, mask=keep)
    tl.store(out + 3 * stride, above, mask=keep)
    tl.store(out + 4 * stride, below, mask=keep)
    tl.store(out + 5 * stride, scale, mask=keep)
    tl.store(out + 6 * stride, mean, mask=keep)
    tl.store(out + 7 * stride, squares, mask=keep)


@triton.jit
def _chan(mean_a, squares_a, count_a, scale_a, mean_b, squares_b, count_b, scale):
    """(mean, squares, count) of two groups' statistics combined by Chan's rule, at ``scale``:
    the first group's (at scale_a, at most ``scale``) rescaled first (powers of two: exact, bar
    underflow of terms too small to count); the second's already at ``scale``."""
    ratio = tl.math.div_rn(scale_a, scale)
    mean_a = mean_a * ratio
    squares_a = (squares_a * ratio) * ratio
    count = count_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * tl.math.div_rn(count_b, count)
    squares = squares_a + squares_b + (delta * delta) * tl.math.div_rn(count_a * count_b, count)
    return mean, squares, count


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
def finish(part_ptr, channel_ptr, m, c, bands, band, BLOCK_C: tl.constexpr):
    """Per channel, from ``statistics``' parts, once (read from every program of ``normalize``
    instead, the parts would cost more traffic than the input), to channel[5, c]: the scale
    (norms._prescale: the power of two that brings the largest magnitude below 4), the mean and
    the biased variance of x / scale (the bands' combined by Chan's rule), whether the channel
    holds an infinity, whether it is finite. A channel holding an infinity takes its limit
    values' statistics (sign(x) at the infinities, 0 elsewhere: from the counts), a constant one
    its value and 0 exactly (norms._standardize), a NaN one NaN."""
    channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    keep = channels < c
    top = _combined(part_ptr, 0, bands, c, channels, "max")
    bottom = _combined(part_ptr, 1, bands, c, channels, "min")
    has_nan = _combined(part_ptr, 2, bands, c, channels, "sum") > 0.0
    above = _combined(part_ptr, 3, bands, c, channels, "sum")
    below = _combined(part_ptr, 4, bands, c, channels, "sum")
    running = tl.full([BLOCK_C], 1.0, tl.float32)
    mean = tl.zeros([BLOCK_C], tl.float32)
    squares = tl.zeros([BLOCK_C], tl.float32)
    count = 0.0
    for b in range(0, bands):
        part = part_ptr + b * c + channels  # within 2^31: channels.MAX_BANDS, MAX_CHANNELS
        stride = bands * c
        scale_b = tl.load(part + 5 * stride, mask=keep, other=1.0)
        larger = tl.maximum(running, scale_b)
        ratio = tl.math.div_rn(scale_b, larger)
        mean_b = tl.load(part + 6 * stride, mask=keep, other=0.0) * ratio
        squares_b = (tl.load(part + 7 * stride, mask=keep, other=0.0) * ratio) * ratio
        here = tl.minimum(band, m - b * band) * 1.0
        mean, squares, count = _chan(mean, squares, count, running, mean_b, squares_b, here, larger)
        running = larger
    amax = tl.where(has_nan, float("nan"), tl.maximum(top, -bottom))
    finite = tl.abs(amax) < INF
    scale = scale_of(amax, finite & (amax > 1.0))
    # The bands' statistics are at the largest of their tiles' scales, which is the channel's,
    # or twice it: scale_of gives 1 at most 1, and 1/2 between 1 and 2. Powers of two: exact.
    ratio = tl.math.div_rn(running, scale)
    mean = mean * ratio
    squares = (squares * ratio) * ratio
    total = m * 1.0
    var = tl.math.div_rn(squares, total)
    # Limit values: +1 (above), -1 (below), 0 elsewhere.
    limit_mean = tl.math.div_rn(above - below, total)
    rest = total - above - below
    up, down = 1.0 - limit_mean, 1.0 + limit_mean
    spread = above * (up * up) + below * (down * down) + rest * (limit_mean * limit_mean)
    limits = amax == INF
    constant = (top == bottom) & finite
    mean = tl.where(limits, limit_mean, tl.where(constant, tl.math.div_rn(bottom, scale), mean))
    var = tl.where(limits, tl.math.div_rn(spread, total), tl.where(constant, 0.0, var))
    tl.store(channel_ptr + channels, scale, mask=keep)
    tl.store(channel_ptr + c + channels, tl.where(has_nan, float("nan"), mean), mask=keep)
    tl.store(channel_ptr + 2 * c + channels, tl.where(limits, 1.0, 0.0), mask=keep)
    tl.store(channel_ptr + 3 * c + channels, tl.where(finite, 1.0, 0.0), mask=keep)
    tl.store(channel_ptr + 4 * c + channels, tl.where(has_nan, float("nan"), var), mask=keep)


@triton.jit
def _finished(channel_ptr, c, channels):
    """(scale, mean, var, limits, finite) per channel as ``finish`` wrote them."""
    keep = channels < c
    scale = tl.load(channel_ptr + channels, mask=keep, other=1.0)
    mean = tl.load(channel_ptr + c + channels, mask=keep, other=0.0)
    limits = tl.load(channel_ptr + 2 * c + channels, mask=keep, other=0.0) != 0.0
    finite = tl.load(channel_ptr + 3 * c + channels, mask=keep, other=1.0) != 0.0
    var = tl.load(channel_ptr + 4 * c + channels, mask=keep, other=0.0)
    return scale, mean, var, limits, finite


@triton.jit
def _values(x, scale, limits):
    # x / scale, or a limit channel's values: sign(x) at the infinities, 0 elsewhere.
    signs = tl.where(tl.abs(x) == INF, tl.where(x > 0, 1.0, -1.0), 0.0)
    return tl.where(limits[None, :], signs, tl.math.div_rn(x, scale[None, :]))


@triton.jit
def normalize(x_ptr, w_ptr, b_ptr, y_ptr, channel_ptr, rule_ptr, mean_ptr, var_ptr, new_ptr, m, c, inner,
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
    scale, mean, var, limits, finite = _finished(channel_ptr, c, channels)
    root = tl.math.sqrt_rn(var + tl.maximum(tl.math.div_rn(eps, scale * scale), TINY))
    w = tl.load(w_ptr + channels, mask=keep, other=0.0)
    b = tl.load(b_ptr + channels, mask=keep, other=0.0)
    for first in range(index * band, tl.minimum(index * band + band, m), BLOCK_R):
        x, inside = _tile(x_ptr, first, m, c, inner, channels, BLOCK_R, 0.0)
        xhat = tl.math.div_rn(_values(x, scale, limits) - mean[None, :], root[None, :])
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
