/* smooth_clamp, scaled_sigmoid (and scaled_tanh), soft_clip, leaky_clamp and softsign for float32
 * in one pass each: the output and, on request, the local derivative dy/dx beside it. The declarations
 * are in harness/squashes.py and harness/clamps.py; the ATen formulas in impl_torch/squashes.py
 * and impl_torch/clamps.py, which these follow term by term and the parity tests run beside them.
 *
 * Why the derivative comes from the forward: the backward is then grad * dy/dx, one cheap ATen
 * pass, where recomputing the exp (or two exp and two log1p) would cost a second forward. The
 * caller asks for it only where autograd records the call.
 *
 * NaN propagates (each output and derivative restores it where the arithmetic would drop it,
 * leaky_clamp's derivative too: the declaration's rule at NaN), an infinite x takes the
 * formula's limit, and each bounded output is clamped to its bounds last: rounding could step
 * past a bound, and here the clamp costs nothing. Compiled without -ffast-math, whose
 * finite-math assumption would drop both.
 */
#include <math.h>
#include <stdint.h>

#include "parallel.h"
#include "vmath.h"

#define PARAMETERS 6

typedef struct {
    const float *x;
    float *y, *d; /* d: NULL when the derivative is not wanted */
    int64_t begin, end;
    float p[PARAMETERS];
} Job;

/* lo + (hi - lo) sigmoid(k x), p = {lo, hi, k, hi - lo}; k = 2 is scaled_tanh ((tanh(x) + 1) / 2
 * is sigmoid(2x)). hi - lo comes rounded once from the double difference, as ATen's formula takes
 * it, not as the difference of the rounded bounds. Derivative (hi - lo) (1 - s) s k, the order of
 * the ATen formula's backward (mul, sigmoid's, mul). */
static inline float scaled_sigmoid(float x, const float *p, float *d) {
    float lo = p[0], hi = p[1], k = p[2], w = p[3];
    float t = x * k;
    float s = sigmoid_from(t, exp_neg(fabsf(t)));
    *d = t == t ? w * (1.0f - s) * s * k : t;
    float y = clamp(s * w + lo, lo, hi);
    return t == t ? y : t;
}

/* m + sign(e) r (1 - q) / (1 + q), m = clamp(x, b_lo, b_hi), e = x - m, q = exp(-k |e|) with
 * k = 2 / r; p = {lo, hi, b_lo, b_hi, r, k}. That is hi - 2r sigmoid(-2e/r) above and
 * lo + 2r sigmoid(2e/r) below; on the linear middle e == 0, so q == 1 and the output is m == x
 * bit for bit (1 - q == 0). Derivative 4 s (1 - s) with s = q / (1 + q), the tails' sigmoid on its
 * small side (exactly 1 on the middle, > 0 far into the tails), taken as q (1 + t)^2 with the
 * tail's t = (1 - q) / (1 + q) read off the output's term r t (1 - s = (1 + t) / 2 and
 * s = q (1 + t) / 2): one division per element where s of its own took a second (the kernel with
 * the derivative 37.3 us against 39.3 at 2^16 in two of three alternating runs, even in the
 * third; Zen 4). 1 + t lies in [1, 2], so nothing cancels; the declaration's test deep into the
 * tails holds it to 8 ulps. (t itself, times r after, took the output 4.5 ulps off the
 * declaration where it has 4.)
 *
 * Without the bounds clamp (smooth_clamp_open): |r (1 - q) / (1 + q)| <= r after rounding, so
 * the output lies in [b_lo - r, b_hi + r] rounded, inside [lo, hi] unless those round outside
 * (harness's smooth_clamp_needs_guard), and the caller takes smooth_clamp then. The clamp is
 * 5-10% of the forward; a flag to skip it inside one loop kept the loop from vectorizing. */
static inline float smooth_clamp_open(float x, const float *p, float *d) {
    float b_lo = p[2], b_hi = p[3], r = p[4], k = p[5];
    float m = clamp(x, b_lo, b_hi);
    float e = x - m;
    float q = exp_neg(fabsf(e) * k);
    float v = r * (1.0f - q) / (1.0f + q);
    float u = 1.0f + v * (k * 0.5f); /* 1 + t: k / 2 is 1 / r (rounded from float64, within an ulp) */
    *d = e == e ? q * u * u : e;
    return m + copysignf(v, e);
}

static inline float smooth_clamp(float x, const float *p, float *d) {
    return clamp(smooth_clamp_open(x, p, d), p[0], p[1]);
}

/* c softplus(v / c) = c (max(u, 0) + log1p(exp(-|u|))), u = v / c; q = exp(-|u|) is kept for
 * the derivative's sigmoid(u). An infinite v gives inf (u > 0) or 0. */
