/* ops_inplace.c -- in-place updates (optimizer steps, initialisation,
 * gradient accumulation). They write through the target's strides, so views
 * work, and bump the storage's version counter so that a tensor saved for
 * backward that was modified afterwards is detected. They are never
 * recorded: with grad mode on they refuse targets that require grad. */
/* Vectorisation options for the row loops: see the note in ops_binary.c. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math")
#endif
#include "cg_internal.h"

/* --------------------------------------------------------------- kernels */
/* o = EXPR(x, y) with x the target's old value, y the source's value and
 * c = prm[0]. The target may alias the source (a += a). */
#define IP_ROW2(NAME, T, TS, EXPR)                                                     \
    static void NAME(int64_t n, char *const *p, const int64_t *s, const double *prm) { \
        T *o = (T *)p[0];                                                              \
        const TS *b = (const TS *)p[1];                                                \
        const T c = (T)prm[0];                                                         \
        (void)c;                                                                       \
        const int64_t so = s[0], sb = s[1];                                            \
        if (so == 1 && sb == 1) {                                                      \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T x = o[i];                                                      \
                const TS y = b[i];                                                     \
                (void)x;                                                               \
                o[i] = (EXPR);                                                         \
            }                                                                          \
        } else if (so == 1 && sb == 0) {                                               \
            const TS y = b[0];                                                         \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T x = o[i];                                                      \
                (void)x;                                                               \
                o[i] = (EXPR);                                                         \
            }                                                                          \
        } else {                                                                       \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T x = o[i * so];                                                 \
                const TS y = b[i * sb];                                                \
                (void)x;                                                               \
                o[i * so] = (EXPR);                                                    \
            }                                                                          \
        }                                                                              \
    }

/* o = EXPR(x), c = prm[0]. */
#define IP_ROW1(NAME, T, EXPR)                                                         \
    static void NAME(int64_t n, char *const *p, const int64_t *s, const double *prm) { \
        T *o = (T *)p[0];                                                              \
        const T c = (T)prm[0];                                                         \
        (void)c;                                                                       \
        const int64_t so = s[0];                                                       \
        if (so == 1) {                                                                 \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T x = o[i];                                                      \
                (void)x;                                                               \
                o[i] = (EXPR);                                                         \
            }                                                                          \
        } else {                                                                       \
            for (int64_t i = 0; i < n; ++i) {                                          \
                const T x = o[i * so];                                                 \
                (void)x;                                                               \
                o[i * so] = (EXPR);                                                    \
            }                                                                          \
        }                                                                              \
    }

/* int64 arithmetic wraps through uint64 instead of overflowing (UB). */
IP_ROW2(addc_f32, float, float, x + c * y)
IP_ROW2(addc_f64, double, double, x + c * y)
IP_ROW2(addc_i64, int64_t, int64_t, (int64_t)((uint64_t)x + (uint64_t)c * (uint64_t)y))
IP_ROW2(mul_f32, float, float, x * y)
IP_ROW2(mul_f64, double, double, x * y)
IP_ROW2(mul_i64, int64_t, int64_t, (int64_t)((uint64_t)x * (uint64_t)y))
IP_ROW1(adds_f32, float, x + c)
IP_ROW1(adds_f64, double, x + c)
IP_ROW1(adds_i64, int64_t, (int64_t)((uint64_t)x + (uint64_t)c))
IP_ROW1(muls_f32, float, x * c)
IP_ROW1(muls_f64, double, x * c)
IP_ROW1(muls_i64, int64_t, (int64_t)((uint64_t)x * (uint64_t)c))
/* Fill by element size (the caller converts the value to the right bits). */
IP_ROW1(fill_f32, float, c)
IP_ROW1(fill_f64, double, c)
IP_ROW1(fill_i64, int64_t, c)
IP_ROW1(fill_u8, unsigned char, c)
/* Same-dtype copies move bits by element size; two float casts are common
 * enough (mixed precision) to get kernels, the rest go through
 * cg__copy_elems. */
