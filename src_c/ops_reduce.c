/* ops_reduce.c -- reductions (sum, mean, var, max/min, argmax/argmin,
 * logsumexp), softmax / log_softmax and sum_to_shape.
 *
 * Every reduction goes through reduce_raw(): the input layout is simplified
 * into a plan (size-1 dims dropped, dims adjacent in memory merged), then one
 * of three loops runs:
 *   row    the reduced elements of each output are one contiguous run
 *          (reducing the last dims of a contiguous tensor, or everything);
 *   column the innermost kept dim is contiguous: whole rows of outputs are
 *          combined at once (sum over the batch dim, bias gradients);
 *   pack   anything else: copy into a (kept, reduced) contiguous buffer,
 *          then the row loop.
 * float32 sums accumulate in float lanes over short blocks and add the
 * block totals in double, so long sums keep ~double accuracy at float
 * speed.
 *
 * On a device the checks, plan sizes and output shapes are the same and
 * reduce_device() / softmax_common() run the backend's named kernel in
 * place of these loops (docs/backend.md, "Reductions, softmax and matmul"). */
/* Vectorisation options for the kernel loops (GCC's -O2 cost model leaves
 * loops with unknown trip counts scalar); same note as ops_binary.c. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-math-errno", "no-trapping-math")
#endif
#include "cg_internal.h"

/* On x86-64 the exp-heavy float32 kernels (softmax, log_softmax,
 * logsumexp) are also built for AVX2+FMA and picked at run time: twice the
 * lanes of the SSE2 baseline that portable builds target. */
