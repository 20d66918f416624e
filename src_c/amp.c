/* amp.c -- the fused unscale of mixed-precision training (GradScaler):
 * each gradient multiplied in place by 1/scale and its NaN/inf elements
 * counted in the same pass over memory (two passes, an inf check then a
 * multiply, read every gradient twice), one kernel per device for the
 * gradients that live on one (PyTorch's
 * _amp_foreach_non_finite_check_and_unscale_). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif
#include "cg_internal.h"
#include "cg_optim.h"
#include "optim_device.h"

#define CHUNK ((int64_t)1 << 30) /* int32 lane counters stay exact */


/* The finite test works on the bit pattern (finite iff the exponent bits
 * are not all ones), branch-free, so the count and the multiply vectorise
 * as one loop. Counted before scaling, as the separate inf check did. */
CG_SIMD_CLONES static int64_t unscale_f32(float *restrict x, int64_t n, float k) {
    int64_t nbad = 0;
    for (int64_t lo = 0; lo < n; lo += CHUNK) {
        const int64_t hi = n - lo < CHUNK ? n : lo + CHUNK;
        int32_t bad = 0;
        for (int64_t i = lo; i < hi; ++i) {
            int32_t b;
            memcpy(&b, x + i, sizeof b);
            bad += (b & 0x7fffffff) >= 0x7f800000;
            x[i] = x[i] * k;
        }
        nbad += bad;
    }
    return nbad;
}

CG_SIMD_CLONES static int64_t unscale_f64(double *restrict x, int64_t n, double k) {
    int64_t nbad = 0;
    for (int64_t i = 0; i < n; ++i) {
        int64_t b;
        memcpy(&b, x + i, sizeof b);
        nbad += (b & INT64_MAX) >= 0x7ff0000000000000LL;
        x[i] = x[i] * k;
    }
    return nbad;
}

/* A contiguous float32/float64 host block: count (when asked) and scale. */
static int64_t unscale_block(void *p, cg_dtype dt, int64_t n, double inv) {
    if (!n) return 0;
    return dt == CG_FLOAT32 ? unscale_f32(p, n, (float)inv) : unscale_f64(p, n, inv);
}

/* One host gradient; *bad gets its NaN/inf count. A strided one goes
 * through a contiguous copy written back (parameters' gradients are
 * contiguous, so this is rare); a row-sparse one scales its stored rows
 * and counts over its coalesced rows (what the inf check of
 * cg_tensor_stats counts, so duplicates summing to inf are counted). */
static cg_status unscale_host(cg_tensor *t, double inv, int64_t *bad) {
    *bad = 0;
    if (t->layout != CG_STRIDED) {
        cg_tensor *v = t->sp_values;
        if (t->sp_coalesced) {
            *bad = unscale_block(cg__ptr(v), v->dtype, v->numel, inv);
        } else {
            cg_tensor *sp;
            CG_TRY(cg__sparse_coalesced(t, &sp));
            cg_tensor *cv = sp->sp_values;
            cg_stats st = {0};
            cg__stats_add(cg__ptr(cv), cv->dtype == CG_FLOAT32, cv->numel, &st);
            *bad = st.nonfinite;
            cg_tensor_free(sp);
            (void)unscale_block(cg__ptr(v), v->dtype, v->numel, inv);
        }
        ++v->storage->version;
        return CG_OK;
    }
    if (cg__is_contig(t)) {
        *bad = unscale_block(cg__ptr(t), t->dtype, t->numel, inv);
        return CG_OK;
    }
    cg_tensor *c;
    CG_TRY(cg__contig(t, &c));
    *bad = unscale_block(cg__ptr(c), c->dtype, c->numel, inv);
    cg_status st = cg__copy_elems(t, c);
    cg_tensor_free(c);
    return st;
}

/* One device's gradients with one kernel, "amp_unscale_": (x_1..x_m
 * targets, counts int64 [m]; ) f[0] = inv_scale, i[j] = 1 when target j's
 * NaN/inf elements are counted (before it is scaled), 0 when it is only
 * scaled. A dense gradient is one counted target (any strides); a
 * coalesced row-sparse one its stored values; an uncoalesced one its
 * stored values (scaled) and its coalesced values (counted; a temporary,
 * scaled and discarded). Empty tensors are not passed. */
typedef struct {
    double inv;
    int64_t bad;
} unscale_ctx;

