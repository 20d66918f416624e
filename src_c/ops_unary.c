/* ops_unary.c -- elementwise unary ops and activations, plus the fused
 * backward ops they use (sigmoid_backward, tanh_backward, gelu_backward,
 * threshold_backward). Each fused op is recorded with its own derivative, so
 * second derivatives work through them. Kernels are row functions run by the
 * strided iterator from ops_binary.c. */
/* Vectorisation options for the row loops: see the note in ops_binary.c. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math")
#endif
#include "cg_internal.h"
#include "cg_formula.h"

/* C99 <math.h> has no M_PI family. */
#define K_SQRT1_2 0.70710678118654752440     /* 1/sqrt(2) */
#define K_INV_SQRT_2PI 0.39894228040143267794 /* 1/sqrt(2 pi) */
#define K_SQRT_2_PI 0.79788456080286535588   /* sqrt(2/pi), tanh-GELU */
#define K_GELU_C 0.044715                    /* cubic coefficient, tanh-GELU */

/* ------------------------------------------------- vectorisable float math
 * libm's expf / logf / tanhf / erff are calls the compiler cannot vectorise
 * (a tanhf loop measured ~15x slower than the vector loop). These
 * branch-free versions inline into the row loops, which then vectorise.
 * float32 only; float64 keeps libm. */
static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* exp: Cephes' polynomial on r = x - n ln2 (|r| <= ln2/2); 2^n applied as
 * two exact power-of-two factors so subnormal and overflowing results round
 * correctly. Max error < 1 ulp over [-104, 89] (checked against double exp);
 * exp(-inf) = 0, exp(inf) = inf, NaN propagates. */
static inline float vexpf(float x) {
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 89.0f ? 89.0f : xc;
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = xc * 1.44269504088896341f + magic;
    float n = t - magic;
    int32_t k = (int32_t)(f2u(t) - f2u(magic)); /* n as an integer, in [-151, 129] */
    float r = xc - n * 0.693359375f;            /* ln2 split in two for exactness */
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t k1 = k / 2, k2 = k - k1; /* each in [-76, 65]: normal powers of two */
    return p * u2f((uint32_t)(k1 + 127) << 23) * u2f((uint32_t)(k2 + 127) << 23);
}
/* expm1: Taylor series near 0 where exp(x) - 1 would cancel. */
static inline float vexpm1f(float x) {
    float s = x * (1.0f + x * (1.0f / 2 + x * (1.0f / 6 + x * (1.0f / 24 + x * (1.0f / 120 +
              x * (1.0f / 720 + x * (1.0f / 5040 + x * (1.0f / 40320))))))));
    return fabsf(x) < 0.5f ? s : vexpf(x) - 1.0f;
}
/* tanh: Cephes' odd polynomial for |x| < 0.625, 1 - 2 / (exp(2|x|) + 1)
 * above (about 1.3 ulp max). */
static inline float vtanhf(float x) {
    float ax = fabsf(x), z = x * x;
    float s = ((((-5.70498872745E-3f * z + 2.06390887954E-2f) * z - 5.37397155531E-2f) * z +
                1.33314422036E-1f) * z - 3.33332819422E-1f) * z * x + x;
    float b = 1.0f - 2.0f / (vexpf(2.0f * ax) + 1.0f);
    b = x < 0 ? -b : b;
    return ax < 0.625f ? s : b;
}
/* log: Cephes' logf (max error < 1 ulp, checked over all positive floats
 * against double log); subnormals are rescaled; log(0) = -inf, log(<0) =
 * NaN, log(inf) = inf, NaN propagates. */
static inline float vlogf(float x) {
    int sub = x < 1.17549435e-38f; /* subnormal (or <= 0): scale by 2^25 */
    float xs = sub ? x * 33554432.0f : x;
    uint32_t u = f2u(xs);
    int32_t e = (int32_t)((u >> 23) & 0xff) - 126 - (sub ? 25 : 0);
    float m = u2f((u & 0x007fffffu) | 0x3f000000u); /* mantissa in [0.5, 1) */
    int lo = m < 0.707106781186547524f;               /* recentre on [sqrt(.5), sqrt(2)) */
    e = lo ? e - 1 : e;
    m = lo ? m + m - 1.0f : m - 1.0f;
    float fe = (float)e, z = m * m;
    float y = ((((((((7.0376836292E-2f * m - 1.1514610310E-1f) * m + 1.1676998740E-1f) * m -
                    1.2420140846E-1f) * m + 1.4249322787E-1f) * m - 1.6668057665E-1f) * m +
                 2.0000714765E-1f) * m - 2.4999993993E-1f) * m + 3.3333331174E-1f) * m * z;
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    float r = m + y + 0.693359375f * fe;
    r = x == 0 ? -INFINITY : r;
    r = x < 0 ? NAN : r;
    r = x == INFINITY ? x : r;
    return x != x ? x : r;
}
/* log1p(u) = log(w) * u / (w - 1) with w = 1 + u: the factor corrects the
 * rounding of 1 + u (about 2.4 ulp max). */