#if defined(__GNUC__) && defined(__x86_64__)
#define CG_AVX2 1
#define CG_TARGET_AVX2 __attribute__((target("avx2,fma")))
static int cpu_has_avx2;
__attribute__((constructor)) static void detect_avx2(void) {
    __builtin_cpu_init();
    cpu_has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

/* Fixed-width lane loops must be unrolled before vectorisation, or GCC
 * keeps the lane accumulators in memory (several times slower). */
#if defined(__GNUC__)
#define CG_PRAGMA_(x) _Pragma(#x)
#define CG_UNROLL(n) CG_PRAGMA_(GCC unroll n)
#else
#define CG_UNROLL(n)
#endif

/* Kernel helpers are forced inline so that the AVX2 builds of their
 * callers get AVX2 code for them too. */
#if defined(__GNUC__)
#define CG_KERNEL static inline __attribute__((always_inline))
#else
#define CG_KERNEL static inline
#endif

/* exp(x) for float32 without a libm call, so loops over it vectorise:
 * Cephes' expf polynomial (about 1 ulp) on r = x - n ln2, |r| <= ln2/2,
 * times 2^n built from exponent bits. 2^n is applied as two factors so the
 * whole range stays exact: overflow gives inf, x < -103.9 gives 0 (also
 * for -inf), NaN stays NaN. No float->int conversion: n is read from the
 * bits of t + 1.5*2^23, so NaN input is never undefined behaviour. */
CG_KERNEL float cg_expf_poly(float x) {
    union fu { float f; uint32_t u; };
    float xc = x > 88.8f ? 88.8f : x;
    xc = xc < -104.0f ? -104.0f : xc;
    const float magic = 12582912.0f; /* 1.5 * 2^23: float adds round t to an integer */
    union fu t, m;
    t.f = xc * 1.44269504088896341f + magic;
    m.f = magic;
    int32_t n = (int32_t)(t.u - m.u);
    float fn = t.f - magic;
    float r = xc - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    float y = p * r * r + r + 1.0f;
    int32_t n1 = n / 2, n2 = n - n1;
    union fu s1, s2;
    s1.u = (uint32_t)(n1 + 127) << 23;
    s2.u = (uint32_t)(n2 + 127) << 23;
    return y * s1.f * s2.f;
}

enum rkind { RK_SUM, RK_MEAN, RK_MAX, RK_MIN, RK_ARGMAX, RK_ARGMIN, RK_LSE, RK_VAR };

/* Layout of one reduction. kept dims in output (row-major) order, reduced
 * dims ordered so the innermost in memory is last; strides in elements. */
typedef struct rplan {
    int nk, nr;
    int64_t kshape[CG_MAX_DIMS], kstride[CG_MAX_DIMS];
    int64_t rshape[CG_MAX_DIMS], rstride[CG_MAX_DIMS];
    int64_t K, R; /* number of outputs, elements reduced into each */
} rplan;

typedef struct rargs {
    double scale; /* mean: 1/R */
    double denom; /* var: max(0, R - correction) */
} rargs;

/* Advance a multi-index over (n, shape) and keep *off = sum idx*stride. */
static inline void walk_next(int n, const int64_t *shape, const int64_t *stride, int64_t *idx,
                             int64_t *off) {
    for (int d = n - 1; d >= 0; --d) {
        *off += stride[d];
        if (++idx[d] < shape[d]) return;
        *off -= stride[d] * shape[d];
        idx[d] = 0;
    }
}

/* Merge neighbours (i, i+1) with stride[i] == shape[i+1]*stride[i+1]. */
static int coalesce(int n, int64_t *shape, int64_t *stride) {
    if (n == 0) return 0;
    int m = 0;
    for (int i = 1; i < n; ++i) {
        if (stride[m] == shape[i] * stride[i]) {
            shape[m] *= shape[i];
            stride[m] = stride[i];
        } else {
            ++m;
            shape[m] = shape[i];
            stride[m] = stride[i];
        }
    }
    return m + 1;
}

static inline int64_t iabs64(int64_t x) { return x < 0 ? -x : x; }

/* keep_order: reduced dims stay in row-major order (arg-reductions report a
 * row-major position). */
static void make_plan(const cg_tensor *a, const unsigned char *mask, int keep_order, rplan *pl) {
    pl->nk = pl->nr = 0;
    pl->K = pl->R = 1;
    for (int d = 0; d < a->ndim; ++d) {
        int64_t s = a->shape[d];
        if (mask[d]) pl->R *= s;
        else pl->K *= s;
        if (s == 1) continue;
        if (mask[d]) {
            pl->rshape[pl->nr] = s;
            pl->rstride[pl->nr++] = a->strides[d];
        } else {
            pl->kshape[pl->nk] = s;
            pl->kstride[pl->nk++] = a->strides[d];
        }
    }
    if (!keep_order) /* insertion sort by decreasing |stride| */
        for (int i = 1; i < pl->nr; ++i)
            for (int j = i; j > 0 && iabs64(pl->rstride[j - 1]) < iabs64(pl->rstride[j]); --j) {
                int64_t t = pl->rshape[j]; pl->rshape[j] = pl->rshape[j - 1]; pl->rshape[j - 1] = t;
                t = pl->rstride[j]; pl->rstride[j] = pl->rstride[j - 1]; pl->rstride[j - 1] = t;
            }
    pl->nk = coalesce(pl->nk, pl->kshape, pl->kstride);
    pl->nr = coalesce(pl->nr, pl->rshape, pl->rstride);
}

/* ------------------------------------------------------------ row kernels */
/* Contiguous run p[0..n). */
CG_KERNEL double sum_row_f32(const float *p, int64_t n) {
    double dacc[16] = {0};
    int64_t i = 0;
    while (i + 16 <= n) {
        float acc[16] = {0}; /* each lane sums at most 256 floats */
        int64_t end = n - i < 4096 ? n : i + 4096;
        for (; i + 16 <= end; i += 16) {
            CG_UNROLL(16) for (int l = 0; l < 16; ++l) acc[l] += p[i + l];
        }
        CG_UNROLL(16) for (int l = 0; l < 16; ++l) dacc[l] += acc[l];
    }
    double s = 0.0;
    for (; i < n; ++i) s += p[i];
    for (int l = 0; l < 16; ++l) s += dacc[l];
    return s;
}

CG_KERNEL double sum_row_f64(const double *p, int64_t n) {
    double acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        CG_UNROLL(8) for (int l = 0; l < 8; ++l) acc[l] += p[i + l];
    }
    double s = 0.0;
    for (; i < n; ++i) s += p[i];
    return s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Unsigned so that overflow wraps instead of being undefined. */
static inline int64_t sum_row_i64(const int64_t *p, int64_t n) {
    uint64_t s = 0;
    for (int64_t i = 0; i < n; ++i) s += (uint64_t)p[i];
    return (int64_t)s;
}

#define ISNAN_F(v) ((v) != (v))
#define ISNAN_I(v) 0

/* max / min of a non-empty run; NaN anywhere gives NaN (as PyTorch). The
 * lane loop is left for the loop vectoriser here: unrolled, GCC turns the
 * select into branches. */
#define DEF_EXT_ROW(NAME, T, CMP, ISNAN, NANV)                                 \
    CG_KERNEL T NAME(const T *p, int64_t n) {                                  \
        T acc[8];                                                              \
        int nan = 0;                                                           \
        for (int l = 0; l < 8; ++l) acc[l] = p[0];                             \
        int64_t i = 0;                                                         \
        for (; i + 8 <= n; i += 8)                                             \
            for (int l = 0; l < 8; ++l) {                                      \
                T v = p[i + l];                                                \
                acc[l] = v CMP acc[l] ? v : acc[l];                            \
                nan |= ISNAN(v);                                               \
            }                                                                  \
        for (; i < n; ++i) {                                                   \
            T v = p[i];                                                        \
            acc[0] = v CMP acc[0] ? v : acc[0];                                \
            nan |= ISNAN(v);                                                   \
        }                                                                      \
        T m = acc[0];                                                          \
        for (int l = 1; l < 8; ++l) m = acc[l] CMP m ? acc[l] : m;             \
        return nan ? NANV : m;                                                 \
    }
DEF_EXT_ROW(max_row_f32, float, >, ISNAN_F, NAN)
DEF_EXT_ROW(max_row_f64, double, >, ISNAN_F, NAN)
DEF_EXT_ROW(max_row_i64, int64_t, >, ISNAN_I, 0)
DEF_EXT_ROW(min_row_f32, float, <, ISNAN_F, NAN)
DEF_EXT_ROW(min_row_f64, double, <, ISNAN_F, NAN)
DEF_EXT_ROW(min_row_i64, int64_t, <, ISNAN_I, 0)

/* Position of the first extremum; a NaN counts as the extremum. */
#define DEF_ARG_ROW(NAME, T, CMP, ISNAN)                                       \
    static inline int64_t NAME(const T *p, int64_t n) {                        \
        int64_t best = 0;                                                      \
        T bv = p[0];                                                           \
        if (ISNAN(bv)) return 0;                                               \
        for (int64_t i = 1; i < n; ++i) {                                      \
            T v = p[i];                                                        \
            if (ISNAN(v)) return i;                                            \
            if (v CMP bv) {                                                    \
                bv = v;                                                        \
                best = i;                                                      \
            }                                                                  \
        }                                                                      \
        return best;                                                           \
    }
DEF_ARG_ROW(argmax_row_f32, float, >, ISNAN_F)
DEF_ARG_ROW(argmax_row_f64, double, >, ISNAN_F)
DEF_ARG_ROW(argmax_row_i64, int64_t, >, ISNAN_I)
DEF_ARG_ROW(argmin_row_f32, float, <, ISNAN_F)
DEF_ARG_ROW(argmin_row_f64, double, <, ISNAN_F)
DEF_ARG_ROW(argmin_row_i64, int64_t, <, ISNAN_I)

/* log(sum(exp(p))) with the max subtracted so nothing overflows. */
/* sum(exp(p - m)) in float lanes per 4096-block, blocks added in double. */
CG_KERNEL double expsum_row_f32(const float *p, int64_t n, float m) {
    double dacc[16] = {0};
    int64_t i = 0;
    while (i + 16 <= n) {
        float acc[16] = {0}; /* terms are <= 1: 256 per lane stay accurate */
        int64_t end = n - i < 4096 ? n : i + 4096;
        for (; i + 16 <= end; i += 16) {
            CG_UNROLL(16) for (int l = 0; l < 16; ++l) acc[l] += cg_expf_poly(p[i + l] - m);
        }
        CG_UNROLL(16) for (int l = 0; l < 16; ++l) dacc[l] += acc[l];
    }
    double s = 0.0;
    for (; i < n; ++i) s += cg_expf_poly(p[i] - m);
    for (int l = 0; l < 16; ++l) s += dacc[l];
    return s;
}

CG_KERNEL float lse_row_f32(const float *p, int64_t n) {
    float m = max_row_f32(p, n);
    if (isnan(m) || isinf(m)) return m;
    return m + logf((float)expsum_row_f32(p, n, m));
}

static inline double lse_row_f64(const double *p, int64_t n) {
    double m = max_row_f64(p, n);
    if (isnan(m) || isinf(m)) return m;
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += exp(p[i] - m);
    return m + log(s);
}

/* Two-pass variance (mean first) in double. */
#define DEF_VAR_ROW(NAME, T, SUMROW)                                           \
    static inline double NAME(const T *p, int64_t n, double denom) {           \
        double mean = SUMROW(p, n) / (double)n;                                \
        double acc[4] = {0};                                                   \
        int64_t i = 0;                                                         \
        for (; i + 4 <= n; i += 4) {                                           \
            CG_UNROLL(4) for (int l = 0; l < 4; ++l) {                         \
                double d = (double)p[i + l] - mean;                            \
                acc[l] += d * d;                                               \
            }                                                                  \
        }                                                                      \
        double s = (acc[0] + acc[1]) + (acc[2] + acc[3]);                      \
        for (; i < n; ++i) {                                                   \
            double d = (double)p[i] - mean;                                    \
            s += d * d;                                                        \
        }                                                                      \
        return s / denom;                                                      \
    }
DEF_VAR_ROW(var_row_f32, float, sum_row_f32)
DEF_VAR_ROW(var_row_f64, double, sum_row_f64)

/* Row driver: out[o] = EXPR over the run at a + off(o), for every output. */
typedef void (*row_fn)(const void *src, const rplan *pl, void *dst, const rargs *ra);

#define ROW_DRIVER_A(ATTR, NAME, T, OT, EXPR)                                  \
    ATTR static void NAME(const void *src, const rplan *pl, void *dst, const rargs *ra) { \
        const T *a = (const T *)src;                                           \
        OT *out = (OT *)dst;                                                   \
        int64_t idx[CG_MAX_DIMS] = {0}, off = 0, n = pl->R;                    \
        (void)ra;                                                              \
        for (int64_t o = 0; o < pl->K; ++o) {                                  \
            const T *p = a + off;                                              \
            out[o] = (EXPR);                                                   \
            walk_next(pl->nk, pl->kshape, pl->kstride, idx, &off);             \
        }                                                                      \
    }
#define ROW_DRIVER(NAME, T, OT, EXPR) ROW_DRIVER_A(, NAME, T, OT, EXPR)
ROW_DRIVER(rows_sum_f32, float, float, (float)(sum_row_f32(p, n) * ra->scale))
ROW_DRIVER(rows_sum_f64, double, double, sum_row_f64(p, n) * ra->scale)
ROW_DRIVER(rows_sum_i64, int64_t, int64_t, sum_row_i64(p, n))
ROW_DRIVER(rows_max_f32, float, float, max_row_f32(p, n))
ROW_DRIVER(rows_max_f64, double, double, max_row_f64(p, n))
ROW_DRIVER(rows_max_i64, int64_t, int64_t, max_row_i64(p, n))
ROW_DRIVER(rows_min_f32, float, float, min_row_f32(p, n))
ROW_DRIVER(rows_min_f64, double, double, min_row_f64(p, n))
ROW_DRIVER(rows_min_i64, int64_t, int64_t, min_row_i64(p, n))
ROW_DRIVER(rows_argmax_f32, float, int64_t, argmax_row_f32(p, n))
ROW_DRIVER(rows_argmax_f64, double, int64_t, argmax_row_f64(p, n))
ROW_DRIVER(rows_argmax_i64, int64_t, int64_t, argmax_row_i64(p, n))
ROW_DRIVER(rows_argmin_f32, float, int64_t, argmin_row_f32(p, n))
ROW_DRIVER(rows_argmin_f64, double, int64_t, argmin_row_f64(p, n))
ROW_DRIVER(rows_argmin_i64, int64_t, int64_t, argmin_row_i64(p, n))
ROW_DRIVER(rows_lse_f32, float, float, lse_row_f32(p, n))
ROW_DRIVER(rows_lse_f64, double, double, lse_row_f64(p, n))
#ifdef CG_AVX2
ROW_DRIVER_A(CG_TARGET_AVX2, rows_lse_f32_avx2, float, float, lse_row_f32(p, n))
#endif
ROW_DRIVER(rows_var_f32, float, float, (float)var_row_f32(p, n, ra->denom))
ROW_DRIVER(rows_var_f64, double, double, var_row_f64(p, n, ra->denom))

static row_fn pick_row(int kind, cg_dtype dt) {
    int f32 = dt == CG_FLOAT32, f64 = dt == CG_FLOAT64, i64 = dt == CG_INT64;
    switch (kind) {
    case RK_SUM:
    case RK_MEAN: return f32 ? rows_sum_f32 : f64 ? rows_sum_f64 : i64 ? rows_sum_i64 : NULL;
    case RK_MAX: return f32 ? rows_max_f32 : f64 ? rows_max_f64 : i64 ? rows_max_i64 : NULL;
    case RK_MIN: return f32 ? rows_min_f32 : f64 ? rows_min_f64 : i64 ? rows_min_i64 : NULL;
    case RK_ARGMAX: return f32 ? rows_argmax_f32 : f64 ? rows_argmax_f64 : i64 ? rows_argmax_i64 : NULL;
    case RK_ARGMIN: return f32 ? rows_argmin_f32 : f64 ? rows_argmin_f64 : i64 ? rows_argmin_i64 : NULL;
    case RK_LSE:
#ifdef CG_AVX2
        if (f32 && cpu_has_avx2) return rows_lse_f32_avx2;
#endif
        return f32 ? rows_lse_f32 : f64 ? rows_lse_f64 : NULL;
    case RK_VAR: return f32 ? rows_var_f32 : f64 ? rows_var_f64 : NULL;
    default: return NULL;
    }
}

/* --------------------------------------------------------- column kernels */
/* The innermost kept dim (length kin) has stride 1: for each setting of the
 * outer kept dims, combine kin-long contiguous rows over every reduced index.
 * acc: (kin,) accumulators. */
typedef cg_status (*col_fn)(const void *src, const rplan *pl, void *dst, const rargs *ra);

#define COL_SUM_DRIVER(NAME, T, ACC, FINAL)                                    \
    static cg_status NAME(const void *src, const rplan *pl, void *dst, const rargs *ra) { \
        const T *a = (const T *)src;                                           \
        T *out = (T *)dst;                                                     \
        int64_t kin = pl->kshape[pl->nk - 1], nouter = pl->K / kin;            \
        ACC *acc = (ACC *)malloc((size_t)kin * sizeof(ACC));                   \
        if (!acc) return cg__err(CG_ERR_NOMEM, "reduction: out of memory");    \
        int64_t oidx[CG_MAX_DIMS] = {0}, ooff = 0;                             \
        for (int64_t o = 0; o < nouter; ++o) {                                 \
            for (int64_t k = 0; k < kin; ++k) acc[k] = 0;                      \
            int64_t ridx[CG_MAX_DIMS] = {0}, roff = 0;                         \
            for (int64_t r = 0; r < pl->R; ++r) {                              \
                const T *p = a + ooff + roff;                                  \
                for (int64_t k = 0; k < kin; ++k) acc[k] += (ACC)p[k];         \
                walk_next(pl->nr, pl->rshape, pl->rstride, ridx, &roff);       \
            }                                                                  \
            T *q = out + o * kin;                                              \
            for (int64_t k = 0; k < kin; ++k) q[k] = FINAL;                    \
            walk_next(pl->nk - 1, pl->kshape, pl->kstride, oidx, &ooff);       \
        }                                                                      \
        free(acc);                                                             \
        return CG_OK;                                                          \
    }
COL_SUM_DRIVER(cols_sum_f32, float, double, (float)(acc[k] * ra->scale))
COL_SUM_DRIVER(cols_sum_f64, double, double, acc[k] * ra->scale)
COL_SUM_DRIVER(cols_sum_i64, int64_t, uint64_t, (int64_t)acc[k])

/* max / min straight into the output rows; a NaN sticks once it is there. */
#define COL_EXT_DRIVER(NAME, T, CMP, ISNAN)                                    \
    static cg_status NAME(const void *src, const rplan *pl, void *dst, const rargs *ra) { \
        const T *a = (const T *)src;                                           \
        T *out = (T *)dst;                                                     \
        int64_t kin = pl->kshape[pl->nk - 1], nouter = pl->K / kin;            \
        int64_t oidx[CG_MAX_DIMS] = {0}, ooff = 0;                             \
        (void)ra;                                                              \
        for (int64_t o = 0; o < nouter; ++o) {                                 \
            T *q = out + o * kin;                                              \
            memcpy(q, a + ooff, (size_t)kin * sizeof(T));                      \
            int64_t ridx[CG_MAX_DIMS] = {0}, roff = 0;                         \
            walk_next(pl->nr, pl->rshape, pl->rstride, ridx, &roff);           \
            for (int64_t r = 1; r < pl->R; ++r) {                              \
                const T *p = a + ooff + roff;                                  \
                for (int64_t k = 0; k < kin; ++k) {                            \
                    T v = p[k];                                                \
                    q[k] = (v CMP q[k] || ISNAN(v)) ? v : q[k];                \
                }                                                              \
                walk_next(pl->nr, pl->rshape, pl->rstride, ridx, &roff);       \
            }                                                                  \
            walk_next(pl->nk - 1, pl->kshape, pl->kstride, oidx, &ooff);       \
        }                                                                      \
        return CG_OK;                                                          \
    }
COL_EXT_DRIVER(cols_max_f32, float, >, ISNAN_F)
COL_EXT_DRIVER(cols_max_f64, double, >, ISNAN_F)
COL_EXT_DRIVER(cols_max_i64, int64_t, >, ISNAN_I)
COL_EXT_DRIVER(cols_min_f32, float, <, ISNAN_F)
COL_EXT_DRIVER(cols_min_f64, double, <, ISNAN_F)
COL_EXT_DRIVER(cols_min_i64, int64_t, <, ISNAN_I)

static col_fn pick_col(int kind, cg_dtype dt) {
    int f32 = dt == CG_FLOAT32, f64 = dt == CG_FLOAT64, i64 = dt == CG_INT64;
    switch (kind) {
    case RK_SUM:
    case RK_MEAN: return f32 ? cols_sum_f32 : f64 ? cols_sum_f64 : i64 ? cols_sum_i64 : NULL;
    case RK_MAX: return f32 ? cols_max_f32 : f64 ? cols_max_f64 : i64 ? cols_max_i64 : NULL;
    case RK_MIN: return f32 ? cols_min_f32 : f64 ? cols_min_f64 : i64 ? cols_min_i64 : NULL;
    default: return NULL;
    }
}

/* ------------------------------------------------------------ dims/shape */
/* mask[d] = 1 for every reduced dim. dims NULL / ndims 0: all dims. */
static cg_status parse_dims(const char *fn, const cg_tensor *a, const int *dims, int ndims,
                            unsigned char *mask) {
    memset(mask, 0, CG_MAX_DIMS);
    if (!dims || ndims == 0) {
        memset(mask, 1, (size_t)a->ndim);
        return CG_OK;
    }
    if (ndims < 0 || ndims > CG_MAX_DIMS)
        return cg__err(CG_ERR_VALUE, "%s: %d dims given (expected 0..%d)", fn, ndims, CG_MAX_DIMS);
    unsigned char seen[CG_MAX_DIMS] = {0};
    for (int i = 0; i < ndims; ++i) {
        int d;
        CG_TRY(cg__norm_dim(fn, dims[i], a->ndim, &d));
        if (seen[d])
            return cg__err(CG_ERR_VALUE, "%s: dim %d appears more than once in dims", fn, dims[i]);
        seen[d] = 1;
        if (a->ndim) mask[d] = 1;
    }
    return CG_OK;
}

static int reduced_shape(int ndim, const int64_t *shape, const unsigned char *mask, int keepdim,
                         int64_t *out) {
    int n = 0;
    for (int d = 0; d < ndim; ++d) {
        if (!mask[d]) out[n++] = shape[d];
        else if (keepdim) out[n++] = 1;
    }
    return n;
}

static const char *kind_fn(int kind) {
    static const char *const names[] = {"cg_sum", "cg_mean", "cg_max", "cg_min",
                                        "cg_argmax", "cg_argmin", "cg_logsumexp", "cg_var"};
    return names[kind];
}

/* Device form of the loops below: r (allocated on a's device, K > 0)
 * receives the reduction of a over the dims in mask. The backend gets the
 * reduced dims as int parameters (ascending) and, for var, the correction;
 * an empty reduction is filled with the identity here, so every device
 * kernel sees R > 0. */
static cg_status reduce_device(int dev, int kind, cg_tensor *a, const unsigned char *mask,
                               int64_t R, double correction, cg_tensor *r) {
    static const char *const names[] = {"sum", "mean", "amax", "amin",
                                        "argmax", "argmin", "logsumexp", "var"};
    if (R == 0) {
        double fill = kind == RK_LSE ? -INFINITY : (kind == RK_SUM ? 0.0 : NAN);
        return cg__kernel(dev, "fill_", 1, 1, &r, 1, &fill, 0, NULL);
    }
    int64_t axes[CG_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < a->ndim; ++d)
        if (mask[d]) axes[n++] = d;
    cg_tensor *ts[2] = {r, a};
    return cg__kernel(dev, names[kind], 1, 2, ts, 1, &correction, n, axes);
}

/* The unrecorded reduction: a new contiguous tensor. */
static cg_status reduce_raw(cg_tensor *a, const unsigned char *mask, int keepdim, int kind,
                            double correction, cg_tensor **out) {
    const char *fn = kind_fn(kind);
    cg_dtype dt = a->dtype;
    int float_only = kind == RK_MEAN || kind == RK_LSE || kind == RK_VAR;
    if (!cg__is_float(dt) && (float_only || dt != CG_INT64))
        return cg__err(CG_ERR_DTYPE, "%s: unsupported dtype %s (expected float32 or float64%s)", fn,
                       cg_dtype_name(dt), float_only ? "" : " or int64");
    cg_dtype odt = (kind == RK_ARGMAX || kind == RK_ARGMIN) ? CG_INT64 : dt;
    int64_t oshape[CG_MAX_DIMS];
    int ond = reduced_shape(a->ndim, a->shape, mask, keepdim, oshape);
    rplan pl;
    make_plan(a, mask, kind == RK_ARGMAX || kind == RK_ARGMIN, &pl);
    if (pl.R == 0 && pl.K != 0 &&
        (kind == RK_MAX || kind == RK_MIN || kind == RK_ARGMAX || kind == RK_ARGMIN))
        return cg__err(CG_ERR_VALUE,
                       "%s: cannot reduce over a zero-size dim (the operation has no identity)", fn);
    cg_tensor *r;
    int dev = cg__dev(a);
    CG_TRY(cg__new_on(dev, odt, ond, oshape, 0, &r));
    if (dev) {
        cg_status st = pl.K ? reduce_device(dev, kind, a, mask, pl.R, correction, r) : CG_OK;
        if (st) {
            cg_tensor_free(r);
            return st;
        }
        goto done;
    }
    rargs ra;
    ra.scale = kind == RK_MEAN ? 1.0 / (double)pl.R : 1.0;
    double denom = (double)pl.R - correction;
    ra.denom = denom > 0.0 ? denom : 0.0;
    if (pl.K == 0) goto done;
    if (pl.R == 0) { /* empty reduction: the identity (mean, var: NaN) */
        double fill = kind == RK_LSE ? -INFINITY : (kind == RK_SUM ? 0.0 : NAN);
        for (int64_t i = 0; i < pl.K; ++i) cg__store(cg__ptr(r), odt, i, fill);
        goto done;
    }
    if (pl.nr == 0 || (pl.nr == 1 && pl.rstride[0] == 1)) {
        pick_row(kind, dt)(cg__ptr(a), &pl, cg__ptr(r), &ra);
        goto done;
    }
    col_fn col = pick_col(kind, dt);
    if (col && pl.nk >= 1 && pl.kstride[pl.nk - 1] == 1) {
        cg_status st = col(cg__ptr(a), &pl, cg__ptr(r), &ra);
        if (st) {
            cg_tensor_free(r);
            return st;
        }
        goto done;
    }
    {
        /* Pack as (kept..., reduced...) contiguous, then one run per output. */
        int64_t shp[CG_MAX_DIMS], str[CG_MAX_DIMS];
        int n = 0;
        for (int i = 0; i < pl.nk; ++i, ++n) shp[n] = pl.kshape[i], str[n] = pl.kstride[i];
        for (int i = 0; i < pl.nr; ++i, ++n) shp[n] = pl.rshape[i], str[n] = pl.rstride[i];
        cg_tensor *v = NULL, *c = NULL;
        cg_status st = cg__view(a, n, shp, str, a->offset, &v);
        if (!st) st = cg__new(dt, n, shp, 0, &c);
        if (!st) st = cg__copy_elems(c, v);
        cg_tensor_free(v);
        if (st) {
            cg_tensor_free(c);
            cg_tensor_free(r);
            return st;
        }
        rplan pk;
        pk.nk = pl.K > 1 ? 1 : 0;
        pk.kshape[0] = pl.K;
        pk.kstride[0] = pl.R;
        pk.nr = 1;
        pk.rshape[0] = pl.R;
        pk.rstride[0] = 1;
        pk.K = pl.K;
        pk.R = pl.R;
        pick_row(kind, dt)(cg__ptr(c), &pk, cg__ptr(r), &ra);
        cg_tensor_free(c);
    }
done:
    *out = r;
    return CG_OK;
}

/* ------------------------------------------------------------- autograd */
/* iparam layout of the reduction nodes: [0] input ndim, [1..8] input shape,
 * [9..16] reduced-dim mask, [17] keepdim. */
enum { RP_NDIM = 0, RP_SHAPE = 1, RP_MASK = 1 + CG_MAX_DIMS, RP_KEEP = 1 + 2 * CG_MAX_DIMS,
       RP_COUNT = 2 + 2 * CG_MAX_DIMS };

static void store_rparams(cg_node *node, const cg_tensor *a, const unsigned char *mask,
                          int keepdim) {
    node->iparam[RP_NDIM] = a->ndim;
    for (int d = 0; d < CG_MAX_DIMS; ++d) {
        node->iparam[RP_SHAPE + d] = d < a->ndim ? a->shape[d] : 1;
        node->iparam[RP_MASK + d] = d < a->ndim ? mask[d] : 0;
    }
    node->iparam[RP_KEEP] = keepdim != 0;
    node->n_iparam = RP_COUNT;
}

typedef struct rinfo {
    int ndim, keepdim, ndims;
    int64_t shape[CG_MAX_DIMS];
    int64_t kshape[CG_MAX_DIMS]; /* output shape with keepdim */
    int dims[CG_MAX_DIMS];       /* the reduced dims, ascending */
    double n;                    /* elements per output */
} rinfo;

static void load_rparams(const cg_node *node, rinfo *ri) {
    ri->ndim = (int)node->iparam[RP_NDIM];
    ri->keepdim = (int)node->iparam[RP_KEEP];
    ri->ndims = 0;
    ri->n = 1.0;
    for (int d = 0; d < ri->ndim; ++d) {
        ri->shape[d] = node->iparam[RP_SHAPE + d];
        int m = node->iparam[RP_MASK + d] != 0;
        ri->kshape[d] = m ? 1 : ri->shape[d];
        if (m) {
            ri->dims[ri->ndims++] = d;
            ri->n *= (double)ri->shape[d];
        }
    }
}

/* g reshaped to the keepdim output shape (new reference). */
static cg_status to_keepdim(const rinfo *ri, cg_tensor *g, cg_tensor **out) {
    if (ri->keepdim) {
        cg_tensor_retain(g);
        *out = g;
        return CG_OK;
    }
    return cg_reshape(g, ri->ndim, ri->kshape, out);
}

/* g broadcast back to the input shape. */
static cg_status expand_back(const rinfo *ri, cg_tensor *g, cg_tensor **out) {
    cg_tensor *gk;
    CG_TRY(to_keepdim(ri, g, &gk));
    cg_status st = cg_expand(gk, ri->ndim, ri->shape, out);
    cg_tensor_free(gk);
    return st;
}

static cg_status sum_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    rinfo ri;
    load_rparams(node, &ri);
    return expand_back(&ri, gout[0], &gin[0]);
}

