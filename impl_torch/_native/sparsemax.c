/* sparsemax's threshold for float32 rows, in linear time: tau with sum(max(z - tau, 0)) = 1.
 *
 * Rows come shifted so that their maximum is 0 (or hold a NaN). tau lies in [-1, 0), and also
 * tau >= (sum z - 1) / n. From the larger bound, Newton's method on the convex, decreasing,
 * piecewise-linear f(t) = sum(max(z - t, 0)) - 1 (Michelot's iteration) rises to tau:
 * t' = (sum of the z > t, less 1) / their count. Below tau, f(t) > 0 makes t' > t, and t' stays
 * at or below tau; at tau the set {z > t} is the support, and t' is the sort-based rule's
 * (sum of the support - 1) / its size. Each step leaves out at least one more value, so at most
 * n + 1 steps; with the bound above, rows spread over more than about 0.1 take a few. A row is
 * 1024 floats, 4 KiB: it stays in the L1 cache for every step. A NaN row gives NaN (its output
 * is set to NaN afterwards).
 */
#include <math.h>
#include <stdint.h>

#include "parallel.h"

typedef struct {
    const float *z;
    float *tau;
    int64_t begin, end, n;
} Rows;

/* The sum of the values of z above t, and their count. "omp simd reduction" (-fopenmp-simd, no
 * OpenMP runtime) lets this one loop add in vector lanes, which strict IEEE order (no
 * -ffast-math) forbids elsewhere; the lanes add in float, as ATen's float32 cumsum does. */
static void sum_above(const float *z, int64_t n, float t, float *sum, int64_t *count) {
    float s = 0.0f;
    int32_t c = 0;
#pragma omp simd reduction(+ : s, c)
    for (int64_t i = 0; i < n; i++) {
        float v = z[i];
        int above = v > t;
        s += above ? v : 0.0f;
        c += above;
    }
    *sum = s;
    *count = c;
}

static float sum_all(const float *z, int64_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += z[i];
    return s;
}

static float row_threshold(const float *z, int64_t n) {
    float s = sum_all(z, n); /* NaN for a NaN row; -inf entries (rows that held +inf) give -inf */
    int64_t count;
    if (s != s) return NAN;
    float t = (s - 1.0f) / (float)n;
    t = t > -1.0f ? t : -1.0f;
    float next = t;
    for (int64_t step = 0; step <= n; step++) {
        sum_above(z, n, t, &s, &count);
        next = (s - 1.0f) / (float)(count > 0 ? count : 1);
        if (!(next > t)) break;
        t = next;
    }
    return next;
}

static void *run_rows(void *job) {
    const Rows *r = job;
    for (int64_t row = r->begin; row < r->end; row++) r->tau[row] = row_threshold(r->z + row * r->n, r->n);
    return NULL;
}

void sparsemax_threshold_f32(const float *z, float *tau, int64_t rows, int64_t n, int threads) {
    int t = thread_count(threads, rows * n, rows);
    Rows jobs[MAX_THREADS];
    for (int i = 0; i < t; i++) jobs[i] = (Rows){z, tau, rows * i / t, rows * (i + 1) / t, n};
    run_jobs(run_rows, jobs, sizeof(Rows), t);
}