IP_ROW2(copy_u8, unsigned char, unsigned char, y)
IP_ROW2(copy_u16, uint16_t, uint16_t, y) /* float16: host storage is copied as bits */
IP_ROW2(copy_u32, uint32_t, uint32_t, y)
IP_ROW2(copy_u64, uint64_t, uint64_t, y)
IP_ROW2(copy_f32_f64, float, double, (float)y)
IP_ROW2(copy_f64_f32, double, float, (double)y)

static cg__row_fn pick(cg_dtype d, cg__row_fn f32, cg__row_fn f64, cg__row_fn i64) {
    switch (d) {
    case CG_FLOAT32: return f32;
    case CG_FLOAT16: return f32; /* device only (check_compute_target refuses the host) */
    case CG_FLOAT64: return f64;
    case CG_INT64: return i64;
    default: return NULL;
    }
}

/* --------------------------------------------------------------- checks */
static cg_status check_target(const char *fn, const cg_tensor *a) {
    if (cg_is_grad_enabled() && a->requires_grad)
        return cg__err(CG_ERR_AUTOGRAD,
                       "%s: in-place op on a tensor that requires grad while grad mode is on; "
                       "wrap the update in no-grad",
                       fn);
    for (int d = 0; d < a->ndim; ++d)
        if (a->strides[d] == 0 && a->shape[d] > 1)
            return cg__err(CG_ERR_VALUE,
                           "%s: the target is an expanded view (stride 0 on dim %d of size %lld); "
                           "in-place writes would overlap in memory: clone() it first",
                           fn, d, (long long)a->shape[d]);
    return CG_OK;
}

/* A target the op computes into (not copy_, which only moves elements):
 * host float16 is a storage type, so its rows must never run here. */
static cg_status check_compute_target(const char *fn, const cg_tensor *a) {
    if (a->dtype == CG_FLOAT16 && !cg__dev(a)) return cg__half_refused(fn, "a");
    return check_target(fn, a);
}

static int category(cg_dtype d) { return d == CG_BOOL ? 0 : (d == CG_INT64 ? 1 : 2); }

static int is_integral(double s) { return s == floor(s) && fabs(s) < 9.2e18; }

/* src as a tensor of dst's dtype that can be read while dst is written:
 * src must broadcast to dst's shape; a copy is made when the dtype differs
 * or src overlaps dst's memory other than element for element. */
static cg_status prep_src(const char *fn, cg_tensor *dst, cg_tensor *src, cg_dtype dt,
                          cg_tensor **out) {
    int nd;
    int64_t shape[CG_MAX_DIMS];
    CG_TRY(cg__broadcast_shapes(fn, dst->ndim, dst->shape, src->ndim, src->shape, &nd, shape));
    int ok = nd == dst->ndim;
    for (int d = 0; ok && d < nd; ++d) ok = shape[d] == dst->shape[d];
    if (!ok) {
        char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
        return cg__err(CG_ERR_SHAPE, "%s: source of shape %s cannot be broadcast to the target's shape %s",
                       fn, cg__shape_str(src->ndim, src->shape, b1, sizeof b1),
                       cg__shape_str(dst->ndim, dst->shape, b2, sizeof b2));
    }
    if (src->storage == dst->storage && src->dtype == dt) {
        int same = src->offset == dst->offset && cg__same_shape(src, dst);
        for (int d = 0; same && d < src->ndim; ++d) same = src->strides[d] == dst->strides[d];
        if (!same) { /* e.g. a += a.T: read from a snapshot */
            cg_tensor *c;
            CG_TRY(cg__new_on(cg__dev(src), dt, src->ndim, src->shape, 0, &c));
            cg_status st = cg__copy_elems(c, src);
            if (st) {
                cg_tensor_free(c);
                return st;
            }
            *out = c;
            return CG_OK;
        }
    }
    return cg__cast_tmp(src, dt, out);
}

/* Runs row over (dst, src broadcast to dst); on a device, the in-place
 * kernel k on (dst, src) with prm[0]. */