static cg_status mean_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    rinfo ri;
    load_rparams(node, &ri);
    cg_tensor *t;
    CG_TRY(cg_mul_scalar(gout[0], 1.0 / ri.n, &t));
    cg_status st = expand_back(&ri, t, &gin[0]);
    cg_tensor_free(t);
    return st;
}

/* d var / dx = 2 (x - mean) / (n - correction), times g. */
static cg_status var_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    rinfo ri;
    load_rparams(node, &ri);
    double denom = ri.n - node->fparam[0];
    if (denom < 0.0) denom = 0.0;
    cg_tensor *x = NULL, *m = NULL, *d = NULL, *gk = NULL, *t = NULL;
    cg_status st = cg__saved(node, 0, &x);
    if (!st) st = cg_mean(x, ri.dims, ri.ndims, 1, &m);
    if (!st) st = cg_sub(x, m, &d);
    if (!st) st = to_keepdim(&ri, gout[0], &gk);
    if (!st) st = cg_mul(d, gk, &t);
    if (!st) st = cg_mul_scalar(t, 2.0 / denom, &gin[0]);
    cg_tensor_free(x);
    cg_tensor_free(m);
    cg_tensor_free(d);
    cg_tensor_free(gk);
    cg_tensor_free(t);
    return st;
}

