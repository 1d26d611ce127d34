/* The norms' guard (impl_torch/norms.py, _untrusted_rows): how many rows (or channels) of ATen's
 * fused layer norm or batch norm are not the declared result, read from the per-row mean and
 * rstd that the fused op returns anyway. A row is trusted where
 *     0 < rstd < 1 / sqrt(max(k mean^2, floor) + eps)
 * (harness.numerics.trusted_variance_floor gives k and floor), computed in double exactly as the
 * numpy form beside the caller computes it, so that both decide alike; NaN anywhere is
 * untrusted. One call where numpy takes a dozen array operations on a row-sized array, which cost
 * more than the fused op itself at 64 rows. */
#include <math.h>
#include <stdint.h>

static inline int trusted(double m, double r, double k, double floor, double eps) {
    double v = k * (m * m);
    return m == m && r > 0.0 && r < 1.0 / sqrt((v > floor ? v : floor) + eps);
}

/* mean may be NULL: the rule on rstd alone, as if every mean were 0 (rms_norm, whose rstd is 0
 * where the mean square overflowed or held an infinity and NaN for a NaN row, takes k = floor = 0
 * and eps = 0, which leaves 0 < rstd < inf). */
int64_t untrusted_rows_f32(const float *mean, const float *rstd, int64_t rows, double k, double floor, double eps) {
    int64_t count = 0;
    for (int64_t i = 0; i < rows; i++) count += !trusted(mean ? mean[i] : 0.0, rstd[i], k, floor, eps);
    return count;
}

int64_t untrusted_rows_f64(const double *mean, const double *rstd, int64_t rows, double k, double floor, double eps) {
    int64_t count = 0;
    for (int64_t i = 0; i < rows; i++) count += !trusted(mean ? mean[i] : 0.0, rstd[i], k, floor, eps);
    return count;
}
