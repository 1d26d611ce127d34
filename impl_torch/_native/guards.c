/* The norms' guard (impl_torch/norms.py, _untrusted_count and its twin _trusted_rows): how many
 * rows (or channels) of ATen's fused layer norm or batch norm are not the declared result, read
 * from the per-row mean and rstd that the fused op returns anyway. A row is trusted where
 *     low < rstd < 1 / sqrt(max(k mean^2, floor) + eps)
 * (harness.numerics: trusted_variance_floor gives k and floor, trusted_rstd_low low), computed
 * in double exactly as the numpy form beside the caller computes it, so that both decide alike;
 * NaN anywhere is untrusted. One call where numpy takes a dozen array operations on a row-sized
 * array, which cost more than the fused op itself at 64 rows. */
#include <math.h>
#include <stdint.h>

static inline int trusted(double m, double r, double k, double floor, double eps, double low) {
    double v = k * (m * m);
    return m == m && r > low && r < 1.0 / sqrt((v > floor ? v : floor) + eps);
}

/* mean may be NULL: the rule on rstd alone, as if every mean were 0 (rms_norm, whose rstd is 0
 * where the mean square overflowed or held an infinity and NaN for a NaN row, takes k = floor = 0
 * and eps = 0, which leaves low < rstd < inf). */
int64_t untrusted_rows_f32(const float *mean, const float *rstd, int64_t rows, double k, double floor, double eps,
                            double low) {
    int64_t count = 0;
    for (int64_t i = 0; i < rows; i++) count += !trusted(mean ? mean[i] : 0.0, rstd[i], k, floor, eps, low);
    return count;
}

int64_t untrusted_rows_f64(const double *mean, const double *rstd, int64_t rows, double k, double floor, double eps,
                            double low) {
    int64_t count = 0;
    for (int64_t i = 0; i < rows; i++) count += !trusted(mean ? mean[i] : 0.0, rstd[i], k, floor, eps, low);
    return count;
}

/* The softmaxes' guard (impl_torch/simplex.py, _guarded): whether any row of ATen's softmax or
 * log_softmax output is NaN, read from one entry per row, the first along the axis. A row the
 * fused kernel cannot take (an infinity, a NaN) comes out NaN throughout, and no other output
 * entry is NaN, so one entry decides for its row. y holds outer x n x inner contiguous values,
 * the axis of length n in the middle. One call where numpy's strided view and sum cost 3-8 us. */
int64_t nan_in_first_f32(const float *y, int64_t outer, int64_t n, int64_t inner) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++)
            if (y[o * n * inner + i] != y[o * n * inner + i]) return 1;
    return 0;
}

int64_t nan_in_first_f64(const double *y, int64_t outer, int64_t n, int64_t inner) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++)
            if (y[o * n * inner + i] != y[o * n * inner + i]) return 1;
    return 0;
}