/* The gradient is shared evenly by all elements equal to the extremum. */
static cg_status extremum_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    rinfo ri;
    load_rparams(node, &ri);
    cg_tensor *x = NULL, *y = NULL, *yk = NULL, *mask = NULL, *maskf = NULL, *cnt = NULL,
              *gk = NULL, *q = NULL;
    cg_status st = cg__saved(node, 0, &x);
    if (!st) st = cg__saved(node, 1, &y);
    if (!st) st = to_keepdim(&ri, y, &yk);
    if (!st) st = cg_eq(x, yk, &mask);
    if (!st) st = cg_to_dtype(mask, x->dtype, &maskf);
    if (!st) st = cg_sum(maskf, ri.dims, ri.ndims, 1, &cnt);
    if (!st) st = to_keepdim(&ri, gout[0], &gk);
    if (!st) st = cg_div(gk, cnt, &q);
    if (!st) st = cg_mul(maskf, q, &gin[0]);
    cg_tensor_free(x);
    cg_tensor_free(y);
    cg_tensor_free(yk);
    cg_tensor_free(mask);
    cg_tensor_free(maskf);
    cg_tensor_free(cnt);
    cg_tensor_free(gk);
    cg_tensor_free(q);
    return st;
}

/* d lse / dx = exp(x - lse) (the softmax over the reduced dims). */
static cg_status lse_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    rinfo ri;
    load_rparams(node, &ri);
    cg_tensor *x = NULL, *y = NULL, *yk = NULL, *d = NULL, *e = NULL, *gk = NULL;
    cg_status st = cg__saved(node, 0, &x);
    if (!st) st = cg__saved(node, 1, &y);
    if (!st) st = to_keepdim(&ri, y, &yk);
    if (!st) st = cg_sub(x, yk, &d);
    if (!st) st = cg_exp(d, &e);
    if (!st) st = to_keepdim(&ri, gout[0], &gk);
    if (!st) st = cg_mul(e, gk, &gin[0]);
    cg_tensor_free(x);
    cg_tensor_free(y);
    cg_tensor_free(yk);
    cg_tensor_free(d);
    cg_tensor_free(e);
    cg_tensor_free(gk);
    return st;
}

