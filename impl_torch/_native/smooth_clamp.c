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

#include "parallel.h"
#include "vmath.h"

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