static inline float softplus_c(float v, float c, float *q_out) {
    float u = v / c;
    float q = exp_neg(fabsf(u));
    *q_out = q;
    return c * ((u > 0.0f ? u : 0.0f) + log1p_unit(q));
}

/* hi - s(hi - lo - s(x - lo)) shrink, s the softplus of softness c; p = {lo, hi, c, shrink,
 * hi - lo}, the width rounded once as for scaled_sigmoid. Derivative shrink sigmoid(u2)
 * sigmoid(u1), u1 = (x - lo) / c, u2 = (hi - lo - s(x - lo)) / c. */
static inline float soft_clip(float x, const float *p, float *d) {
    float lo = p[0], hi = p[1], c = p[2], shrink = p[3], w = p[4], q1, q2;
    float inner = softplus_c(x - lo, c, &q1);
    float outer = softplus_c(w - inner, c, &q2);
    float u1 = (x - lo) / c, u2 = (w - inner) / c;
    *d = x == x ? shrink * sigmoid_from(u2, q2) * sigmoid_from(u1, q1) : x;
    float y = clamp(hi - outer * shrink, lo, hi);
    return x == x ? y : x;
}

/* m + slope (x - m), m = clamp(x, lo, hi); p = {lo, hi, slope}. An infinite x gives x (the
 * declaration keeps slope > 0, so no 0 * inf). Derivative 1 strictly inside (lo, hi), slope at the
 * bounds and outside: the declared kinks. NaN at a NaN x, as the declaration says of every
 * derivative at NaN (the comparisons alone would give 1 there). */
static inline float leaky_clamp(float x, const float *p, float *d) {
    float lo = p[0], hi = p[1], slope = p[2];
    float m = clamp(x, lo, hi);
    *d = x != x ? x : (x <= lo || x >= hi ? slope : 1.0f);
    return m + slope * (x - m);
}

/* x / (1 + |x|) with an infinite x taken as the largest finite one, whose quotient rounds to +-1
 * (the limit) instead of inf / inf; p unused. Derivative 1 / (1 + |x|)^2 as two divisions, not
 * one by the square, which overflows (|x| > 1.8e19) where the derivative is still a subnormal;
 * 0 at an infinity. The output takes the ATen formula's operations in its order, so the same
 * bits; the backward's g * (1 / t / t) rounds once more than its g / t / t. */
static inline float softsign(float x, const float *p, float *d) {
    (void)p;
    float xf = clamp(x, -3.40282347e38f, 3.40282347e38f);
    float t = fabsf(xf) + 1.0f;
    *d = 1.0f / t / t;
    return xf / t;
}

/* One loop with the derivative and one without, so that the forward alone neither computes nor
 * stores it. Parameters and pointers are copied to locals first: the compiler then knows that no
 * store aliases them, keeps them in registers and vectorizes. */
#define KERNEL(name)                                                                              \
    static void *run_##name(void *job) {                                                          \
        const Job *j = job;                                                                       \
        const float *restrict x = j->x;                                                           \
        float *restrict y = j->y, *restrict d = j->d, p[PARAMETERS], unused;                     \
        for (int k = 0; k < PARAMETERS; k++) p[k] = j->p[k];                                      \
        if (d) {                                                                                  \
            for (int64_t i = j->begin; i < j->end; i++) y[i] = name(x[i], p, &d[i]);              \
        } else {                                                                                  \
            for (int64_t i = j->begin; i < j->end; i++) y[i] = name(x[i], p, &unused);            \
        }                                                                                         \
        return NULL;                                                                              \
    }                                                                                             \
    void name##_f32(const float *x, float *y, float *d, int64_t n, const float *p, int threads) { \
        run(run_##name, x, y, d, n, p, threads);                                                  \
    }

static void run(void *(*fn)(void *), const float *x, float *y, float *d, int64_t n, const float *p, int threads) {
    int t = thread_count(threads, n, n);
    Job jobs[MAX_THREADS];
    for (int i = 0; i < t; i++) {
        Job job = {x, y, d, n * i / t, n * (i + 1) / t, {0}};
        for (int k = 0; k < PARAMETERS; k++) job.p[k] = p[k];
        jobs[i] = job;
    }
    run_jobs(fn, jobs, sizeof(Job), t);
}

/* The exported entry points, NAME_f32(x, y, d, n, p, threads): x in, y written, and the
 * derivative written to d unless d is NULL; six parameters as the functions above read them
 * (unused ones 0). Each element is computed alone: no result depends on the thread count. */
KERNEL(scaled_sigmoid)
KERNEL(smooth_clamp)
KERNEL(smooth_clamp_open)
KERNEL(soft_clip)
KERNEL(leaky_clamp)
KERNEL(softsign)