static inline float vlog1pf(float u) {
    float w = 1.0f + u;
    return w == 1.0f ? u : vlogf(w) * (u / (w - 1.0f));
}
/* erf: Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), the same
 * approximation PyTorch's vectorised CPU erf uses. */
static inline float verff(float x) {
    float ax = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float r = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t +
               0.254829592f) * t;
    float y = 1.0f - r * vexpf(-x * x);
    return x < 0 ? -y : y;
}

/* Row functions also get an AVX2 clone chosen once at load time (GCC
 * target_clones / ifunc, x86-64 Linux): the transcendental rows are compute
 * bound and run ~1.7x faster 8-wide. The clone enables AVX2 only, not FMA,
 * so both clones round identically (results do not depend on the CPU). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(CG_NO_TARGET_CLONES)
#define CG_ROW_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CG_ROW_CLONES
#endif

/* --------------------------------------------------------------- kernels */
/* o = EXPR(v). SETUP declares per-row constants from prm (double[4]). */
#define UN_ROW(NAME, T, SETUP, EXPR)                                                   \
    CG_ROW_CLONES static void NAME(int64_t n, char *const *p, const int64_t *s,        \
                                   const double *prm) {                               \
        (void)prm;                                                                     \
        T *restrict o = (T *)p[0];                                                     \
        const T *a = (const T *)p[1];                                                  \
        const int64_t so = s[0], sa = s[1];                                            \
        SETUP;                                                                         \
        if (so == 1 && sa == 1) {                                                      \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T v = a[i];                                                      \
                o[i] = (EXPR);                                                         \
            }                                                                          \
        } else {                                                                       \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T v = a[i * sa];                                                 \
                o[i * so] = (EXPR);                                                    \
            }                                                                          \
        }                                                                              \
    }
#define NOSETUP ((void)0)
/* Float rows with per-type constants c0, c1 from prm[0], prm[1]. */
#define UN_ROWS_F(NAME, EF, ED)                                                        \
    UN_ROW(NAME##_f32, float, const float c0 = (float)prm[0]; const float c1 = (float)prm[1]; \
           (void)c0; (void)c1, EF)                                                     \
    UN_ROW(NAME##_f64, double, const double c0 = prm[0]; const double c1 = prm[1];     \
           (void)c0; (void)c1, ED)

/* Integer negation / abs through uint64 so INT64_MIN wraps as in PyTorch
 * instead of being undefined. */
UN_ROWS_F(neg, -v, -v)
UN_ROW(neg_i64, int64_t, NOSETUP, (int64_t)(0 - (uint64_t)v))
UN_ROWS_F(exp, vexpf(v), exp(v))
UN_ROWS_F(log, vlogf(v), log(v))
UN_ROWS_F(sqrt, sqrtf(v), sqrt(v))
UN_ROWS_F(abs, fabsf(v), fabs(v))
UN_ROW(abs_i64, int64_t, NOSETUP, (int64_t)(v < 0 ? 0 - (uint64_t)v : (uint64_t)v))
/* sign(NaN) is 0, as PyTorch's CPU kernel gives. */
UN_ROWS_F(sign, (float)((v > 0) - (v < 0)), (double)((v > 0) - (v < 0)))
UN_ROW(sign_i64, int64_t, NOSETUP, (int64_t)((v > 0) - (v < 0)))
/* rint rounds half to even in the default rounding mode (torch.round). */
UN_ROWS_F(round, rintf(v), rint(v))
UN_ROWS_F(floor, floorf(v), floor(v))
UN_ROWS_F(ceil, ceilf(v), ceil(v))
UN_ROW(copy_i64, int64_t, NOSETUP, v)
/* relu keeps NaN (v < 0 is false for NaN), like PyTorch. */
UN_ROWS_F(relu, v < 0 ? 0 : v, v < 0 ? 0 : v)
UN_ROW(relu_i64, int64_t, NOSETUP, v < 0 ? 0 : v)
UN_ROWS_F(leaky, v > 0 ? v : v * c0, v > 0 ? v : v * c0)
UN_ROWS_F(elu, v > 0 ? v : c0 * vexpm1f(v), v > 0 ? v : c0 * expm1(v))
UN_ROWS_F(gelu, 0.5f * v * (1.0f + verff(v * (float)K_SQRT1_2)),
          0.5 * v * (1.0 + erf(v * K_SQRT1_2)))
UN_ROWS_F(gelu_tanh,
          0.5f * v * (1.0f + vtanhf((float)K_SQRT_2_PI * (v + (float)K_GELU_C * v * v * v))),
          0.5 * v * (1.0 + tanh(K_SQRT_2_PI * (v + K_GELU_C * v * v * v))))
/* With e = exp(-|v|) <= 1 nothing overflows, and e / (1 + e) keeps the
 * far negative tail (down to subnormals) accurate. */