static cg_status run2(const char *k, cg_tensor *dst, cg_tensor *src, cg__row_fn row,
                      const double *prm) {
    if (!dst->numel) return CG_OK;
    if (cg__dev(dst)) {
        cg_tensor *ts[2] = {dst, src};
        return cg__kernel(cg__dev(dst), k, 1, 2, ts, 1, prm, 0, NULL);
    }
    int64_t strides[2][CG_MAX_DIMS];
    memcpy(strides[0], dst->strides, sizeof dst->strides);
    cg__broadcast_strides(src, dst->ndim, dst->shape, strides[1]);
    cg__iter it;
    cg__iter_init(&it, dst->ndim, dst->shape, 2, strides);
    char *base[2] = {(char *)cg__ptr(dst), (char *)cg__ptr(src)};
    size_t es[2] = {cg_dtype_size(dst->dtype), cg_dtype_size(src->dtype)};
    cg__iter_run(&it, base, es, row, prm);
    return CG_OK;
}

static cg_status run1(const char *k, cg_tensor *dst, cg__row_fn row, const double *prm) {
    if (!dst->numel) return CG_OK;
    if (cg__dev(dst)) return cg__kernel(cg__dev(dst), k, 1, 1, &dst, 1, prm, 0, NULL);
    int64_t strides[1][CG_MAX_DIMS];
    memcpy(strides[0], dst->strides, sizeof dst->strides);
    cg__iter it;
    cg__iter_init(&it, dst->ndim, dst->shape, 1, strides);
    char *base[1] = {(char *)cg__ptr(dst)};
    size_t es[1] = {cg_dtype_size(dst->dtype)};
    cg__iter_run(&it, base, es, row, prm);
    return CG_OK;
}

/* a (op)= b: arithmetic targets only; b must not need a wider category
 * (an int64 target cannot take float values, as in PyTorch). */
static cg_status arith2(const char *fn, cg_tensor *a, cg_tensor *b, cg__row_fn f32,
                        cg__row_fn f64, cg__row_fn i64, double c) {
    cg_tensor *ab[2] = {a, b};
    CG_TRY(cg__same_device(fn, 2, ab, NULL));
    CG_TRY(check_compute_target(fn, a));
    cg__row_fn row = pick(a->dtype, f32, f64, i64);
    if (!row)
        return cg__err(CG_ERR_DTYPE, "%s: not supported for a %s target", fn, cg_dtype_name(a->dtype));
    if (category(b->dtype) > category(a->dtype))
        return cg__err(CG_ERR_DTYPE, "%s: result type %s can't be cast to the target's dtype %s", fn,
                       cg_dtype_name(b->dtype), cg_dtype_name(a->dtype));
    cg_tensor *cb;
    CG_TRY(prep_src(fn, a, b, a->dtype, &cb));
    double prm[1] = {c};
    cg_status st = run2(fn + 3, a, cb, row, prm);
    cg_tensor_free(cb);
    ++a->storage->version;
    return st;
}

cg_status cg_add_(cg_tensor *a, cg_tensor *b, double alpha) {
    CG_CHECK_TD(a);
    CG_CHECK_TD(b);
    if (a->dtype == CG_INT64 && !is_integral(alpha))
        return cg__err(CG_ERR_DTYPE, "cg_add_: alpha %g must be an integer for an int64 target", alpha);
    return arith2("cg_add_", a, b, addc_f32, addc_f64, addc_i64, alpha);
}

cg_status cg_mul_(cg_tensor *a, cg_tensor *b) {
    CG_CHECK_TD(a);
    CG_CHECK_TD(b);
    return arith2("cg_mul_", a, b, mul_f32, mul_f64, mul_i64, 0.0);
}

static cg_status arith1(const char *fn, cg_tensor *a, double s, cg__row_fn f32, cg__row_fn f64,
                        cg__row_fn i64) {
    CG_TRY(check_compute_target(fn, a));
    cg__row_fn row = pick(a->dtype, f32, f64, i64);
    if (!row)
        return cg__err(CG_ERR_DTYPE, "%s: not supported for a %s target", fn, cg_dtype_name(a->dtype));
    if (a->dtype == CG_INT64 && !is_integral(s))
        return cg__err(CG_ERR_DTYPE, "%s: result type float can't be cast to the target's dtype int64 (scalar %g)",
                       fn, s);
    double prm[1] = {s};
    cg_status st = run1(fn + 3, a, row, prm);
    ++a->storage->version;
    return st;
}

