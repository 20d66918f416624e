/* gradstats.c -- one-pass statistics of a tensor (sum of squares, max |x|,
 * non-finite count): what a step report or a gradient monitor needs per
 * parameter without three separate reductions. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math")
#endif
#include "cg_internal.h"

/* Non-finite elements are counted and left out of the sums, so one inf does
 * not hide the magnitude of everything else. */
#define STATS(NAME, T)                                                                      \
    static void NAME(const T *restrict x, int64_t n, cg_stats *s) {                         \
        double sum = 0.0, mx = 0.0;                                                         \
        int64_t bad = 0;                                                                    \
        for (int64_t i = 0; i < n; ++i) {                                                   \
            const double v = (double)x[i];                                                  \
            const int ok = isfinite(v);                                                     \
            const double f = ok ? v : 0.0;                                                  \
            const double a = fabs(f);                                                       \
            sum += f * f;                                                                   \
            mx = a > mx ? a : mx;                                                           \
            bad += !ok;                                                                     \
        }                                                                                   \
        s->sum_sq = sum;                                                                    \
        s->max_abs = mx;                                                                    \
        s->nonfinite = bad;                                                                 \
        s->numel = n;                                                                       \
    }
STATS(stats_f32, float)
STATS(stats_f64, double)

cg_status cg_tensor_stats(const cg_tensor *t, cg_stats *stats) {
    CG_CHECK_TS(t);
    if (!stats) return cg__err(CG_ERR_NULL, "cg_tensor_stats: stats pointer is NULL");
    memset(stats, 0, sizeof *stats);
    if (!cg__is_float(t->dtype))
        return cg__err(CG_ERR_DTYPE, "cg_tensor_stats: float32 or float64 needed, got %s",
                       cg_dtype_name(t->dtype));
    cg_tensor *sp = NULL, *c = NULL;
    if (t->layout) /* row-sparse: the statistics of the coalesced rows */
        CG_TRY(cg__sparse_coalesced((cg_tensor *)t, &sp));
    cg_status st = cg__contig(sp ? sp->sp_values : (cg_tensor *)t, &c);
    cg_tensor_free(sp);
    CG_TRY(st);
    if (c->dtype == CG_FLOAT32)
        stats_f32(cg__ptr(c), c->numel, stats);
    else
        stats_f64(cg__ptr(c), c->numel, stats);
    stats->numel = t->numel;
    cg_tensor_free(c);
    return CG_OK;
}