static const cg_op OP_SUM = {"sum", sum_backward};
static const cg_op OP_MEAN = {"mean", mean_backward};
static const cg_op OP_VAR = {"var", var_backward};
static const cg_op OP_MAX = {"max", extremum_backward};
static const cg_op OP_MIN = {"min", extremum_backward};
static const cg_op OP_LSE = {"logsumexp", lse_backward};

/* Reduce, then record (input saved as slot 0, output as slot 1 when asked). */
static cg_status reduce_op(const cg_op *op, int kind, cg_tensor *a, const int *dims, int ndims,
                           int keepdim, double correction, int save_in, int save_out,
                           cg_tensor **out) {
    unsigned char mask[CG_MAX_DIMS];
    CG_TRY(parse_dims(kind_fn(kind), a, dims, ndims, mask));
    cg_tensor *r;
    CG_TRY(reduce_raw(a, mask, keepdim, kind, correction, &r));
    if (cg__wants_grad1(a)) {
        cg_node *node;
        cg_status st = cg__record(op, 1, &a, 1, &r, &node);
        if (!st) {
            store_rparams(node, a, mask, keepdim);
            node->fparam[0] = correction;
            if (save_in) st = cg__save(node, a);
            if (!st && save_out) st = cg__save_output(node, 0);
        }
        if (st) {
            cg_tensor_free(r);
            return st;
        }
    }
    *out = r;
    return CG_OK;
}