cg_status cg_add_scalar_(cg_tensor *a, double s) {
    CG_CHECK_TD(a);
    return arith1("cg_add_scalar_", a, s, adds_f32, adds_f64, adds_i64);
}

cg_status cg_mul_scalar_(cg_tensor *a, double s) {
    CG_CHECK_TSD(a);
    if (a->layout != CG_STRIDED) { /* row-sparse: scaling the stored rows scales the tensor */
        if (cg_is_grad_enabled() && a->requires_grad)
            return cg__err(CG_ERR_AUTOGRAD, "cg_mul_scalar_: in-place op on a tensor that requires grad "
                                            "while grad mode is on; wrap the update in no-grad");
        CG_TRY(arith1("cg_mul_scalar_", a->sp_values, s, muls_f32, muls_f64, muls_i64));
        ++a->storage->version;
        return CG_OK;
    }
    return arith1("cg_mul_scalar_", a, s, muls_f32, muls_f64, muls_i64);
}

static cg_status fill(const char *fn, cg_tensor *a, double value) {
    CG_TRY(check_compute_target(fn, a));
    double prm[1] = {value};
    cg__row_fn row;
    switch (a->dtype) {
    case CG_FLOAT32: row = fill_f32; break;
    case CG_FLOAT64: row = fill_f64; break;
    case CG_FLOAT16: row = fill_f32; break; /* device only (host float16 is refused) */
    case CG_INT64:
        if (isnan(value) || fabs(value) >= 9.2e18)
            return cg__err(CG_ERR_VALUE, "%s: value %g does not fit an int64 tensor", fn, value);
        prm[0] = trunc(value);
        row = fill_i64;
        break;
    default:
        prm[0] = value != 0.0; /* bool: any non-zero (and NaN) is true */
        row = fill_u8;
        break;
    }
    cg_status st = CG_OK;
    if (value == 0.0 && cg__is_contig(a) && !cg__dev(a)) { /* all-zero bits in every dtype */
        if (a->numel) memset(cg__ptr(a), 0, (size_t)a->numel * cg_dtype_size(a->dtype));
    } else {
        st = run1("fill_", a, row, prm);
    }
    ++a->storage->version;
    return st;
}

cg_status cg_zero_(cg_tensor *a) {
    CG_CHECK_TD(a);
    return fill("cg_zero_", a, 0.0);
}

cg_status cg_fill_(cg_tensor *a, double value) {
    CG_CHECK_TD(a);
    return fill("cg_fill_", a, value);
}

cg_status cg_copy_(cg_tensor *dst, cg_tensor *src) {
    static const double noprm[1] = {0.0};
    CG_CHECK_TA(dst);
    CG_CHECK_TA(src);
    CG_TRY(check_target("cg_copy_", dst));
    if (cg__dev(src) != cg__dev(dst)) { /* across devices: src moved first */
        cg_tensor *moved;
        int prev = cg_set_grad_enabled(0);
        cg_status st = cg_to_device(src, cg__dev(dst), &moved);
        cg_set_grad_enabled(prev);
        if (st) return st;
        st = cg_copy_(dst, moved);
        cg_tensor_free(moved);
        return st;
    }
    /* Other casts (float16 on the host included: cg__copy_elems rounds)
     * convert src first, then copy bits. */
    cg__row_fn row = NULL;
    cg_dtype read_as = dst->dtype;
    if (dst->dtype == CG_FLOAT32 && src->dtype == CG_FLOAT64) {
        row = copy_f32_f64;
        read_as = CG_FLOAT64;
    } else if (dst->dtype == CG_FLOAT64 && src->dtype == CG_FLOAT32) {
        row = copy_f64_f32;
        read_as = CG_FLOAT32;
    } else {
        size_t sz = cg_dtype_size(dst->dtype);
        row = sz == 1 ? copy_u8 : sz == 2 ? copy_u16 : (sz == 4 ? copy_u32 : copy_u64);
    }
    cg_tensor *cs;
    CG_TRY(prep_src("cg_copy_", dst, src, read_as, &cs));
    cg_status st = run2("copy_", dst, cs, row, noprm);
    cg_tensor_free(cs);
    ++dst->storage->version;
    return st;
}