static cg_status device_unscale(int dev, int k, cg_tensor **ts, const int *idx, void *vctx) {
    unscale_ctx *ctx = vctx;
    (void)idx;
    const size_t cap = 2 * (size_t)k;
    cg_tensor **tg = malloc(sizeof *tg * cap);
    cg_tensor **held = calloc((size_t)k, sizeof *held);
    int64_t *flag = malloc(sizeof *flag * cap);
    int64_t *cnt = malloc(sizeof *cnt * cap);
    if (!tg || !held || !flag || !cnt) {
        free(tg);
        free(held);
        free(flag);
        free(cnt);
        return cg__err(CG_ERR_NOMEM, "cg_amp_unscale_: out of memory for %d tensors", k);
    }
    cg_status st = CG_OK;
    int m = 0;
    for (int j = 0; j < k && !st; ++j) {
        cg_tensor *t = ts[j];
        if (t->layout == CG_STRIDED) {
            if (t->numel) {
                tg[m] = t;
                flag[m++] = 1;
            }
            continue;
        }
        cg_tensor *v = t->sp_values;
        if (!v->numel) continue;
        tg[m] = v;
        flag[m++] = t->sp_coalesced;
        if (!t->sp_coalesced) {
            st = cg__sparse_coalesced(t, &held[j]);
            if (!st) {
                tg[m] = held[j]->sp_values;
                flag[m++] = 1;
            }
        }
    }
    if (!st && m) {
        const int64_t shape[1] = {m};
        st = cg__kernel_result(dev, "amp_unscale_", m, 0, tg, 1, &ctx->inv, m, flag, CG_INT64, 1,
                               shape, cnt);
        for (int j = 0; j < m && !st; ++j)
            if (flag[j]) ctx->bad += cnt[j];
    }
    for (int j = 0; j < k; ++j) {
        cg_tensor_free(held[j]);
        if (ts[j]->layout != CG_STRIDED) ++ts[j]->sp_values->storage->version;
    }
    free(held);
    free(tg);
    free(flag);
    free(cnt);
    return st;
}

cg_status cg_amp_unscale_(int n, cg_tensor *const *grads, double inv_scale, int64_t *nonfinite) {
    static const char *fn = "cg_amp_unscale_";
    if (nonfinite) *nonfinite = 0;
    if (n < 0) return cg__err(CG_ERR_VALUE, "%s: n must be >= 0, got %d", fn, n);
    if (isnan(inv_scale)) return cg__err(CG_ERR_VALUE, "%s: inv_scale is NaN", fn);
    if (n == 0) return CG_OK;
    if (!grads) return cg__err(CG_ERR_NULL, "%s: grads array is NULL", fn);
    /* Every check before anything is written: a refused list is untouched. */
    for (int i = 0; i < n; ++i) {
        const cg_tensor *t = grads[i];
        if (!t) return cg__err(CG_ERR_NULL, "%s: grads[%d] is NULL", fn, i);
        const int dev = cg__dev(t);
        if (!cg__is_float(t->dtype) || (t->dtype == CG_FLOAT16 && !dev))
            return cg__err(CG_ERR_DTYPE, "%s: grads[%d]: %s needed, got %s (on the %s)", fn, i,
                           dev ? "float16, float32 or float64" : "float32 or float64",
                           cg_dtype_name(t->dtype), dev ? "device" : "host");
        if (t->layout != CG_STRIDED) continue;
        for (int d = 0; d < t->ndim; ++d)
            if (t->strides[d] == 0 && t->shape[d] > 1)
                return cg__err(CG_ERR_VALUE,
                               "%s: grads[%d] has a broadcast (stride 0) dimension %d of size %lld; "
                               "its elements share memory and cannot be scaled in place",
                               fn, i, d, (long long)t->shape[d]);
    }
    unscale_ctx ctx = {inv_scale, 0};
    CG_TRY(cg__for_device_groups(n, grads, device_unscale, &ctx));
    int64_t total = ctx.bad;
    for (int i = 0; i < n; ++i) {
        cg_tensor *t = grads[i];
        if (cg__dev(t)) {
            ++t->storage->version;
            continue;
        }
        int64_t bad;
        CG_TRY(unscale_host(t, inv_scale, &bad));
        total += bad;
        ++t->storage->version;
    }
    if (nonfinite) *nonfinite = total;
    return CG_OK;
}
