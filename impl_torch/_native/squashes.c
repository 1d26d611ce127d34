/* scaled_sigmoid (and scaled_tanh), soft_clip and leaky_clamp for float32 in one pass each: the
 * forward and the input gradient. The declarations are in harness/squashes.py and
 * harness/clamps.py; the ATen formulas in impl_torch/squashes.py and impl_torch/clamps.py, which
 * these follow term by term and the parity tests run beside them.
 *
 * NaN propagates (each forward and gradient restores it where the arithmetic would drop it), an
 * infinite x takes the formula's limit, and each bounded forward is clamped to its bounds last:
 * rounding could step past a bound, and here the clamp costs nothing. Compiled without
 * -ffast-math, whose finite-math assumption would drop both.
 */
#include <math.h>
#include <stdint.h>

#include "parallel.h"
#include "vmath.h"

typedef struct {
    const float *x, *g;
    float *out;
    int64_t begin, end;
    float p[5];
} Job;

/* lo + (hi - lo) sigmoid(k x), p = {lo, hi, k, hi - lo}; k = 2 is scaled_tanh ((tanh(x) + 1) / 2
 * is sigmoid(2x)). hi - lo comes rounded once from the double difference, as ATen's formula takes
 * it, not as the difference of the rounded bounds. */
static void scaled_sigmoid_forward(const Job *j) {
    float lo = j->p[0], hi = j->p[1], k = j->p[2], w = j->p[3];
    for (int64_t i = j->begin; i < j->end; i++) {
        float t = j->x[i] * k;
        float s = sigmoid_from(t, exp_neg(fabsf(t)));
        float y = clamp(s * w + lo, lo, hi);
        j->out[i] = t == t ? y : t;
    }
}

/* g (hi - lo) s (1 - s) k, the order of the ATen formula's backward (mul, sigmoid's, mul). */
static void scaled_sigmoid_backward(const Job *j) {
    float k = j->p[2], w = j->p[3];
    for (int64_t i = j->begin; i < j->end; i++) {
        float t = j->x[i] * k;
        float s = sigmoid_from(t, exp_neg(fabsf(t)));
        float d = j->g[i] * w * (1.0f - s) * s * k;
        j->out[i] = t == t ? d : t;
    }
}

/* c softplus(v / c) = c (max(u, 0) + log1p(exp(-|u|))), u = v / c; q = exp(-|u|) is kept for
 * the gradient's sigmoid(u). An infinite v gives inf (u > 0) or 0. */
static inline float softplus_c(float v, float c, float *q_out) {
    float u = v / c;
    float q = exp_neg(fabsf(u));
    *q_out = q;
    return c * ((u > 0.0f ? u : 0.0f) + log1p_unit(q));
}

/* hi - s(hi - lo - s(x - lo)) shrink, s the softplus of softness c; p = {lo, hi, c, shrink,
 * hi - lo}, the width rounded once as for scaled_sigmoid. */
static void soft_clip_forward(const Job *j) {
    float lo = j->p[0], hi = j->p[1], c = j->p[2], shrink = j->p[3], w = j->p[4], q;
    for (int64_t i = j->begin; i < j->end; i++) {
        float v = j->x[i];
        float inner = softplus_c(v - lo, c, &q);
        float y = clamp(hi - softplus_c(w - inner, c, &q) * shrink, lo, hi);
        j->out[i] = v == v ? y : v;
    }
}

/* g shrink sigmoid(u2) sigmoid(u1), u1 = (x - lo) / c, u2 = (hi - lo - s(x - lo)) / c. */
static void soft_clip_backward(const Job *j) {
    float lo = j->p[0], c = j->p[2], shrink = j->p[3], w = j->p[4], q1, q2;
    for (int64_t i = j->begin; i < j->end; i++) {
        float v = j->x[i];
        float u1 = (v - lo) / c;
        float inner = softplus_c(v - lo, c, &q1);
        float u2 = (w - inner) / c;
        softplus_c(w - inner, c, &q2);
        float d = j->g[i] * shrink * sigmoid_from(u2, q2) * sigmoid_from(u1, q1);
        j->out[i] = v == v ? d : v;
    }
}

/* m + slope (x - m), m = clamp(x, lo, hi); p = {lo, hi, slope}. An infinite x gives x (the
 * declaration keeps slope > 0, so no 0 * inf). */
static void leaky_clamp_forward(const Job *j) {
    float lo = j->p[0], hi = j->p[1], slope = j->p[2];
    for (int64_t i = j->begin; i < j->end; i++) {
        float v = j->x[i];
        float m = clamp(v, lo, hi);
        j->out[i] = m + slope * (v - m);
    }
}

/* g strictly inside (lo, hi), slope g at the bounds and outside: the declared kinks. A NaN x
 * counts as inside (every comparison is false), as in XLA; ATen's hardtanh_backward, which the
 * ATen formula takes, gives that only in its scalar tail, its vector lanes give 0. */
static void leaky_clamp_backward(const Job *j) {
    float lo = j->p[0], hi = j->p[1], slope = j->p[2];
    for (int64_t i = j->begin; i < j->end; i++) {
        float v = j->x[i], g = j->g[i];
        j->out[i] = v <= lo || v >= hi ? slope * g : g;
    }
}

#define RUNNER(name) \
    static void *run_##name(void *job) { name(job); return NULL; }
RUNNER(scaled_sigmoid_forward)
RUNNER(scaled_sigmoid_backward)
RUNNER(soft_clip_forward)
RUNNER(soft_clip_backward)
RUNNER(leaky_clamp_forward)
RUNNER(leaky_clamp_backward)

static void run(void *(*fn)(void *), const float *x, const float *g, float *out, int64_t n, const float *p,
                int threads) {
    int t = thread_count(threads, n, n);
    Job jobs[MAX_THREADS];
    for (int i = 0; i < t; i++) {
        Job job = {x, g, out, n * i / t, n * (i + 1) / t, {p[0], p[1], p[2], p[3], p[4]}};
        jobs[i] = job;
    }
    run_jobs(fn, jobs, sizeof(Job), t);
}

/* The exported entry points: x (and the cotangent g) in, out written, five parameters as the
 * functions above read them (unused ones 0), the same for a forward and its backward. */
void scaled_sigmoid_forward_f32(const float *x, float *y, int64_t n, const float *p, int threads) {
    run(run_scaled_sigmoid_forward, x, NULL, y, n, p, threads);
}
void scaled_sigmoid_backward_f32(const float *x, const float *g, float *dx, int64_t n, const float *p, int threads) {
    run(run_scaled_sigmoid_backward, x, g, dx, n, p, threads);
}
void soft_clip_forward_f32(const float *x, float *y, int64_t n, const float *p, int threads) {
    run(run_soft_clip_forward, x, NULL, y, n, p, threads);
}
void soft_clip_backward_f32(const float *x, const float *g, float *dx, int64_t n, const float *p, int threads) {
    run(run_soft_clip_backward, x, g, dx, n, p, threads);
}
void leaky_clamp_forward_f32(const float *x, float *y, int64_t n, const float *p, int threads) {
    run(run_leaky_clamp_forward, x, NULL, y, n, p, threads);
}
void leaky_clamp_backward_f32(const float *x, const float *g, float *dx, int64_t n, const float *p, int threads) {
    run(run_leaky_clamp_backward, x, g, dx, n, p, threads);
}