static inline float sigmoidf_(float v) {
    float e = vexpf(-fabsf(v)), r = 1.0f / (1.0f + e);
    return v < 0 ? e * r : r;
}
static inline double sigmoid_(double v) {
    double e = exp(-fabs(v)), r = 1.0 / (1.0 + e);
    return v < 0 ? e * r : r;
}
UN_ROWS_F(sigmoid, sigmoidf_(v), sigmoid_(v))
UN_ROWS_F(tanh, vtanhf(v), tanh(v))
/* c0 = beta, c1 = threshold. max(z,0) + log1p(exp(-|z|)) == log1p(exp(z))
 * without overflow for large z. */
UN_ROWS_F(softplus,
          c0 * v > c1 ? v : ((c0 * v > 0 ? c0 * v : 0.0f) + vlog1pf(vexpf(-fabsf(c0 * v)))) / c0,
          c0 * v > c1 ? v : (fmax(c0 * v, 0.0) + log1p(exp(-fabs(c0 * v)))) / c0)
/* A clamp bound for int64 data, saturated: a plain cast of an infinite or
 * huge bound is undefined behaviour. (cg_clamp refuses NaN bounds; `none`
 * keeps the kernel defined even so.) */
static inline int64_t clamp_bound_i64(double b, int64_t none) {
    if (isnan(b)) return none;
    if (b <= -9.2e18) return INT64_MIN;
    if (b >= 9.2e18) return INT64_MAX;
    return (int64_t)b;
}
/* c0 = lo, c1 = hi; NaN passes through; lo > hi gives hi (min(max(v,lo),hi)). */
UN_ROWS_F(clamp, (v < c0 ? c0 : v) > c1 ? c1 : (v < c0 ? c0 : v),
          (v < c0 ? c0 : v) > c1 ? c1 : (v < c0 ? c0 : v))
UN_ROW(clamp_i64, int64_t,
       const int64_t lo = clamp_bound_i64(prm[0], INT64_MIN);
       const int64_t hi = clamp_bound_i64(prm[1], INT64_MAX),
       (v < lo ? lo : v) > hi ? hi : (v < lo ? lo : v))

/* Fused backward kernels: o = EXPR(g, v) with g the incoming gradient. */
#define GV_ROW(NAME, T, SETUP, EXPR)                                                   \
    CG_ROW_CLONES static void NAME(int64_t n, char *const *p, const int64_t *s,        \
                                   const double *prm) {                               \
        (void)prm;                                                                     \
        T *restrict o = (T *)p[0];                                                     \
        const T *ga = (const T *)p[1];                                                 \
        const T *va = (const T *)p[2];                                                 \
        const int64_t so = s[0], sg = s[1], sv = s[2];                                 \
        SETUP;                                                                         \
        if (so == 1 && sg == 1 && sv == 1) {                                           \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T g = ga[i], v = va[i];                                          \
                o[i] = (EXPR);                                                         \
            }                                                                          \
        } else if (so == 1 && sg == 0 && sv == 1) { /* g expanded (sum's backward) */  \
            const T g = ga[0];                                                         \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T v = va[i];                                                     \
                o[i] = (EXPR);                                                         \
            }                                                                          \
        } else {                                                                       \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T g = ga[i * sg], v = va[i * sv];                                \
                o[i * so] = (EXPR);                                                    \
            }                                                                          \
        }                                                                              \
    }
#define GV_ROWS_F(NAME, EF, ED)                                                        \
    GV_ROW(NAME##_f32, float, const float c0 = (float)prm[0]; const float c1 = (float)prm[1]; \
           const float c2 = (float)prm[2]; (void)c0; (void)c1; (void)c2, EF)          \
    GV_ROW(NAME##_f64, double, const double c0 = prm[0]; const double c1 = prm[1];     \
           const double c2 = prm[2]; (void)c0; (void)c1; (void)c2, ED)

/* v = sigmoid output */
GV_ROWS_F(sigbw, g * ((1.0f - v) * v), g * ((1.0 - v) * v))
/* v = tanh output */
GV_ROWS_F(tanhbw, g * (1.0f - v * v), g * (1.0 - v * v))
/* v = input: d/dx x Phi(x) = Phi(x) + x phi(x) */
GV_ROWS_F(gelubw,
          g * (0.5f * (1.0f + verff(v * (float)K_SQRT1_2)) +
               v * (float)K_INV_SQRT_2PI * vexpf(-0.5f * v * v)),
          g * (0.5 * (1.0 + erf(v * K_SQRT1_2)) + v * K_INV_SQRT_2PI * exp(-0.5 * v * v)))
/* tanh form: with t = tanh(k (v + c v^3)),
 * d/dv = 0.5 (1 + t) + 0.5 v (1 - t^2) k (1 + 3 c v^2) */