cg_status cg_sum(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    if (a->dtype == CG_BOOL) { /* counts: sum as int64 like PyTorch */
        cg_tensor *ai;
        CG_TRY(cg_to_dtype(a, CG_INT64, &ai));
        cg_status st = reduce_op(&OP_SUM, RK_SUM, ai, dims, ndims, keepdim, 0.0, 0, 0, out);
        cg_tensor_free(ai);
        return st;
    }
    return reduce_op(&OP_SUM, RK_SUM, a, dims, ndims, keepdim, 0.0, 0, 0, out);
}

cg_status cg_mean(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    return reduce_op(&OP_MEAN, RK_MEAN, a, dims, ndims, keepdim, 0.0, 0, 0, out);
}

cg_status cg_var(cg_tensor *a, const int *dims, int ndims, double correction, int keepdim,
                 cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    if (!(correction >= 0.0) || isinf(correction))
        return cg__err(CG_ERR_VALUE, "cg_var: correction must be finite and >= 0 (got %g)", correction);
    return reduce_op(&OP_VAR, RK_VAR, a, dims, ndims, keepdim, correction, 1, 0, out);
}

cg_status cg_max(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    return reduce_op(&OP_MAX, RK_MAX, a, dims, ndims, keepdim, 0.0, 1, 1, out);
}

cg_status cg_min(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    return reduce_op(&OP_MIN, RK_MIN, a, dims, ndims, keepdim, 0.0, 1, 1, out);
}

cg_status cg_logsumexp(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    return reduce_op(&OP_LSE, RK_LSE, a, dims, ndims, keepdim, 0.0, 1, 1, out);
}

static cg_status arg_reduce(int kind, cg_tensor *a, int dim, int keepdim, int flatten_all,
                            cg_tensor **out) {
    unsigned char mask[CG_MAX_DIMS];
    if (flatten_all) {
        CG_TRY(parse_dims(kind_fn(kind), a, NULL, 0, mask));
    } else {
        CG_TRY(parse_dims(kind_fn(kind), a, &dim, 1, mask));
    }
    return reduce_raw(a, mask, keepdim, kind, 0.0, out);
}

cg_status cg_argmax(cg_tensor *a, int dim, int keepdim, int flatten_all, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    return arg_reduce(RK_ARGMAX, a, dim, keepdim, flatten_all, out);
}

cg_status cg_argmin(cg_tensor *a, int dim, int keepdim, int flatten_all, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    return arg_reduce(RK_ARGMIN, a, dim, keepdim, flatten_all, out);
}

/* ------------------------------------------------------------ sum_to_shape */
static cg_status sum_to_shape_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    rinfo ri;
    load_rparams(node, &ri);
    return cg_expand(gout[0], ri.ndim, ri.shape, &gin[0]);
}

static const cg_op OP_SUM_TO_SHAPE = {"sum_to_shape", sum_to_shape_backward};

cg_status cg_sum_to_shape(cg_tensor *a, int ndim, const int64_t *shape, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    CG_TRY(cg__check_shape_arg("cg_sum_to_shape", ndim, shape));
    unsigned char mask[CG_MAX_DIMS] = {0};
    int lead = a->ndim - ndim, any = 0;
    char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
    if (lead < 0)
        return cg__err(CG_ERR_SHAPE, "cg_sum_to_shape: cannot sum shape %s down to shape %s (more dims)",
                       cg__shape_str(a->ndim, a->shape, b1, sizeof b1),
                       cg__shape_str(ndim, shape, b2, sizeof b2));
    for (int d = 0; d < a->ndim; ++d) {
        if (d < lead) {
            mask[d] = 1;
        } else if (shape[d - lead] == 1 && a->shape[d] != 1) {
            mask[d] = 1;
        } else if (shape[d - lead] != a->shape[d]) {
            return cg__err(CG_ERR_SHAPE, "cg_sum_to_shape: cannot sum shape %s down to shape %s (dim %d: %lld vs %lld)",
                           cg__shape_str(a->ndim, a->shape, b1, sizeof b1),
                           cg__shape_str(ndim, shape, b2, sizeof b2), d - lead,
                           (long long)a->shape[d], (long long)shape[d - lead]);
        }
        any |= mask[d];
    }
    if (!any && lead == 0) {
        cg_tensor_retain(a);
        *out = a;
        return CG_OK;
    }
    cg_tensor *src = a, *ai = NULL;
    if (a->dtype == CG_BOOL) {
        CG_TRY(cg_to_dtype(a, CG_INT64, &ai));
        src = ai;
    }
    cg_tensor *r;
    cg_status st = reduce_raw(src, mask, 1, RK_SUM, 0.0, &r);
    cg_tensor_free(ai);
    CG_TRY(st);
    /* r is fresh and contiguous with the target's element count: only the
     * header changes (the leading dims of size 1 go away). */
    r->ndim = ndim;
    for (int d = 0; d < ndim; ++d) r->shape[d] = shape[d];
    cg__contig_strides(ndim, r->shape, r->strides);
    if (cg__wants_grad1(a)) {
        cg_node *node;
        st = cg__record(&OP_SUM_TO_SHAPE, 1, &a, 1, &r, &node);
        if (st) {
            cg_tensor_free(r);
            return st;
        }
        store_rparams(node, a, mask, 1);
    }
    *out = r;
    return CG_OK;
}

/* --------------------------------------------------------------- softmax */
/* x, y: (outer, D, inner) contiguous. inner == 1 runs row by row;
 * otherwise the max and sum are kept per inner position in m: (inner,) and
 * s: (inner,) so that every loop runs along contiguous memory. The
 * exponentials are written to y first and summed from there, which keeps the
 * exp loop free of a reduction (it vectorises). */
