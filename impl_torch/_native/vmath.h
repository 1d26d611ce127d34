/* The float32 arithmetic the elementwise kernels share, written so that the compiler vectorizes
 * the loops that call it (no libm call, which would keep a loop scalar). */
#ifndef OUTPUT_LIMITS_VMATH_H
#define OUTPUT_LIMITS_VMATH_H

#include <stdint.h>
#include <string.h>

/* a * b + c in exp and log1p below: one fused multiply-add where the target has it (-march=native
 * on x86-64 since Haswell), which a vector loop then issues as one instruction, else the two
 * rounded steps. -ffp-contract=off keeps every other product rounded on its own, as ATen's
 * passes round it; inside exp and log1p, which are ours and not ATen's anyway, the fused form is
 * as accurate (the Cody-Waite reduction more so) and faster: 1.3x on smooth_clamp forward at
 * 2^16 for the polynomials, about 1.1x more for the reduction and the scaling (Zen 4). */
#ifdef __FMA__
#define MADD(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define MADD(a, b, c) ((a) * (b) + (c))
#endif

/* exp(-a) for a >= 0, written so that the compiler vectorizes the loops that call it (no libm
 * call): Cephes' expf, 1 ulp. exp(-104) is below half the smallest float32 subnormal, so larger a
 * (and NaN) take 104; callers restore NaN themselves. 2^n is applied as 2^(n + 64), a normal
 * number for every n here (n in [-150, 0]), and then 2^-64: the first product is exact, so a
 * subnormal result is rounded once, as by a correct ldexp, in two multiplications and no
 * integer halving. */
static inline float exp_neg(float a) {
    a = a < 104.0f ? a : 104.0f;
    float z = -a;
    /* Round to nearest by the 1.5 * 2^23 trick: floorf would be a libm call without SSE4.1. */
    float n = MADD(z, 1.44269504088896341f, 12582912.0f) - 12582912.0f;
    float x = MADD(n, -0.693359375f, z); /* Cody-Waite: ln 2 in two parts */
    x = MADD(n, 2.12194440e-4f, x);
    float p = 1.9875691500e-4f;
    p = MADD(p, x, 1.3981999507e-3f);
    p = MADD(p, x, 8.3334519073e-3f);
    p = MADD(p, x, 4.1665795894e-2f);
    p = MADD(p, x, 1.6666665459e-1f);
    p = MADD(p, x, 5.0000001201e-1f);
    float y = MADD(p * x, x, x) + 1.0f;
    int32_t bits = ((int32_t)n + 127 + 64) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale * 5.42101086242752217e-20f; /* 2^-64 */
}

/* min(max(v, lo), hi), torch.clamp's order: where rounding puts lo above hi (lo + r and hi - r of
 * a formula without a linear middle), the result is hi, as in ATen and XLA. NaN stays NaN. */
static inline float clamp(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* log(1 + q) for q in [0, 1], within 2 ulp: Cephes' logf polynomial on log(1 + t), t in
 * [sqrt(1/2) - 1, sqrt(2) - 1]. Below sqrt(2) - 1, t is q itself (no rounding of 1 + q); above,
 * t = (1 + q) / 2 - 1 (exact) and the rounding of u = 1 + q comes back as (q - (u - 1)) / u. */
static inline float log1p_unit(float q) {
    float u = 1.0f + q;
    int big = q > 0.41421356f;
    float t = big ? u * 0.5f - 1.0f : q;
    float z = t * t;
    float p = 7.0376836292e-2f;
    p = MADD(p, t, -1.1514610310e-1f);
    p = MADD(p, t, 1.1676998740e-1f);
    p = MADD(p, t, -1.2420140846e-1f);
    p = MADD(p, t, 1.4249322787e-1f);
    p = MADD(p, t, -1.6668057665e-1f);
    p = MADD(p, t, 2.0000714765e-1f);
    p = MADD(p, t, -2.4999993993e-1f);
    p = MADD(p, t, 3.3333331174e-1f);
    float y = p * t * z;
    float e = big ? 1.0f : 0.0f;
    y = y + -2.12194440e-4f * e;
    y = y - 0.5f * z;
    float r = t + y;
    r = r + 0.693359375f * e;
    return big ? r + (q - (u - 1.0f)) / u : r;
}

/* sigmoid(t) from q = exp(-|t|): 1 / (1 + q) for t >= 0, q / (1 + q) below, each on the side
 * where it does not cancel. */
static inline float sigmoid_from(float t, float q) {
    return (t >= 0.0f ? 1.0f : q) / (1.0f + q);
}

#endif