static inline float gelu_tanh_d_f32(float v) {
    float t = vtanhf((float)K_SQRT_2_PI * (v + (float)K_GELU_C * v * v * v));
    return 0.5f * (1.0f + t) +
           0.5f * v * (1.0f - t * t) * (float)K_SQRT_2_PI * (1.0f + 3.0f * (float)K_GELU_C * v * v);
}
static inline double gelu_tanh_d_f64(double v) {
    double t = tanh(K_SQRT_2_PI * (v + K_GELU_C * v * v * v));
    return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * K_SQRT_2_PI * (1.0 + 3.0 * K_GELU_C * v * v);
}
GV_ROWS_F(gelubw_tanh, g * gelu_tanh_d_f32(v), g * gelu_tanh_d_f64(v))
/* Mask kernels (relu / leaky_relu / clamp backward): c0 = lo, c1 = hi,
 * c2 = factor outside the range. "open": lo < v; "closed": lo <= v. */
GV_ROWS_F(mask_open, (v > c0 && v <= c1) ? g : g * c2, (v > c0 && v <= c1) ? g : g * c2)
GV_ROWS_F(mask_closed, (v >= c0 && v <= c1) ? g : g * c2, (v >= c0 && v <= c1) ? g : g * c2)

static cg__row_fn pick(cg_dtype d, cg__row_fn f32, cg__row_fn f64, cg__row_fn i64) {
    switch (d) {
    case CG_FLOAT32: return f32;
    case CG_FLOAT16: return f32; /* device only (host float16 is refused): a stand-in for the checks */
    case CG_FLOAT64: return f64;
    case CG_INT64: return i64;
    default: return NULL;
    }
}

/* ------------------------------------------------------ recording helpers */
enum { SAVE_IN = 1, SAVE_OUT = 2 };

/* Input saved first (slot 0), then the output. */
static cg_status record1(const cg_op *op, cg_tensor *a, cg_tensor *r, int save,
                         const double *prm, cg_node **node_out) {
    cg_node *node;
    CG_TRY(cg__record(op, 1, &a, 1, &r, &node));
    if (prm)
        for (int i = 0; i < 4; ++i) node->fparam[i] = prm[i];
    if (save & SAVE_IN) CG_TRY(cg__save(node, a));
    if (save & SAVE_OUT) CG_TRY(cg__save_output(node, 0));
    if (node_out) *node_out = node;
    return CG_OK;
}

typedef struct un_def {
    const char *fn;
    const cg_op *op;
    cg__row_fn f32, f64, i64; /* i64 NULL: floating dtypes only */
    int save;
} un_def;

static cg_status unary(const un_def *d, cg_tensor *a, const double *prm, cg_tensor **out) {
    static const double noprm[4] = {0, 0, 0, 0};
    cg__row_fn row = pick(a->dtype, d->f32, d->f64, d->i64);
    if (!row)
        return cg__err(CG_ERR_DTYPE, "%s: expected a %s tensor, got %s", d->fn,
                       d->i64 ? "float32, float64 or int64" : "floating point (float32 or float64)",
                       cg_dtype_name(a->dtype));
    cg_tensor *r;
    CG_TRY(cg__map1(d->fn + 3, a, a->dtype, a->dtype, row, prm ? prm : noprm, &r));
    if (cg__wants_grad1(a)) {
        cg_status st = record1(d->op, a, r, d->save, prm, NULL);
        if (st) {
            cg_tensor_free(r);
            return st;
        }
    }
    *out = r;
    return CG_OK;
}

/* --------------------------------------------------------- fused ops */
/* Records a fused backward op (inputs g and v) that saves both. */
static cg_status fused2(const char *fn, const cg_op *op, cg_tensor *g, cg_tensor *v,
                        cg__row_fn f32, cg__row_fn f64, const double *prm, int64_t iparam0,
                        cg_tensor **out) {
    cg_dtype dt = cg__promote(g->dtype, v->dtype);
    cg__row_fn row = pick(dt, f32, f64, NULL);
    if (!row) return cg__err(CG_ERR_DTYPE, "%s: floating point tensors expected", fn);
    cg_tensor *r;
    double kp[4] = {0, 0, 0, (double)iparam0}; /* device kernels read iparam0 as prm[3] */
    if (prm) kp[0] = prm[0], kp[1] = prm[1], kp[2] = prm[2];
    CG_TRY(cg__map2(fn, fn, g, v, dt, dt, row, kp, &r));
    if (cg__wants_grad2(g, v)) {
        cg_tensor *ins[2] = {g, v};
        cg_node *node;
        cg_status st = cg__record(op, 2, ins, 1, &r, &node);
        if (!st) {
            node->iparam[0] = iparam0;
            node->n_iparam = 1;
            st = cg__save(node, g);
        }
        if (!st) st = cg__save(node, v);
        if (st) {
            cg_tensor_free(r);
            return st;
        }
    }
    *out = r;
    return CG_OK;
}

static cg_status sigbw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static cg_status tanhbw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static cg_status gelubw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static cg_status maskbw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static const cg_op OP_SIGBW = {"sigmoid_backward", sigbw_backward};
static const cg_op OP_TANHBW = {"tanh_backward", tanhbw_backward};
static const cg_op OP_GELUBW = {"gelu_backward", gelubw_backward};
static const cg_op OP_MASKBW = {"threshold_backward", maskbw_backward};