#define DEF_SOFTMAX(ATTR, NAME, T, EXP, LOG, MAXROW, SUMROW)                   \
    ATTR static cg_status NAME(const T *restrict x, T *restrict y, int64_t outer, int64_t D, \
                          int64_t inner, int log_out) {                        \
        if (D == 0) return CG_OK;                                              \
        if (inner == 1) {                                                      \
            for (int64_t o = 0; o < outer; ++o) {                              \
                const T *restrict xr = x + o * D;                              \
                T *restrict yr = y + o * D;                                    \
                T m = MAXROW(xr, D);                                           \
                for (int64_t i = 0; i < D; ++i) yr[i] = EXP(xr[i] - m);        \
                double s = SUMROW(yr, D);                                      \
                if (log_out) {                                                 \
                    T ls = LOG((T)s);                                          \
                    for (int64_t i = 0; i < D; ++i) yr[i] = (xr[i] - m) - ls;  \
                } else {                                                       \
                    T inv = (T)(1.0 / s);                                      \
                    for (int64_t i = 0; i < D; ++i) yr[i] *= inv;              \
                }                                                              \
            }                                                                  \
            return CG_OK;                                                      \
        }                                                                      \
        T *m = (T *)malloc((size_t)inner * sizeof(T));                         \
        double *s = (double *)malloc((size_t)inner * sizeof(double));          \
        if (!m || !s) {                                                        \
            free(m);                                                           \
            free(s);                                                           \
            return cg__err(CG_ERR_NOMEM, "softmax: out of memory");            \
        }                                                                      \
        for (int64_t o = 0; o < outer; ++o) {                                  \
            const T *xb = x + o * D * inner;                                   \
            T *yb = y + o * D * inner;                                         \
            memcpy(m, xb, (size_t)inner * sizeof(T));                          \
            for (int64_t d = 1; d < D; ++d) {                                  \
                const T *restrict xr = xb + d * inner;                         \
                for (int64_t i = 0; i < inner; ++i)                            \
                    m[i] = (xr[i] > m[i] || xr[i] != xr[i]) ? xr[i] : m[i];    \
            }                                                                  \
            for (int64_t i = 0; i < inner; ++i) s[i] = 0.0;                    \
            for (int64_t d = 0; d < D; ++d) {                                  \
                const T *restrict xr = xb + d * inner;                         \
                T *restrict yr = yb + d * inner;                               \
                for (int64_t i = 0; i < inner; ++i) yr[i] = EXP(xr[i] - m[i]); \
                for (int64_t i = 0; i < inner; ++i) s[i] += yr[i];             \
            }                                                                  \
            if (log_out) {                                                     \
                for (int64_t i = 0; i < inner; ++i) s[i] = (double)LOG((T)s[i]); \
                for (int64_t d = 0; d < D; ++d) {                              \
                    const T *restrict xr = xb + d * inner;                     \
                    T *restrict yr = yb + d * inner;                           \
                    for (int64_t i = 0; i < inner; ++i)                        \
                        yr[i] = (xr[i] - m[i]) - (T)s[i];                      \
                }                                                              \
            } else {                                                           \
                for (int64_t i = 0; i < inner; ++i) s[i] = 1.0 / s[i];         \
                for (int64_t d = 0; d < D; ++d) {                              \
                    T *restrict yr = yb + d * inner;                           \
                    for (int64_t i = 0; i < inner; ++i) yr[i] *= (T)s[i];      \
                }                                                              \
            }                                                                  \
        }                                                                      \
        free(m);                                                               \
        free(s);                                                               \
        return CG_OK;                                                          \
    }
DEF_SOFTMAX(, softmax_f32, float, cg_expf_poly, logf, max_row_f32, sum_row_f32)
DEF_SOFTMAX(, softmax_f64, double, exp, log, max_row_f64, sum_row_f64)
#ifdef CG_AVX2
DEF_SOFTMAX(CG_TARGET_AVX2, softmax_f32_avx2, float, cg_expf_poly, logf, max_row_f32, sum_row_f32)
#endif

/* ------------------------------------------- softmax / log_softmax backward
 * Each backward is one fused op of (g, y), y the forward's output, recorded
 * with its own derivative (so second derivatives work): one pass and one
 * kernel call where the composition took four (sum, exp or mul, mul, sub).
 *   softmax_backward(g, y)     = y * (g - sum(g * y))
 *   log_softmax_backward(g, y) = g - exp(y) * sum(g)
 * sums along the softmax dim, accumulated in double. */
#define DEF_SMBW(name, T, EXP)                                                         \
    static void name(const T *restrict g, const T *restrict y, T *restrict r,            \
                     int64_t outer, int64_t D, int64_t inner, int log_out) {            \
        for (int64_t o = 0; o < outer; ++o)                                             \
            for (int64_t i = 0; i < inner; ++i) {                                       \
                const int64_t base = o * D * inner + i;                                 \
                double s = 0.0;                                                         \
                if (log_out)                                                            \
                    for (int64_t d = 0; d < D; ++d) s += (double)g[base + d * inner];   \
                else                                                                    \
                    for (int64_t d = 0; d < D; ++d)                                     \
                        s += (double)g[base + d * inner] * (double)y[base + d * inner]; \
                const T st = (T)s;                                                      \
                for (int64_t d = 0; d < D; ++d) {                                       \
                    const int64_t k = base + d * inner;                                 \
                    r[k] = log_out ? g[k] - EXP(y[k]) * st : y[k] * (g[k] - st);        \
                }                                                                       \
            }                                                                           \
    }
DEF_SMBW(smbw_f32, float, cg_expf_poly)
DEF_SMBW(smbw_f64, double, exp)

static cg_status smbw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static const cg_op OP_SMBW = {"softmax_backward", smbw_backward};
static const cg_op OP_LOGSMBW = {"log_softmax_backward", smbw_backward};

