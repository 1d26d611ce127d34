/* smooth_clamp for float32 in one pass: the forward and the input gradient.
 *
 * The declaration (harness/squashes.py, smooth_clamp) in closed form, with e = x - m and
 * m = clamp(x, b_lo, b_hi), b_lo = lo + r, b_hi = hi - r, q = exp(-2|e|/r):
 *   forward   m + sign(e) r (1 - q) / (1 + q)   (= hi - 2r sigmoid(-2e/r) above, lo + 2r sigmoid(2e/r) below)
 *   gradient  4 s (1 - s) with s = q / (1 + q)  (= sigmoid(-2|e|/r), the tails' sigmoid on its small side)
 * On the linear middle e == 0, so q == 1 exactly and the forward returns m == x bit for bit and the
 * gradient 1. The forward is clamped to [lo, hi] last: the added term lies in [-r, r] but rounding
 * could step past a bound, and here the clamp costs nothing.
 *
 * NaN propagates (x NaN gives m NaN, every comparison below is false for NaN); an infinite x lands
 * on its bound. Compiled without -ffast-math, whose finite-math assumption would drop both.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "parallel.h"

/* exp(-a) for a >= 0, written so that the compiler vectorizes the loops that call it (no libm
 * call): Cephes' expf, 1 ulp, with 2^n applied in two halves so subnormal results stay right.
 * exp(-104) is below half the smallest float32 subnormal, so larger a (and NaN) take 104;
 * callers restore NaN themselves. */
static inline float exp_neg(float a) {
    a = a < 104.0f ? a : 104.0f;
    float z = -a;
    /* Round to nearest by the 1.5 * 2^23 trick: floorf would be a libm call without SSE4.1. */
    float n = (z * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float x = z - n * 0.693359375f;
    x = x - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * x + 1.3981999507e-3f;
    p = p * x + 8.3334519073e-3f;
    p = p * x + 4.1665795894e-2f;
    p = p * x + 1.6666665459e-1f;
    p = p * x + 5.0000001201e-1f;
    float y = p * x * x + x + 1.0f;
    int32_t ni = (int32_t)n, n1 = ni / 2, n2 = ni - n1; /* n in [-150, 0]: halves stay normal */
    int32_t b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return y * s1 * s2;
}

/* min(max(v, lo), hi), torch.clamp's order: where rounding puts lo above hi (lo + r and hi - r of
 * a formula without a linear middle), the result is hi, as in ATen and XLA. NaN stays NaN. */
static inline float clamp(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

typedef struct {
    const float *x, *g;
    float *out;
    int64_t begin, end;
    float lo, hi, b_lo, b_hi, r, k;
} Job;

static void forward_range(const Job *j) {
    for (int64_t i = j->begin; i < j->end; i++) {
        float v = j->x[i];
        float m = clamp(v, j->b_lo, j->b_hi);
        float e = v - m;
        float q = exp_neg(fabsf(e) * j->k);
        j->out[i] = clamp(m + copysignf(j->r * (1.0f - q) / (1.0f + q), e), j->lo, j->hi);
    }
}

static void backward_range(const Job *j) {
    for (int64_t i = j->begin; i < j->end; i++) {
        float v = j->x[i];
        float e = v - clamp(v, j->b_lo, j->b_hi);
        float q = exp_neg(fabsf(e) * j->k);
        float s = q / (1.0f + q);
        /* Same order as the ATen formula: (s - s * s) * g * 4. */
        float d = (s - s * s) * j->g[i] * 4.0f;
        j->out[i] = e == e ? d : e;
    }
}

static void *run_forward(void *job) { forward_range(job); return NULL; }
static void *run_backward(void *job) { backward_range(job); return NULL; }

static void run(void *(*fn)(void *), Job job, int64_t n, int threads) {
    int t = thread_count(threads, n, n);
    Job jobs[MAX_THREADS];
    for (int i = 0; i < t; i++) {
        jobs[i] = job;
        jobs[i].begin = n * i / t;
        jobs[i].end = n * (i + 1) / t;
    }
    run_jobs(fn, jobs, sizeof(Job), t);
}

void smooth_clamp_forward_f32(const float *x, float *y, int64_t n, float lo, float hi, float b_lo, float b_hi,
                              float r, float k, int threads) {
    Job job = {x, NULL, y, 0, n, lo, hi, b_lo, b_hi, r, k};
    run(run_forward, job, n, threads);
}

void smooth_clamp_backward_f32(const float *x, const float *g, float *dx, int64_t n, float b_lo, float b_hi,
                               float k, int threads) {
    Job job = {x, g, dx, 0, n, 0.0f, 0.0f, b_lo, b_hi, 0.0f, k};
    run(run_backward, job, n, threads);
}