/* g * y * (1 - y), y = sigmoid output. */
static cg_status sigmoid_bw(cg_tensor *g, cg_tensor *y, cg_tensor **out) {
    return fused2("sigmoid_backward", &OP_SIGBW, g, y, sigbw_f32, sigbw_f64, NULL, 0, out);
}
/* g * (1 - y^2), y = tanh output. */
static cg_status tanh_bw(cg_tensor *g, cg_tensor *y, cg_tensor **out) {
    return fused2("tanh_backward", &OP_TANHBW, g, y, tanhbw_f32, tanhbw_f64, NULL, 0, out);
}
/* g * gelu'(x). */
static cg_status gelu_bw(cg_tensor *g, cg_tensor *x, int approximate, cg_tensor **out) {
    if (approximate)
        return fused2("gelu_backward", &OP_GELUBW, g, x, gelubw_tanh_f32, gelubw_tanh_f64, NULL, 1,
                      out);
    return fused2("gelu_backward", &OP_GELUBW, g, x, gelubw_f32, gelubw_f64, NULL, 0, out);
}

/* g where lo (<|<=) x <= hi, g * outside elsewhere. Only g is an input: the
 * result is piecewise constant in x (zero derivative), so x is merely saved
 * and no gradient flows to it. */
static cg_status mask_bw(cg_tensor *g, cg_tensor *x, double lo, double hi, int lo_open,
                         double outside, cg_tensor **out) {
    double prm[4] = {lo, hi, outside, (double)lo_open};
    cg_dtype dt = g->dtype;
    cg__row_fn row = lo_open ? pick(dt, mask_open_f32, mask_open_f64, NULL)
                             : pick(dt, mask_closed_f32, mask_closed_f64, NULL);
    if (!row || x->dtype != dt)
        return cg__err(CG_ERR_DTYPE, "threshold_backward: dtypes %s and %s", cg_dtype_name(dt),
                       cg_dtype_name(x->dtype));
    cg_tensor *r;
    CG_TRY(cg__map2("threshold_backward", "threshold_backward", g, x, dt, dt, row, prm, &r));
    if (cg__wants_grad1(g)) {
        cg_node *node;
        cg_status st = cg__record(&OP_MASKBW, 1, &g, 1, &r, &node);
        if (!st) {
            node->fparam[0] = lo;
            node->fparam[1] = hi;
            node->fparam[2] = outside;
            node->iparam[0] = lo_open;
            node->n_iparam = 1;
            st = cg__save(node, x);
        }
        if (st) {
            cg_tensor_free(r);
            return st;
        }
    }
    *out = r;
    return CG_OK;
}

/* Saved slots 0 (g) and 1 (v) of a fused op. */
static cg_status saved2(cg_node *node, cg_tensor **g, cg_tensor **v) {
    *v = NULL;
    CG_TRY(cg__saved(node, 0, g));
    cg_status st = cg__saved(node, 1, v);
    if (st) {
        cg_tensor_free(*g);
        *g = NULL;
    }
    return st;
}

static cg_status sigbw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *g, *y, *res = NULL;
    CG_TRY(saved2(node, &g, &y));
    arena A = {{0}, 0, CG_OK};
    if (node->needs_grad[0]) A.st = sigmoid_bw(gout[0], y, &gin[0]);
    if (node->needs_grad[1]) { /* d/dy g y (1-y) = g (1 - 2y) */
        cg_tensor *t = A2(&A, cg_mul, gout[0], g);
        cg_tensor *u = AS(&A, cg_add_scalar, AS(&A, cg_mul_scalar, y, -2.0), 1.0);
        res = A2(&A, cg_mul, t, u);
    }
    cg_status st = arena_done(&A, res, node->needs_grad[1] ? &gin[1] : NULL);
    cg_tensor_free(g);
    cg_tensor_free(y);
    return st;
}

static cg_status tanhbw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *g, *y, *res = NULL;
    CG_TRY(saved2(node, &g, &y));
    arena A = {{0}, 0, CG_OK};
    if (node->needs_grad[0]) A.st = tanh_bw(gout[0], y, &gin[0]);
    if (node->needs_grad[1]) { /* d/dy g (1 - y^2) = -2 g y */
        cg_tensor *t = A2(&A, cg_mul, gout[0], g);
        res = AS(&A, cg_mul_scalar, A2(&A, cg_mul, t, y), -2.0);
    }
    cg_status st = arena_done(&A, res, node->needs_grad[1] ? &gin[1] : NULL);
    cg_tensor_free(g);
    cg_tensor_free(y);
    return st;
}