/* The fused backward of (log_)softmax along dim d (normalised) of y. */
static cg_status softmax_bw(cg_tensor *g, cg_tensor *y, int d, int log_out, cg_tensor **out) {
    const char *fn = log_out ? "log_softmax_backward" : "softmax_backward";
    if (g->dtype != y->dtype || !cg__same_shape(g, y) || cg__dev(g) != cg__dev(y))
        return cg__err(CG_ERR_VALUE, "%s: the gradient (%s on '%s') and the output (%s on '%s') differ",
                       fn, cg_dtype_name(g->dtype), cg__device_label(cg__dev(g)),
                       cg_dtype_name(y->dtype), cg__device_label(cg__dev(y)));
    int64_t outer = 1, D = 1, inner = 1;
    for (int i = 0; i < y->ndim; ++i) {
        if (i < d) outer *= y->shape[i];
        else if (i == d) D = y->shape[i];
        else inner *= y->shape[i];
    }
    cg_tensor *r = NULL;
    const int dev = cg__dev(y);
    cg_status st;
    if (dev) { /* the backend reads g and y in any layout */
        CG_TRY(cg__new_on(dev, y->dtype, y->ndim, y->shape, 0, &r));
        int64_t ip = d;
        cg_tensor *ts[3] = {r, g, y};
        st = r->numel ? cg__kernel(dev, fn, 1, 3, ts, 0, NULL, 1, &ip) : CG_OK;
    } else {
        cg_tensor *gc = NULL, *yc = NULL;
        st = cg__contig(g, &gc);
        if (!st) st = cg__contig(y, &yc);
        if (!st) st = cg__new(y->dtype, y->ndim, y->shape, 0, &r);
        if (!st && y->dtype != CG_FLOAT32 && y->dtype != CG_FLOAT64)
            st = cg__err(CG_ERR_DTYPE, "%s: unsupported dtype %s on the cpu", fn,
                         cg_dtype_name(y->dtype));
        else if (!st && y->dtype == CG_FLOAT32)
            smbw_f32((const float *)cg__ptr(gc), (const float *)cg__ptr(yc), (float *)cg__ptr(r),
                     outer, D, inner, log_out);
        else if (!st)
            smbw_f64((const double *)cg__ptr(gc), (const double *)cg__ptr(yc), (double *)cg__ptr(r),
                     outer, D, inner, log_out);
        cg_tensor_free(gc);
        cg_tensor_free(yc);
    }
    if (!st && cg__wants_grad2(g, y)) {
        cg_tensor *ins[2] = {g, y};
        cg_node *node;
        st = cg__record(log_out ? &OP_LOGSMBW : &OP_SMBW, 2, ins, 1, &r, &node);
        if (!st) {
            node->iparam[0] = d;
            node->iparam[1] = log_out;
            node->n_iparam = 2;
            st = cg__save(node, g);
        }
        if (!st) st = cg__save(node, y);
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

/* Derivatives of the fused backward, with upstream gradient u (sums S along
 * the dim):
 *   softmax:     d/dg = softmax_backward(u, y),
 *                d/dy = u * (g - S(g y)) - g * S(u y)
 *   log_softmax: d/dg = u - S(u exp(y)),
 *                d/dy = -u * exp(y) * S(g) */
static cg_status smbw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    int dim = (int)node->iparam[0], log_out = (int)node->iparam[1];
    cg_tensor *u = gout[0], *g = NULL, *y = NULL;
    cg_tensor *t[6] = {NULL};
    cg_status st = cg__saved(node, 0, &g);
    if (!st) st = cg__saved(node, 1, &y);
    if (!st && log_out) {
        st = cg_exp(y, &t[0]);                                       /* e */
        if (!st && node->needs_grad[0]) {
            st = cg_mul(u, t[0], &t[1]);
            if (!st) st = cg_sum(t[1], &dim, 1, 1, &t[2]);
            if (!st) st = cg_sub(u, t[2], &gin[0]);
        }
        if (!st && node->needs_grad[1]) {
            st = cg_sum(g, &dim, 1, 1, &t[3]);
            if (!st) st = cg_mul(u, t[0], &t[4]);
            if (!st) st = cg_mul(t[4], t[3], &t[5]);
            if (!st) st = cg_neg(t[5], &gin[1]);
        }
    } else if (!st) {
        if (node->needs_grad[0]) st = softmax_bw(u, y, dim, 0, &gin[0]);
        if (!st && node->needs_grad[1]) {
            st = cg_mul(g, y, &t[0]);
            if (!st) st = cg_sum(t[0], &dim, 1, 1, &t[1]);
            if (!st) st = cg_sub(g, t[1], &t[2]);
            if (!st) st = cg_mul(u, t[2], &t[3]);                    /* u (g - S(g y)) */
            if (!st) st = cg_mul(u, y, &t[4]);
            cg_tensor *s = NULL, *gs = NULL;
            if (!st) st = cg_sum(t[4], &dim, 1, 1, &s);
            if (!st) st = cg_mul(g, s, &gs);
            if (!st) st = cg_sub(t[3], gs, &gin[1]);
            cg_tensor_free(s);
            cg_tensor_free(gs);
        }
    }
    for (int k = 0; k < 6; ++k) cg_tensor_free(t[k]);
    cg_tensor_free(g);
    cg_tensor_free(y);
    return st;
}

static cg_status softmax_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *y = NULL;
    cg_status st = cg__saved(node, 0, &y);
    if (!st) st = softmax_bw(gout[0], y, (int)node->iparam[0], 0, &gin[0]);
    cg_tensor_free(y);
    return st;
}

static cg_status log_softmax_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *y = NULL;
    cg_status st = cg__saved(node, 0, &y);
    if (!st) st = softmax_bw(gout[0], y, (int)node->iparam[0], 1, &gin[0]);
    cg_tensor_free(y);
    return st;
}

static const cg_op OP_SOFTMAX = {"softmax", softmax_backward};
static const cg_op OP_LOG_SOFTMAX = {"log_softmax", log_softmax_backward};

static cg_status softmax_common(const char *fn, cg_tensor *a, int dim, int log_out,
                                cg_tensor **out) {
    if (!cg__is_float(a->dtype))
        return cg__err(CG_ERR_DTYPE, "%s: unsupported dtype %s (expected float32 or float64)", fn,
                       cg_dtype_name(a->dtype));
    int d;
    CG_TRY(cg__norm_dim(fn, dim, a->ndim, &d));
    int64_t outer = 1, D = 1, inner = 1;
    for (int i = 0; i < a->ndim; ++i) {
        if (i < d) outer *= a->shape[i];
        else if (i == d) D = a->shape[i];
        else inner *= a->shape[i];
    }
    cg_tensor *c = NULL, *r;
    int dev = cg__dev(a);
    cg_status st;
    if (dev) { /* the backend reads a in any layout */
        CG_TRY(cg__new_on(dev, a->dtype, a->ndim, a->shape, 0, &r));
        int64_t ip = d;
        cg_tensor *ts[2] = {r, a};
        st = r->numel ? cg__kernel(dev, log_out ? "log_softmax" : "softmax", 1, 2, ts, 0, NULL, 1, &ip)
                      : CG_OK;
        goto record;
    }
    CG_TRY(cg__contig(a, &c));
    st = cg__new(a->dtype, a->ndim, a->shape, 0, &r);
    if (st) {
        cg_tensor_free(c);
        return st;
    }
    if (a->dtype == CG_FLOAT32) {
        cg_status (*k)(const float *restrict, float *restrict, int64_t, int64_t, int64_t, int) =
            softmax_f32;
#ifdef CG_AVX2
        if (cpu_has_avx2) k = softmax_f32_avx2;
#endif
        st = k((const float *)cg__ptr(c), (float *)cg__ptr(r), outer, D, inner, log_out);
    } else {
        st = softmax_f64((const double *)cg__ptr(c), (double *)cg__ptr(r), outer, D, inner, log_out);
    }
    cg_tensor_free(c);
record:
    if (!st && cg__wants_grad1(a)) {
        cg_node *node;
        st = cg__record(log_out ? &OP_LOG_SOFTMAX : &OP_SOFTMAX, 1, &a, 1, &r, &node);
        if (!st) {
            node->iparam[0] = d;
            node->n_iparam = 1;
            st = cg__save_output(node, 0);
        }
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

cg_status cg_softmax(cg_tensor *a, int dim, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    return softmax_common("cg_softmax", a, dim, 0, out);
}

cg_status cg_log_softmax(cg_tensor *a, int dim, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    return softmax_common("cg_log_softmax", a, dim, 1, out);
}