/* gelu''(x) built from differentiable ops (so third derivatives work too). */
static cg_tensor *gelu2(arena *A, cg_tensor *x, int approximate) {
    cg_tensor *x2 = A2(A, cg_mul, x, x);
    if (!approximate) { /* phi(x) (2 - x^2) */
        cg_tensor *phi =
            AS(A, cg_mul_scalar, A1(A, cg_exp, AS(A, cg_mul_scalar, x2, -0.5)), K_INV_SQRT_2PI);
        cg_tensor *q = AS(A, cg_add_scalar, AS(A, cg_mul_scalar, x2, -1.0), 2.0);
        return A2(A, cg_mul, phi, q);
    }
    /* t = tanh(u), u = k (x + c x^3), u' = k (1 + 3c x^2), u'' = 6 k c x:
     * gelu'' = (1 - t^2) (u' + 0.5 x (u'' - 2 t u'^2)) */
    const double k = K_SQRT_2_PI, c = K_GELU_C;
    cg_tensor *x3 = A2(A, cg_mul, x2, x);
    cg_tensor *u = AS(A, cg_mul_scalar, A2(A, cg_add, x, AS(A, cg_mul_scalar, x3, c)), k);
    cg_tensor *t = A1(A, cg_tanh, u);
    cg_tensor *up = AS(A, cg_add_scalar, AS(A, cg_mul_scalar, x2, 3.0 * c * k), k);
    cg_tensor *upp = AS(A, cg_mul_scalar, x, 6.0 * c * k);
    cg_tensor *one_m_t2 = AS(A, cg_add_scalar, AS(A, cg_mul_scalar, A2(A, cg_mul, t, t), -1.0), 1.0);
    cg_tensor *tup2 = AS(A, cg_mul_scalar, A2(A, cg_mul, t, A2(A, cg_mul, up, up)), -2.0);
    cg_tensor *inner = AS(A, cg_mul_scalar, A2(A, cg_mul, x, A2(A, cg_add, upp, tup2)), 0.5);
    return A2(A, cg_mul, one_m_t2, A2(A, cg_add, up, inner));
}

static cg_status gelubw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *g, *x, *res = NULL;
    int approximate = (int)node->iparam[0];
    CG_TRY(saved2(node, &g, &x));
    arena A = {{0}, 0, CG_OK};
    if (node->needs_grad[0]) A.st = gelu_bw(gout[0], x, approximate, &gin[0]);
    if (node->needs_grad[1]) {
        cg_tensor *t = A2(&A, cg_mul, gout[0], g);
        res = A2(&A, cg_mul, t, gelu2(&A, x, approximate));
    }
    cg_status st = arena_done(&A, res, node->needs_grad[1] ? &gin[1] : NULL);
    cg_tensor_free(g);
    cg_tensor_free(x);
    return st;
}

static cg_status maskbw_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *x;
    CG_TRY(cg__saved(node, 0, &x));
    cg_status st = mask_bw(gout[0], x, node->fparam[0], node->fparam[1], (int)node->iparam[0],
                           node->fparam[2], &gin[0]);
    cg_tensor_free(x);
    return st;
}

/* ------------------------------------------------------------- backward */
/* gin[0] = f(g, saved slot i). */
static cg_status with_saved(cg_node *node, int i, bin_api f, cg_tensor *g, cg_tensor **gin) {
    cg_tensor *s;
    CG_TRY(cg__saved(node, i, &s));
    cg_status st = f(g, s, &gin[0]);
    cg_tensor_free(s);
    return st;
}

static cg_status neg_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    return cg_neg(gout[0], &gin[0]);
}
static cg_status exp_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    return with_saved(node, 0, cg_mul, gout[0], gin); /* g * exp(x) */
}
static cg_status log_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    return with_saved(node, 0, cg_div, gout[0], gin); /* g / x */
}
static cg_status sqrt_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *y, *y2 = NULL; /* g / (2 sqrt(x)) */
    CG_TRY(cg__saved(node, 0, &y));
    cg_status st = cg_mul_scalar(y, 2.0, &y2);
    if (!st) st = cg_div(gout[0], y2, &gin[0]);
    cg_tensor_free(y);
    cg_tensor_free(y2);
    return st;
}
static cg_status abs_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *x, *s = NULL; /* g * sign(x) */
    CG_TRY(cg__saved(node, 0, &x));
    cg_status st = cg_sign(x, &s);
    if (!st) st = cg_mul(gout[0], s, &gin[0]);
    cg_tensor_free(x);
    cg_tensor_free(s);
    return st;
}
/* sign / round / floor / ceil: piecewise constant, zero gradient. */
static cg_status zero_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    const cg_out_meta *m = &node->out_meta[0];
    return cg__new_on(m->device, m->dtype, m->ndim, m->shape, 1, &gin[0]);
}
static cg_status relu_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *y; /* mask from the output: y > 0 exactly where x > 0 */
    CG_TRY(cg__saved(node, 0, &y));
    cg_status st = mask_bw(gout[0], y, 0.0, INFINITY, 1, 0.0, &gin[0]);
    cg_tensor_free(y);
    return st;
}
static cg_status leaky_relu_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *x;
    CG_TRY(cg__saved(node, 0, &x));
    cg_status st = mask_bw(gout[0], x, 0.0, INFINITY, 1, node->fparam[0], &gin[0]);
    cg_tensor_free(x);
    return st;
}
static cg_status clamp_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *x;
    CG_TRY(cg__saved(node, 0, &x));
    cg_status st = mask_bw(gout[0], x, node->fparam[0], node->fparam[1], 0, 0.0, &gin[0]);
    cg_tensor_free(x);
    return st;
}
static cg_status elu_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    /* where(x > 0, g, g * (y + alpha)); y + alpha = alpha exp(x) for x <= 0 */
    cg_tensor *x, *y = NULL, *zero = NULL, *res = NULL;
    CG_TRY(cg__saved(node, 0, &x));
    arena A = {{0}, 0, CG_OK};
    A.st = cg__saved(node, 1, &y);
    if (!A.st) A.st = cg__scalar_like(x, x->dtype, 0.0, &zero);
    cg_tensor *m = A2(&A, cg_gt, x, zero);
    cg_tensor *gy = A2(&A, cg_mul, gout[0], AS(&A, cg_add_scalar, y, node->fparam[0]));
    res = AW(&A, m, gout[0], gy);
    cg_status st = arena_done(&A, res, &gin[0]);
    cg_tensor_free(x);
    cg_tensor_free(y);
    cg_tensor_free(zero);
    return st;
}
static cg_status gelu_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *x;
    CG_TRY(cg__saved(node, 0, &x));
    cg_status st = gelu_bw(gout[0], x, node->fparam[0] != 0.0, &gin[0]);
    cg_tensor_free(x);
    return st;
}
static cg_status sigmoid_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *y;
    CG_TRY(cg__saved(node, 0, &y));
    cg_status st = sigmoid_bw(gout[0], y, &gin[0]);
    cg_tensor_free(y);
    return st;
}
static cg_status tanh_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *y;
    CG_TRY(cg__saved(node, 0, &y));
    cg_status st = tanh_bw(gout[0], y, &gin[0]);
    cg_tensor_free(y);
    return st;
}
static cg_status softplus_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    /* where(beta x > threshold, g, g * sigmoid(beta x)) */
    double beta = node->fparam[0], threshold = node->fparam[1];
    cg_tensor *x, *th = NULL, *res = NULL;
    CG_TRY(cg__saved(node, 0, &x));
    arena A = {{0}, 0, CG_OK};
    A.st = cg__scalar_like(x, x->dtype, threshold, &th);
    cg_tensor *z = AS(&A, cg_mul_scalar, x, beta);
    cg_tensor *gs = A2(&A, cg_mul, gout[0], A1(&A, cg_sigmoid, z));
    cg_tensor *m = A2(&A, cg_gt, z, th);
    res = AW(&A, m, gout[0], gs);
    cg_status st = arena_done(&A, res, &gin[0]);
    cg_tensor_free(x);
    cg_tensor_free(th);
    return st;
}

static const cg_op OP_NEG = {"neg", neg_backward};
static const cg_op OP_EXP = {"exp", exp_backward};
static const cg_op OP_LOG = {"log", log_backward};
static const cg_op OP_SQRT = {"sqrt", sqrt_backward};
static const cg_op OP_ABS = {"abs", abs_backward};
static const cg_op OP_SIGN = {"sign", zero_backward};
static const cg_op OP_ROUND = {"round", zero_backward};
static const cg_op OP_FLOOR = {"floor", zero_backward};
static const cg_op OP_CEIL = {"ceil", zero_backward};
static const cg_op OP_RELU = {"relu", relu_backward};
static const cg_op OP_LEAKY_RELU = {"leaky_relu", leaky_relu_backward};
static const cg_op OP_ELU = {"elu", elu_backward};
static const cg_op OP_GELU = {"gelu", gelu_backward};
static const cg_op OP_SIGMOID = {"sigmoid", sigmoid_backward};
static const cg_op OP_TANH = {"tanh", tanh_backward};
static const cg_op OP_SOFTPLUS = {"softplus", softplus_backward};
static const cg_op OP_CLAMP = {"clamp", clamp_backward};

/* ------------------------------------------------------------- forwards */
static const un_def DEF_NEG = {"cg_neg", &OP_NEG, neg_f32, neg_f64, neg_i64, 0};
static const un_def DEF_EXP = {"cg_exp", &OP_EXP, exp_f32, exp_f64, NULL, SAVE_OUT};
static const un_def DEF_LOG = {"cg_log", &OP_LOG, log_f32, log_f64, NULL, SAVE_IN};
static const un_def DEF_SQRT = {"cg_sqrt", &OP_SQRT, sqrt_f32, sqrt_f64, NULL, SAVE_OUT};
static const un_def DEF_ABS = {"cg_abs", &OP_ABS, abs_f32, abs_f64, abs_i64, SAVE_IN};
static const un_def DEF_SIGN = {"cg_sign", &OP_SIGN, sign_f32, sign_f64, sign_i64, 0};
static const un_def DEF_ROUND = {"cg_round", &OP_ROUND, round_f32, round_f64, copy_i64, 0};
static const un_def DEF_FLOOR = {"cg_floor", &OP_FLOOR, floor_f32, floor_f64, copy_i64, 0};
static const un_def DEF_CEIL = {"cg_ceil", &OP_CEIL, ceil_f32, ceil_f64, copy_i64, 0};
static const un_def DEF_RELU = {"cg_relu", &OP_RELU, relu_f32, relu_f64, relu_i64, SAVE_OUT};
static const un_def DEF_LEAKY = {"cg_leaky_relu", &OP_LEAKY_RELU, leaky_f32, leaky_f64, NULL, SAVE_IN};
static const un_def DEF_ELU = {"cg_elu", &OP_ELU, elu_f32, elu_f64, NULL, SAVE_IN | SAVE_OUT};
static const un_def DEF_GELU = {"cg_gelu", &OP_GELU, gelu_f32, gelu_f64, NULL, SAVE_IN};
static const un_def DEF_GELU_TANH = {"cg_gelu", &OP_GELU, gelu_tanh_f32, gelu_tanh_f64, NULL, SAVE_IN};
static const un_def DEF_SIGMOID = {"cg_sigmoid", &OP_SIGMOID, sigmoid_f32, sigmoid_f64, NULL, SAVE_OUT};
static const un_def DEF_TANH = {"cg_tanh", &OP_TANH, tanh_f32, tanh_f64, NULL, SAVE_OUT};
static const un_def DEF_SOFTPLUS = {"cg_softplus", &OP_SOFTPLUS, softplus_f32, softplus_f64, NULL, SAVE_IN};
static const un_def DEF_CLAMP = {"cg_clamp", &OP_CLAMP, clamp_f32, clamp_f64, clamp_i64, SAVE_IN};

#define UNARY_API(NAME, DEF)                                  \
    cg_status NAME(cg_tensor *a, cg_tensor **out) {           \
        CG_CHECK_OUT(out);                                    \
        CG_CHECK_TD(a);                                        \
        return unary(&DEF, a, NULL, out);                     \
    }
UNARY_API(cg_neg, DEF_NEG)
UNARY_API(cg_exp, DEF_EXP)
UNARY_API(cg_log, DEF_LOG)
UNARY_API(cg_sqrt, DEF_SQRT)
UNARY_API(cg_abs, DEF_ABS)
UNARY_API(cg_sign, DEF_SIGN)
UNARY_API(cg_round, DEF_ROUND)
UNARY_API(cg_floor, DEF_FLOOR)
UNARY_API(cg_ceil, DEF_CEIL)
UNARY_API(cg_relu, DEF_RELU)
UNARY_API(cg_sigmoid, DEF_SIGMOID)
UNARY_API(cg_tanh, DEF_TANH)

cg_status cg_leaky_relu(cg_tensor *a, double negative_slope, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    if (isnan(negative_slope))
        return cg__err(CG_ERR_VALUE, "cg_leaky_relu: negative_slope is NaN");
    double prm[4] = {negative_slope, 0, 0, 0};
    return unary(&DEF_LEAKY, a, prm, out);
}

cg_status cg_elu(cg_tensor *a, double alpha, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    if (isnan(alpha)) return cg__err(CG_ERR_VALUE, "cg_elu: alpha is NaN");
    double prm[4] = {alpha, 0, 0, 0};
    return unary(&DEF_ELU, a, prm, out);
}

cg_status cg_gelu(cg_tensor *a, int approximate, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    if (approximate != 0 && approximate != 1)
        return cg__err(CG_ERR_VALUE, "cg_gelu: approximate must be 0 (erf) or 1 (tanh), got %d",
                       approximate);
    double prm[4] = {(double)approximate, 0, 0, 0};
    return unary(approximate ? &DEF_GELU_TANH : &DEF_GELU, a, prm, out);
}

cg_status cg_softplus(cg_tensor *a, double beta, double threshold, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    if (beta == 0.0 || isnan(beta) || isinf(beta))
        return cg__err(CG_ERR_VALUE, "cg_softplus: beta must be finite and non-zero, got %g", beta);
    if (isnan(threshold)) return cg__err(CG_ERR_VALUE, "cg_softplus: threshold is NaN");
    double prm[4] = {beta, threshold, 0, 0};
    return unary(&DEF_SOFTPLUS, a, prm, out);
}

cg_status cg_clamp(cg_tensor *a, double lo, double hi, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    if (isnan(lo) || isnan(hi))
        return cg__err(CG_ERR_VALUE, "cg_clamp: bounds must not be NaN (got %g, %g)", lo, hi);
    double prm[4] = {lo, hi, 0, 0};
    if (a->dtype == CG_INT64 || a->dtype == CG_BOOL) {
        /* Integer tensors stay int64 for integral (or infinite) bounds;
         * fractional bounds promote to float32 as in PyTorch. */
        int integral = (isinf(lo) || lo == floor(lo)) && (isinf(hi) || hi == floor(hi));
        if (a->dtype == CG_BOOL && integral)
            return cg__err(CG_ERR_DTYPE, "cg_clamp: not supported for bool tensors");
        if (!integral) return cg__map1("clamp", a, CG_FLOAT32, CG_FLOAT32, clamp_f32, prm, out);
    }
    return unary(&DEF_CLAMP, a, prm, out);
}
