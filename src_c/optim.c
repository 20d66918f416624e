/* optim.c -- fused in-place optimizer updates (SGD, Adam/AdamW, RMSprop,
 * Adagrad). Each update is one pass over the parameter, its gradient and its
 * state buffers, where PyTorch's single-tensor step makes one pass per
 * tensor op. Per element the operations and their order are PyTorch's
 * (torch/optim/<name>.py, _single_tensor_<name>), computed in the tensors' dtype with
 * the scalars rounded to it, so the two libraries follow the same
 * trajectory to float rounding. */
/* Vectorisation options for the row loops: see the note in ops_binary.c.
 * fp-contract=off whatever the build's C mode (the extension compiles this
 * file in GNU mode, where GCC contracts by default): the measuring
 * kernels' FMA variant is built with FMA, and a fused multiply-add would
 * change the update's bits. no-tree-loop-distribute-patterns: GCC otherwise turns the
 * measuring form's store of a row of old weights (one per lane) into a
 * memmove call per row, which spills every lane accumulator around the
 * call (twice the loop's instructions, seen in callgrind). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math",    \
                     "fp-contract=off", "no-tree-loop-distribute-patterns")
#endif
#include <limits.h>
#include <stdio.h>

#include "cg_internal.h"
#include "cg_optim.h"
#include "optim_device.h"

/* Each kernel's dispatcher (plain and measuring instances alike) is built
 * as AVX2 and baseline clones (CG_SIMD_CLONES without AVX-512: AVX-512
 * measured no faster here, on 8k to 4M elements, and it would add 50% to
 * this file's compile time, already the longest of the build). The AVX2
 * clone has no FMA (-mavx2 does not imply it), so the measuring instances
 * are built once more for AVX2 + FMA (FMA_VARIANT, picked at run time by
 * WITH_FMA on a CPU that has both): there the measuring sums use fused
 * multiply-adds (SQ_ADD), one instruction fewer per square; the update's
 * own arithmetic is never contracted (fp-contract=off above), so its bits
 * are the same in every instance. */
#ifdef CG_SIMD_CLONES_ON
#define CG_OPTIM_CLONES __attribute__((target_clones("avx2", "default")))
#define FMA_VARIANT(...) __attribute__((target("avx2,fma"))) __VA_ARGS__
/* Whether to take the FMA variant: the CPU has AVX2 and FMA, and the
 * environment does not say CGRAD_NO_FMA (set and not "0": the AVX2 clone
 * instead, as on a CPU without FMA; make test-c runs test_optim both ways). */
static int cpu_fma(void) {
    static int known = -1; /* benign race: every thread stores the same value */
    int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        const char *no = getenv("CGRAD_NO_FMA");
        if (no && no[0] && strcmp(no, "0") != 0) v = 0;
        __atomic_store_n(&known, v, __ATOMIC_RELAXED);
    }
    return v;
}
#define WITH_FMA(mb, FMA_CALL, CALL)                                                        \
    do {                                                                                    \
        if ((mb) && cpu_fma()) FMA_CALL;                                                    \
        else CALL;                                                                          \
    } while (0)
#else
#define CG_OPTIM_CLONES
#define FMA_VARIANT(...)
#define WITH_FMA(mb, FMA_CALL, CALL) CALL
#endif

/* ---------------------------------------------------------------- checks */
/* CG_CHECK_TD for the parameter of an update, its message naming fn (the
 * public call, not the check function). */
static cg_status check_param(const char *fn, const cg_tensor *param) {
    if (!param) return cg__err(CG_ERR_NULL, "%s: tensor argument 'param' is NULL", fn);
    if (param->layout != CG_STRIDED) return cg__sparse_refused(fn, "param");
    if (param->dtype == CG_FLOAT16 && !param->storage->device) return cg__half_refused(fn, "param");
    return CG_OK;
}

/* t must be a contiguous float tensor with ref's shape and dtype (ref == t
 * checks t alone). */
static cg_status check_operand(const char *fn, const char *name, const cg_tensor *t,
                               const cg_tensor *ref) {
    if (!t) return cg__err(CG_ERR_NULL, "%s: tensor argument '%s' is NULL", fn, name);
    if (t->layout)
        return cg__err(CG_ERR_UNSUPPORTED, "%s: '%s' is a row-sparse tensor; this update takes dense "
                                           "tensors (row-sparse gradients: cg_sgd_sparse_update, "
                                           "cg_sparse_adam_update)", fn, name);
    if (!cg__float_here(t))
        return cg__err(CG_ERR_DTYPE, "%s: '%s' must be float32 or float64 (float16 on a device), got %s", fn, name,
                       cg_dtype_name(t->dtype));
    if (t->dtype != ref->dtype)
        return cg__err(CG_ERR_DTYPE, "%s: '%s' has dtype %s but the parameter has dtype %s", fn,
                       name, cg_dtype_name(t->dtype), cg_dtype_name(ref->dtype));
    if (!cg__same_shape(t, ref)) {
        char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
        return cg__err(CG_ERR_SHAPE, "%s: '%s' has shape %s but the parameter has shape %s", fn,
                       name, cg__shape_str(t->ndim, t->shape, b1, sizeof b1),
                       cg__shape_str(ref->ndim, ref->shape, b2, sizeof b2));
    }
    if (!cg__is_contig(t))
        return cg__err(CG_ERR_VALUE, "%s: '%s' is not contiguous; the fused update needs "
                                     "contiguous tensors (call contiguous() first)",
                       fn, name);
    return CG_OK;
}

/* Written tensors must not share memory: the loop reads and writes each
 * element once, and two buffers in one block would step on each other. */
static cg_status check_distinct(const char *fn, int n, cg_tensor *const *ts,
                                const char *const *names) {
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j)
            if (ts[i] && ts[j] && ts[i]->storage == ts[j]->storage)
                return cg__err(CG_ERR_VALUE, "%s: '%s' and '%s' share memory; each state "
                                             "buffer needs its own storage",
                               fn, names[i], names[j]);
    return CG_OK;
}

#define CHECK_GE0(fn, field, v)                                                             \
    do {                                                                                    \
        if (!((v) >= 0.0))                                                                  \
            return cg__err(CG_ERR_VALUE, "%s: invalid %s value: %g (must be >= 0)", fn,     \
                           field, (double)(v));                                             \
    } while (0)
#define CHECK_BETA(fn, field, v)                                                            \
    do {                                                                                    \
        if (!((v) >= 0.0 && (v) < 1.0))                                                     \
            return cg__err(CG_ERR_VALUE, "%s: invalid %s value: %g (must be in [0, 1))",    \
                           fn, field, (double)(v));                                         \
    } while (0)

static void bump(cg_tensor *t) {
    if (t) ++t->storage->version;
}

/* What a call measures (cg_update_stats; NULL: nothing), in the same pass:
 * the kernels run over blocks of UPD_BLOCK elements. When the weights are
 * measured, the kernel's measuring form (KERNEL_LOOP) measures the
 * gradient, the old weights and the update inside its own loop and stores
 * the old weights into a stack buffer, which only the exact fallback reads
 * (measure_block); a gradient measured alone is measured before each
 * block's update (it is then in L1 for the kernel). The update norm alone
 * (the plain calls) is summed in double from the saved old weights, as
 * update_sum_sq promises. Both forms
 * compute each element with the same code, so blocking and measuring do not
 * change a bit of the result. 2048 elements: a float32 block of each
 * operand is 8 KB, so a kernel's few stay in L1 for the fallback, and a
 * measured block's set-up (a call, the lanes' set-up and reduction,
 * measure_block: ~500 instructions) is paid once per 2048. */
#define UPD_BLOCK 2048
#define AT(ptr, i, es) ((ptr) ? (void *)((char *)(ptr) + (size_t)(i) * (es)) : NULL)

/* One block's measurement by a measuring kernel: the sums of squares of
 * the gradient, of the old weights and of the update (w_new - w_old), and
 * the max |.| bits of the gradient and of the old weights; old receives
 * the old weights. */
typedef struct meas_block {
    void *old;
    double gsq, wsq, usq;
    int64_t g_bits, w_bits;
} meas_block;

/* The finite stats of m elements from a sum of squares and max |x| bits. */
static cg_stats lane_stats(double sum_sq, int64_t bits, int f32, int64_t m) {
    cg_stats s = {sum_sq, 0.0, 0, m};
    if (f32) {
        const int32_t b = (int32_t)bits;
        float f;
        memcpy(&f, &b, sizeof f);
        s.max_abs = (double)f;
    } else {
        memcpy(&s.max_abs, &bits, sizeof s.max_abs);
    }
    return s;
}

/* Whether a block's lane sums stand: every element finite and, in float32,
 * every square within what float lanes hold (LANES_SAFE). */
#define BLOCK_OK(f32, bits) ((f32) ? LANES_SAFE(bits) : (bits) < 0x7ff0000000000000LL)

/* The same for the update's float32 lane sum usq of m squares, from the sum
 * alone (the kernels keep no max |w_new - w_old|): usq < 2^99 bounds every
 * square below 2^99 (an overflow gives inf), and usq >= m * 2^-79 puts the
 * largest square at or above usq / m, so max |d| is within LANES_SAFE's
 * [2^-40, 2^50) allowing for the lanes' rounding; NaN, 0 (no update, or
 * squares all underflowed) and everything else are summed again exactly. */
#define UPDATE_SUM_OK(usq, m) ((usq) >= (double)(m) * 0x1p-79 && (usq) < 0x1p99)

/* Adds a measured block to ms (and its update sum to *usq_acc; the
 * gradient's when wg). A block whose lane sums do not stand (BLOCK_OK) is
 * measured again, exactly: the gradient (which the update only read) with
 * cg__stats_add, the weights from the saved old ones and the new ones
 * (cg__update_block, cg__stats_add). */
static void measure_block(const meas_block *mb, int f32, int wg, int wu, const void *g,
                          const void *w, int64_t m, cg_update_stats *ms, double *usq_acc) {
    if (wg) {
        if (BLOCK_OK(f32, mb->g_bits)) {
            const cg_stats s = lane_stats(mb->gsq, mb->g_bits, f32, m);
            cg__stats_merge(&ms->grad, &s);
        } else {
            cg__stats_add(g, f32, m, &ms->grad);
        }
    }
    const int d_ok = !f32 || UPDATE_SUM_OK(mb->usq, m);
    if (!BLOCK_OK(f32, mb->w_bits) || (wu && !d_ok)) {
        if (wu) *usq_acc += cg__update_block(w, mb->old, f32, m, &ms->weight);
        else cg__stats_add(mb->old, f32, m, &ms->weight);
        return;
    }
    const cg_stats s = lane_stats(mb->wsq, mb->w_bits, f32, m);
    cg__stats_merge(&ms->weight, &s);
    if (wu) *usq_acc += mb->usq;
}

/* CALL runs the kernel on the block [lo, lo + m) with mb_ (NULL: plain
 * loop; else the measuring one). */
#define WITH_MEASURE(param, grad, n, ms, CALL)                                              \
    do {                                                                                    \
        if (!(ms) || !(ms)->what) {                                                         \
            const int64_t lo = 0, m = (n);                                                  \
            meas_block *const mb_ = NULL;                                                   \
            CALL;                                                                           \
            break;                                                                          \
        }                                                                                   \
        double old_[UPD_BLOCK];                                                             \
        meas_block mbs_ = {old_, 0.0, 0.0, 0.0, 0, 0};                                      \
        const size_t es_ = cg_dtype_size((param)->dtype);                                   \
        const int f32_ = (param)->dtype == CG_FLOAT32;                                      \
        const int wg_ = (ms)->what & CG_MEASURE_GRAD, ww_ = (ms)->what & CG_MEASURE_WEIGHT; \
        const int wu_ = (ms)->what & CG_MEASURE_UPDATE;                                     \
        meas_block *const mb_ = ww_ ? &mbs_ : NULL;                                         \
        double acc_ = 0.0;                                                                  \
        for (int64_t lo = 0; lo < (n); lo += UPD_BLOCK) {                                   \
            const int64_t m = (n) - lo < UPD_BLOCK ? (n) - lo : UPD_BLOCK;                  \
            void *w_ = AT(cg__ptr(param), lo, es_), *g_ = AT(cg__ptr(grad), lo, es_);       \
            if (wg_ && !ww_) cg__stats_add(g_, f32_, m, &(ms)->grad);                       \
            if (!ww_ && wu_) memcpy(old_, w_, (size_t)m * es_);                             \
            CALL;                                                                           \
            if (ww_)                                                                        \
                measure_block(mb_, f32_, wg_, wu_, g_, w_, m, (ms), &acc_);                 \
            else if (wu_)                                                                   \
                acc_ += f32_ ? cg__sum_sq_diff_f32(w_, (const float *)(void *)old_, m)      \
                             : cg__sum_sq_diff_f64(w_, old_, m);                            \
        }                                                                                   \
        (ms)->update_sum_sq = wu_ ? acc_ : 0.0;                                             \
    } while (0)

/* The kernels' loop: BODY (the element computation, reading and writing
 * element i of p and the state buffers in place) over i in [0, n); with
 * MEAS (a compile-time constant: 1, or 2 in the FMA variant) the
 * measuring form, the same BODY in a
 * two-level loop over MLANES lanes that keeps per lane the squares of the
 * gradient, the old weight and w_new - w_old, and the max |.| bits of the
 * first two, elementwise, so the
 * vectoriser maps the lanes onto SIMD registers without reassociating
 * (this file has no associative-math: the update follows PyTorch op for
 * op). T-typed lane sums go into double every MFLUSH elements: a float
 * partial sum has seen <= MFLUSH / MLANES + 1 roundings (relative error
 * < 1.1e-6, cgrad.h); the scalar tail sums in double. */
#define MLANES 8
#define MFLUSH 128
#define BITS_float int32_t
#define BITS_double int64_t
#define ABSBITS_float(b) ((b) & 0x7fffffff)
#define ABSBITS_double(b) ((b) & INT64_MAX)
#define LANE_MAX_ABS(T, mx, v)                                                              \
    do {                                                                                    \
        BITS_##T b_;                                                                        \
        memcpy(&b_, &(v), sizeof b_);                                                       \
        b_ = ABSBITS_##T(b_);                                                               \
        (mx) = b_ > (mx) ? b_ : (mx);                                                       \
    } while (0)
/* acc + x * x in a measuring lane: fused where MEAS is 2 (the FMA variant). */
#define FMA_float __builtin_fmaf
#define FMA_double __builtin_fma
#define SQ_ADD(T, MEAS, acc, x) ((MEAS) == 2 ? FMA_##T((x), (x), (acc)) : (acc) + (x) * (x))
#define KERNEL_LOOP(T, n, p, gr, MEAS, mb, ...)                                             \
    if (!(MEAS)) {                                                                          \
        for (int64_t i = 0; i < (n); ++i) {                                                 \
            __VA_ARGS__                                                                     \
        }                                                                                   \
    } else {                                                                                \
        T *restrict old_ = (mb)->old;                                                       \
        T aw_[MLANES], au_[MLANES], ag_[MLANES];                                            \
        BITS_##T mw_[MLANES], mg_[MLANES];                                                  \
        double dw_[MLANES], du_[MLANES], dg_[MLANES], sw_ = 0.0, su_ = 0.0, sg_ = 0.0;      \
        for (int l_ = 0; l_ < MLANES; ++l_) {                                               \
            mw_[l_] = mg_[l_] = 0;                                                          \
            dw_[l_] = du_[l_] = dg_[l_] = 0.0;                                              \
        }                                                                                   \
        int64_t i0_ = 0;                                                                    \
        for (; i0_ + MFLUSH <= (n); i0_ += MFLUSH) {                                        \
            for (int l_ = 0; l_ < MLANES; ++l_) aw_[l_] = au_[l_] = ag_[l_] = 0;            \
            _Pragma("GCC unroll 2")                                                         \
            for (int64_t j_ = i0_; j_ < i0_ + MFLUSH; j_ += MLANES)                         \
                for (int l_ = 0; l_ < MLANES; ++l_) {                                       \
                    const int64_t i = j_ + l_;                                              \
                    const T x_ = p[i], g_ = gr[i];                                          \
                    old_[i] = x_;                                                           \
                    {__VA_ARGS__}                                                           \
                    const T d_ = p[i] - x_;                                                 \
                    LANE_MAX_ABS(T, mw_[l_], x_);                                           \
                    LANE_MAX_ABS(T, mg_[l_], g_);                                           \
                    aw_[l_] = SQ_ADD(T, MEAS, aw_[l_], x_);                                 \
                    au_[l_] = SQ_ADD(T, MEAS, au_[l_], d_);                                 \
                    ag_[l_] = SQ_ADD(T, MEAS, ag_[l_], g_);                                 \
                }                                                                           \
            for (int l_ = 0; l_ < MLANES; ++l_) {                                           \
                dw_[l_] += (double)aw_[l_];                                                 \
                du_[l_] += (double)au_[l_];                                                 \
                dg_[l_] += (double)ag_[l_];                                                 \
            }                                                                               \
        }                                                                                   \
        for (int l_ = 0; l_ < MLANES; ++l_) {                                               \
            sw_ += dw_[l_];                                                                 \
            su_ += du_[l_];                                                                 \
            sg_ += dg_[l_];                                                                 \
        }                                                                                   \
        for (; i0_ < (n); ++i0_) { /* the tail, < MFLUSH elements: sums in double */        \
            const int64_t i = i0_;                                                          \
            const T x_ = p[i], g_ = gr[i];                                                  \
            old_[i] = x_;                                                                   \
            {__VA_ARGS__}                                                                   \
            const T d_ = p[i] - x_;                                                         \
            LANE_MAX_ABS(T, mw_[0], x_);                                                    \
            LANE_MAX_ABS(T, mg_[0], g_);                                                    \
            sw_ += (double)x_ * (double)x_;                                                 \
            su_ += (double)d_ * (double)d_;                                                 \
            sg_ += (double)g_ * (double)g_;                                                 \
        }                                                                                   \
        BITS_##T mw = 0, mg = 0;                                                            \
        for (int l_ = 0; l_ < MLANES; ++l_) {                                               \
            mw = mw_[l_] > mw ? mw_[l_] : mw;                                               \
            mg = mg_[l_] > mg ? mg_[l_] : mg;                                               \
        }                                                                                   \
        (mb)->wsq = sw_;                                                                    \
        (mb)->usq = su_;                                                                    \
        (mb)->gsq = sg_;                                                                    \
        (mb)->w_bits = mw;                                                                  \
        (mb)->g_bits = mg;                                                                  \
    }

#define MEASURE_ALL (CG_MEASURE_GRAD | CG_MEASURE_WEIGHT | CG_MEASURE_UPDATE)

/* The plain calls measure at most the update norm; the _stats calls
 * measure into a local copy, handed out only on success. */
static cg_update_stats *measure_begin(cg_update_stats *local, int what) {
    memset(local, 0, sizeof *local);
    local->what = what;
    return what ? local : NULL;
}

/* sqrtf for float: correctly rounded like PyTorch's, and it vectorises. */
#define SQRT_float sqrtf
#define SQRT_double sqrt

/* PyTorch's lerp (ATen lerp.h): a weight below 0.5 interpolates from the
 * start, a larger one from the end (w1m = 1 - w, in T), for accuracy near
 * both ends. SMALL is a compile-time flag of the specialised loop. */
#define LERP(SMALL, s, e, w, w1m) ((SMALL) ? (s) + (w) * ((e) - (s)) : (e) - ((e) - (s)) * (w1m))

/* Each update loop is an always-inline body taking its option flags as
 * int parameters, instantiated once per flag combination by a switch on a
 * key whose cases pass literal constants: every instance is branch-free
 * inside, so GCC vectorises it (a flag tested in the loop stops that). The
 * key's top bit is the measuring form; the FMA variant switches on the
 * measuring keys with one bit more set (MEAS_OF: 0 plain, 1 measuring, 2
 * measuring with FMA). */
#define CG_INLINE static inline __attribute__((always_inline))
#define CASES4(C, k) C(k) C((k) + 1) C((k) + 2) C((k) + 3)
#define CASES32(C, k)                                                                       \
    CASES4(C, k) CASES4(C, (k) + 4) CASES4(C, (k) + 8) CASES4(C, (k) + 12) CASES4(C, (k) + 16) \
    CASES4(C, (k) + 20) CASES4(C, (k) + 24) CASES4(C, (k) + 28)
#define CASES64(C, k) CASES32(C, k) CASES32(C, (k) + 32)
#define BIT(k, i) (((k) >> (i)) & 1)
#define MEAS_OF(k, i) (BIT(k, i) + BIT(k, (i) + 1))

/* A kernel's three dispatchers around its NAME##_body instances: NAME##_any
 * switches on KEY over ALL_CASES (plain and measuring; AVX2 and baseline
 * clones), NAME##_fma on KEY | FMA_BIT over FMA_CASES (the measuring keys,
 * FMA variant), and NAME picks one (WITH_FMA). PARAMS and ARGS, in
 * parentheses: the parameter list (naming the meas_block mb) and the
 * forwarded arguments. */
#define KERNEL_DISPATCHERS(NAME, PARAMS, ARGS, KEY, ALL_CASES, FMA_BIT, FMA_CASES)          \
    CG_OPTIM_CLONES static void NAME##_any PARAMS {                                         \
        switch (KEY) {                                                                      \
            ALL_CASES                                                                       \
        default: break;                                                                     \
        }                                                                                   \
    }                                                                                       \
    FMA_VARIANT(static void NAME##_fma PARAMS {                                             \
        switch ((KEY) | (FMA_BIT)) {                                                        \
            FMA_CASES                                                                       \
        default: break;                                                                     \
        }                                                                                   \
    })                                                                                      \
    static void NAME PARAMS { WITH_FMA(mb, NAME##_fma ARGS, NAME##_any ARGS); }

/* ---------------------------------------------------------------- devices */
/* On a backend device the whole update of one parameter is one named
 * kernel (docs/backend.md, "Optimizers"): tensors (param, the state
 * buffers in use, [the update norm]; grad). The checks above ran as on the
 * host; the kernel repeats the host loop's arithmetic in the tensors'
 * dtype. */
static cg_status device_update(int dev, const char *kernel, int n_targets, cg_tensor *const *ts,
                               int n_f, const double *f, int n_i, const int64_t *ip,
                               cg_tensor *param, cg_tensor *grad, cg_update_stats *ms) {
    if (ms && (ms->what & CG_MEASURE_GRAD)) CG_TRY(cg_tensor_stats(grad, &ms->grad));
    if (ms && (ms->what & CG_MEASURE_WEIGHT)) CG_TRY(cg_tensor_stats(param, &ms->weight));
    double *update_sum_sq = ms && (ms->what & CG_MEASURE_UPDATE) ? &ms->update_sum_sq : NULL;
    if (update_sum_sq) *update_sum_sq = 0.0;
    if (ts[0]->numel == 0) return CG_OK;
    const int64_t one = 1;
    return cg__kernel_result(dev, kernel, n_targets, 1, ts, n_f, f, n_i, ip, CG_FLOAT64, 1, &one,
                             update_sum_sq);
}

/* ------------------------------------------------------------------- SGD */
/* key bits: 0 maximize, 1 weight decay, 2 momentum, 3 nesterov, 4 first step */
#define SGD_KERNEL(NAME, T)                                                                 \
    CG_INLINE void NAME##_body(int64_t n, T *restrict p, const T *restrict gr,              \
                               T *restrict buf, const cg_sgd_options *o, meas_block *mb,    \
                               const int MX, const int WD, const int MOM, const int NEST,   \
                               const int INIT, const int MEAS) {                            \
        const T lr_neg = (T)(-o->lr), wd = (T)o->weight_decay, mom = (T)o->momentum;       \
        const T damp1 = (T)(1.0 - o->dampening);                                            \
        KERNEL_LOOP(T, n, p, gr, MEAS, mb, {                                                    \
            T g = MX ? -gr[i] : gr[i];                                                      \
            if (WD) g = g + wd * p[i];                                                      \
            if (MOM) {                                                                      \
                const T b = INIT ? g : buf[i] * mom + damp1 * g;                            \
                buf[i] = b;                                                                 \
                g = NEST ? g + mom * b : b;                                                 \
            }                                                                               \
            p[i] = p[i] + lr_neg * g;                                                       \
        })                                                                                  \
    }                                                                                       \
    CG_INLINE int NAME##_key(const T *buf, int init, const cg_sgd_options *o,               \
                             const meas_block *mb) {                                        \
        return (o->maximize != 0) | (o->weight_decay != 0.0) << 1 |                         \
               (o->momentum != 0.0) << 2 | (o->nesterov != 0) << 3 | (init != 0) << 4 |     \
               (mb != NULL) << 5;                                                           \
    }                                                                                       \
    KERNEL_DISPATCHERS(NAME, (int64_t n, T *p, const T *gr, T *buf, int init,              \
                              const cg_sgd_options *o, meas_block *mb),                     \
                       (n, p, gr, buf, init, o, mb), NAME##_key(buf, init, o, mb),          \
                       CASES64(NAME##_CASE, 0), 64, CASES32(NAME##_CASE, 96))
#define sgd_f32_CASE(k)                                                                     \
    case k: sgd_f32_body(n, p, gr, buf, o, mb, BIT(k, 0), BIT(k, 1), BIT(k, 2), BIT(k, 3),  \
                         BIT(k, 4), MEAS_OF(k, 5)); break;
#define sgd_f64_CASE(k)                                                                     \
    case k: sgd_f64_body(n, p, gr, buf, o, mb, BIT(k, 0), BIT(k, 1), BIT(k, 2), BIT(k, 3),  \
                         BIT(k, 4), MEAS_OF(k, 5)); break;
SGD_KERNEL(sgd_f32, float)
SGD_KERNEL(sgd_f64, double)

cg_sgd_options cg_sgd_default_options(void) {
    cg_sgd_options o = {1e-3, 0.0, 0.0, 0.0, 0, 0};
    return o;
}

cg_status cg__check_sgd_options(const char *fn, const cg_sgd_options *o) {
    CHECK_GE0(fn, "learning rate", o->lr);
    CHECK_GE0(fn, "momentum", o->momentum);
    CHECK_GE0(fn, "weight_decay", o->weight_decay);
    if (!isfinite(o->dampening))
        return cg__err(CG_ERR_VALUE, "%s: invalid dampening value: %g", fn, o->dampening);
    if (o->nesterov && (o->momentum <= 0.0 || o->dampening != 0.0))
        return cg__err(CG_ERR_VALUE, "%s: Nesterov momentum requires a momentum and zero "
                                     "dampening (momentum %g, dampening %g)",
                       fn, o->momentum, o->dampening);
    return CG_OK;
}

/* The checks of one parameter's update; *buf: momentum_buffer, NULL
 * without momentum; *dev: the tensors' device. check_options: 0 where the
 * caller checked the options once for all its entries. */
static cg_status sgd_check(const char *fn, cg_tensor *param, cg_tensor *grad,
                           cg_tensor *momentum_buffer, const cg_sgd_options *o, int check_options,
                           cg_tensor **buf, int *dev) {
    CG_TRY(check_param(fn, param));
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(check_operand(fn, "param", param, param));
    CG_TRY(check_operand(fn, "grad", grad, param));
    if (check_options) CG_TRY(cg__check_sgd_options(fn, o));
    if (o->momentum != 0.0) {
        CG_TRY(check_operand(fn, "momentum_buffer", momentum_buffer, param));
        cg_tensor *w[2] = {param, momentum_buffer};
        const char *names[2] = {"param", "momentum_buffer"};
        CG_TRY(check_distinct(fn, 2, w, names));
    } else {
        momentum_buffer = NULL;
    }
    cg_tensor *all[3] = {param, grad, momentum_buffer};
    const char *all_names[3] = {"param", "grad", "momentum_buffer"};
    CG_TRY(cg__train_same_device(fn, 3, all, all_names, dev));
    *buf = momentum_buffer;
    return CG_OK;
}

cg_status cg__sgd_check(const char *fn, cg_tensor *param, cg_tensor *grad,
                        cg_tensor *momentum_buffer, const cg_sgd_options *o) {
    cg_tensor *buf;
    int dev;
    return sgd_check(fn, param, grad, momentum_buffer, o, 0, &buf, &dev);
}

/* The device kernels' scalars (docs/backend.md, sgd_update_). */
static void sgd_device_params(const cg_sgd_options *o, int init_buffer, int has_buf, int want,
                              double f[4], int64_t ip[5]) {
    f[0] = o->lr;
    f[1] = o->momentum;
    f[2] = o->dampening;
    f[3] = o->weight_decay;
    ip[0] = o->maximize != 0;
    ip[1] = o->nesterov != 0;
    ip[2] = init_buffer != 0;
    ip[3] = has_buf;
    ip[4] = want;
}

/* The host loop of one checked update. */
static void sgd_host(cg_tensor *param, cg_tensor *grad, cg_tensor *momentum_buffer, int init_buffer,
                     const cg_sgd_options *o, cg_update_stats *ms) {
    const int64_t n = param->numel;
    const size_t es = cg_dtype_size(param->dtype);
    void *p = cg__ptr(param), *g = cg__ptr(grad);
    void *buf = momentum_buffer ? cg__ptr(momentum_buffer) : NULL;
    if (param->dtype == CG_FLOAT32)
        WITH_MEASURE(param, grad, n, ms,
                         sgd_f32(m, AT(p, lo, es), AT(g, lo, es), AT(buf, lo, es), init_buffer, o, mb_));
    else
        WITH_MEASURE(param, grad, n, ms,
                         sgd_f64(m, AT(p, lo, es), AT(g, lo, es), AT(buf, lo, es), init_buffer, o, mb_));
}

static cg_status sgd_update(const char *fn, cg_tensor *param, cg_tensor *grad, cg_tensor *momentum_buffer,
                            int init_buffer, const cg_sgd_options *o,
                            cg_update_stats *ms) {
    int dev;
    CG_TRY(sgd_check(fn, param, grad, momentum_buffer, o, 1, &momentum_buffer, &dev));
    if (dev) {
        cg_tensor *ts[3] = {param, momentum_buffer ? momentum_buffer : grad, grad};
        double f[4];
        int64_t ip[5];
        sgd_device_params(o, init_buffer, momentum_buffer != NULL,
                          ms && (ms->what & CG_MEASURE_UPDATE), f, ip);
        CG_TRY(device_update(dev, "sgd_update_", momentum_buffer ? 2 : 1, ts, 4, f, 5, ip, param, grad, ms));
    } else {
        sgd_host(param, grad, momentum_buffer, init_buffer, o, ms);
    }
    bump(param);
    bump(momentum_buffer);
    return CG_OK;
}

cg_status cg_sgd_update(cg_tensor *param, cg_tensor *grad, cg_tensor *momentum_buffer,
                        int init_buffer, const cg_sgd_options *o, double *update_sum_sq) {
    cg_update_stats local, *ms = measure_begin(&local, update_sum_sq ? CG_MEASURE_UPDATE : 0);
    CG_TRY(sgd_update("cg_sgd_update", param, grad, momentum_buffer, init_buffer, o, ms));
    if (update_sum_sq) *update_sum_sq = local.update_sum_sq;
    return CG_OK;
}

cg_status cg_sgd_update_stats(cg_tensor *param, cg_tensor *grad, cg_tensor *momentum_buffer,
                        int init_buffer, const cg_sgd_options *o, cg_update_stats *stats) {
    if (!stats) return cg__err(CG_ERR_NULL, "cg_sgd_update_stats: stats is NULL");
    cg_update_stats local, *ms = measure_begin(&local, stats->what & MEASURE_ALL);
    CG_TRY(sgd_update("cg_sgd_update_stats", param, grad, momentum_buffer, init_buffer, o, ms));
    *stats = local;
    return CG_OK;
}

/* ------------------------------------------------------------ Adam/AdamW */
/* Scalars computed in double as PyTorch computes them in Python, then
 * rounded to T where PyTorch hands them to a kernel. */
typedef struct adam_scalars {
    double wd_factor;  /* 1 - lr * weight_decay (AdamW) */
    double bc2_sqrt;   /* sqrt(1 - beta2^step) */
    double step_size;  /* lr / (1 - beta1^step) */
} adam_scalars;

/* key bits: 0 maximize, 1 coupled weight decay, 2 decoupled weight decay,
 * 3 amsgrad, 4 lerp weight 1 - beta1 below 0.5 */
#define ADAM_KERNEL(NAME, T)                                                                \
    CG_INLINE void NAME##_body(int64_t n, T *restrict p, const T *restrict gr, T *restrict m, \
                               T *restrict v, T *restrict vmax, const cg_adam_options *o,   \
                               const adam_scalars *s, meas_block *mb, const int MX,         \
                               const int WD, const int DWD, const int AMS, const int SW,    \
                               const int MEAS) {                                            \
        const T wd = (T)o->weight_decay, wd_factor = (T)s->wd_factor;                       \
        const T w1 = (T)(1.0 - o->beta1), w1m = (T)1 - w1;                                  \
        const T b2 = (T)o->beta2, c2 = (T)(1.0 - o->beta2);                                 \
        const T bc2_sqrt = (T)s->bc2_sqrt, eps = (T)o->eps, neg_step = (T)(-s->step_size); \
        KERNEL_LOOP(T, n, p, gr, MEAS, mb, {                                                    \
            T g = MX ? -gr[i] : gr[i];                                                      \
            T x = p[i];                                                                     \
            if (WD) g = g + wd * x;                                                         \
            if (DWD) x = x * wd_factor;                                                     \
            const T mi = LERP(SW, m[i], g, w1, w1m);                                        \
            const T vi = v[i] * b2 + c2 * g * g;                                            \
            m[i] = mi;                                                                      \
            v[i] = vi;                                                                      \
            T vd = vi;                                                                      \
            if (AMS) {                                                                      \
                /* torch.maximum: NaN wins */                                               \
                const T vm = vmax[i];                                                       \
                vd = (vm != vm || vm > vi) ? vm : vi;                                       \
                vmax[i] = vd;                                                               \
            }                                                                               \
            const T denom = SQRT_##T(vd) / bc2_sqrt + eps;                                  \
            p[i] = x + neg_step * mi / denom;                                               \
        })                                                                                  \
    }                                                                                       \
    CG_INLINE int NAME##_key(const T *vmax, const cg_adam_options *o, const meas_block *mb) { \
        const int wd = o->weight_decay != 0.0;                                              \
        return (o->maximize != 0) | (wd && !o->decoupled_weight_decay) << 1 |               \
               (wd && o->decoupled_weight_decay) << 2 | (vmax != NULL) << 3 |               \
               ((T)(1.0 - o->beta1) < (T)0.5) << 4 | (mb != NULL) << 5;                     \
    }                                                                                       \
    KERNEL_DISPATCHERS(NAME, (int64_t n, T *p, const T *gr, T *m, T *v, T *vmax,           \
                              const cg_adam_options *o, const adam_scalars *s,              \
                              meas_block *mb),                                              \
                       (n, p, gr, m, v, vmax, o, s, mb), NAME##_key(vmax, o, mb),           \
                       CASES64(NAME##_CASE, 0), 64, CASES32(NAME##_CASE, 96))
#define adam_f32_CASE(k)                                                                    \
    case k: adam_f32_body(n, p, gr, m, v, vmax, o, s, mb, BIT(k, 0), BIT(k, 1), BIT(k, 2),  \
                          BIT(k, 3), BIT(k, 4), MEAS_OF(k, 5)); break;
#define adam_f64_CASE(k)                                                                    \
    case k: adam_f64_body(n, p, gr, m, v, vmax, o, s, mb, BIT(k, 0), BIT(k, 1), BIT(k, 2),  \
                          BIT(k, 3), BIT(k, 4), MEAS_OF(k, 5)); break;
ADAM_KERNEL(adam_f32, float)
ADAM_KERNEL(adam_f64, double)

cg_adam_options cg_adam_default_options(void) {
    cg_adam_options o = {1e-3, 0.9, 0.999, 1e-8, 0.0, 0, 0, 0};
    return o;
}

cg_adam_options cg_adamw_default_options(void) {
    cg_adam_options o = cg_adam_default_options();
    o.weight_decay = 1e-2;
    o.decoupled_weight_decay = 1;
    return o;
}

cg_status cg__check_adam_options(const char *fn, const cg_adam_options *o) {
    CHECK_GE0(fn, "learning rate", o->lr);
    CHECK_GE0(fn, "epsilon", o->eps);
    CHECK_BETA(fn, "beta1", o->beta1);
    CHECK_BETA(fn, "beta2", o->beta2);
    CHECK_GE0(fn, "weight_decay", o->weight_decay);
    return CG_OK;
}

/* The checks of one parameter's update; *vmax: max_exp_avg_sq, NULL
 * without amsgrad; *dev: the tensors' device. */
static cg_status adam_check(const char *fn, cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg,
                            cg_tensor *exp_avg_sq, cg_tensor *max_exp_avg_sq,
                            const cg_adam_options *o, cg_tensor **vmax, int *dev) {
    CG_TRY(check_param(fn, param));
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(check_operand(fn, "param", param, param));
    CG_TRY(check_operand(fn, "grad", grad, param));
    CG_TRY(check_operand(fn, "exp_avg", exp_avg, param));
    CG_TRY(check_operand(fn, "exp_avg_sq", exp_avg_sq, param));
    if (o->amsgrad)
        CG_TRY(check_operand(fn, "max_exp_avg_sq", max_exp_avg_sq, param));
    else
        max_exp_avg_sq = NULL;
    cg_tensor *w[4] = {param, exp_avg, exp_avg_sq, max_exp_avg_sq};
    const char *names[4] = {"param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    CG_TRY(check_distinct(fn, 4, w, names));
    cg_tensor *all[5] = {param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq};
    const char *all_names[5] = {"param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    CG_TRY(cg__train_same_device(fn, 5, all, all_names, dev));
    *vmax = max_exp_avg_sq;
    return CG_OK;
}

cg_status cg__adam_check(const char *fn, cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg,
                         cg_tensor *exp_avg_sq, cg_tensor *max_exp_avg_sq,
                         const cg_adam_options *o) {
    cg_tensor *vmax;
    int dev;
    return adam_check(fn, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, o, &vmax, &dev);
}

/* The step's scalars, after the options' and the step's checks. */
static cg_status adam_scalars_of(const char *fn, int64_t step, const cg_adam_options *o,
                                 adam_scalars *s) {
    CG_TRY(cg__check_adam_options(fn, o));
    if (step < 1)
        return cg__err(CG_ERR_VALUE, "%s: step must be >= 1 (the count including this step), got %lld",
                       fn, (long long)step);
    s->wd_factor = 1.0 - o->lr * o->weight_decay;
    s->step_size = o->lr / (1.0 - pow(o->beta1, (double)step));
    s->bc2_sqrt = pow(1.0 - pow(o->beta2, (double)step), 0.5);
    return CG_OK;
}

/* The device kernels' scalars (docs/backend.md, adam_update_). */
static void adam_device_params(const cg_adam_options *o, const adam_scalars *s, int ams, int want,
                               double f[8], int64_t ip[4]) {
    const double fv[8] = {o->lr, o->beta1, o->beta2, o->eps, o->weight_decay,
                          s->wd_factor, s->bc2_sqrt, s->step_size};
    for (int k = 0; k < 8; ++k) f[k] = fv[k];
    ip[0] = o->maximize != 0;
    ip[1] = o->decoupled_weight_decay != 0;
    ip[2] = ams;
    ip[3] = want;
}

/* The host loop of one checked update. */
static void adam_host(cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg, cg_tensor *exp_avg_sq,
                      cg_tensor *max_exp_avg_sq, const cg_adam_options *o, const adam_scalars *sp,
                      cg_update_stats *ms) {
    const adam_scalars s = *sp;
    const int64_t n = param->numel;
    void *vmax = max_exp_avg_sq ? cg__ptr(max_exp_avg_sq) : NULL;
    const size_t es = cg_dtype_size(param->dtype);
    void *p = cg__ptr(param), *g = cg__ptr(grad), *m1 = cg__ptr(exp_avg), *v = cg__ptr(exp_avg_sq);
    if (param->dtype == CG_FLOAT32)
        WITH_MEASURE(param, grad, n, ms,
                         adam_f32(m, AT(p, lo, es), AT(g, lo, es), AT(m1, lo, es), AT(v, lo, es),
                                  AT(vmax, lo, es), o, &s, mb_));
    else
        WITH_MEASURE(param, grad, n, ms,
                         adam_f64(m, AT(p, lo, es), AT(g, lo, es), AT(m1, lo, es), AT(v, lo, es),
                                  AT(vmax, lo, es), o, &s, mb_));
}

static cg_status adam_update(const char *fn, cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg,
                             cg_tensor *exp_avg_sq, cg_tensor *max_exp_avg_sq, int64_t step,
                             const cg_adam_options *o,
                             cg_update_stats *ms) {
    int dev;
    CG_TRY(adam_check(fn, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, o, &max_exp_avg_sq, &dev));
    adam_scalars s;
    CG_TRY(adam_scalars_of(fn, step, o, &s));
    cg_tensor *w[4] = {param, exp_avg, exp_avg_sq, max_exp_avg_sq};
    if (dev) {
        cg_tensor *ts[5] = {param, exp_avg, exp_avg_sq, max_exp_avg_sq ? max_exp_avg_sq : grad, grad};
        double f[8];
        int64_t ip[4];
        adam_device_params(o, &s, max_exp_avg_sq != NULL, ms && (ms->what & CG_MEASURE_UPDATE), f, ip);
        CG_TRY(device_update(dev, "adam_update_", max_exp_avg_sq ? 4 : 3, ts, 8, f, 4, ip, param, grad, ms));
    } else {
        adam_host(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, o, &s, ms);
    }
    for (int i = 0; i < 4; ++i) bump(w[i]);
    return CG_OK;
}

/* The parameter index of a failed entry of a multi-tensor call, appended
 * to the message of st. */
static cg_status entry_err(cg_status st, int i) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", cg_last_error());
    return cg__err(st, "%s (parameter %d)", msg, i);
}

/* ------------------------------------------------- multi-tensor updates */
/* One update over n parameters with one set of options (PyTorch's foreach),
 * after the optimizer's own checks of every entry: lists[0..nw) are the
 * written lists (params first; a NULL list is skipped), lists[nw] the
 * grads. The host's parameters run host(i, hctx); each device gets one
 * kernel call, tensors (list_0 1..k, ..., list_nw-1 1..k; grad 1..k), the
 * ints ip with the group's k in ip[n_i - 1]. */
typedef struct {
    const char *fn, *kernel;
    int nw;
    cg_tensor *const *lists[5];
    int n_f, n_i;
    const double *f;
    const int64_t *ip;
} multi_update;

/* At most 5 lists of n (4 written, the grads) are laid out in one int-sized
 * array for a device's kernel call and the overlap check. */
#define MULTI_MAX_N (INT_MAX / 5)

static cg_status multi_count(const char *fn, int n) {
    if (n < 0 || n > MULTI_MAX_N)
        return cg__err(CG_ERR_VALUE, "%s: n must be in [0, %d], got %d", fn, MULTI_MAX_N, n);
    return CG_OK;
}

/* A written tensor's elements (contiguous: check_operand) in its storage,
 * ordered by storage then offset for the overlap check. */
typedef struct {
    uintptr_t storage;
    int64_t lo, hi;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = (const span *)a, *y = (const span *)b;
    if (x->storage != y->storage) return x->storage < y->storage ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* No two written tensors may overlap (views of one storage may sit side
 * by side). */
static cg_status multi_distinct(const multi_update *u, int n) {
    span *spans = malloc(sizeof *spans * (size_t)(n * u->nw));
    if (!spans) return cg__err(CG_ERR_NOMEM, "%s: out of memory for %d parameters", u->fn, n);
    int n_spans = 0;
    for (int l = 0; l < u->nw; ++l)
        for (int i = 0; u->lists[l] && i < n; ++i) {
            const cg_tensor *t = u->lists[l][i];
            if (t && t->numel)
                spans[n_spans++] = (span){(uintptr_t)t->storage, t->offset, t->offset + t->numel};
        }
    qsort(spans, (size_t)n_spans, sizeof *spans, cmp_span);
    cg_status st = CG_OK;
    for (int k = 1; k < n_spans && !st; ++k)
        if (spans[k].storage == spans[k - 1].storage && spans[k].lo < spans[k - 1].hi)
            st = cg__err(CG_ERR_VALUE, "%s: two parameters (or their state buffers) share "
                                       "memory; each needs its own storage", u->fn);
    free(spans);
    return st;
}

static cg_status multi_device(int dev, int k, cg_tensor **sub, const int *idx, void *vctx) {
    const multi_update *u = (const multi_update *)vctx;
    (void)sub;
    int64_t ip[8]; /* n_i <= 8 */
    cg_tensor **ts = malloc(sizeof *ts * (size_t)(k * (u->nw + 1)));
    if (!ts) return cg__err(CG_ERR_NOMEM, "%s: out of memory for %d parameters", u->fn, k);
    for (int j = 0; j < k; ++j)
        for (int l = 0; l <= u->nw; ++l) ts[l * k + j] = u->lists[l][idx[j]];
    for (int q = 0; q < u->n_i; ++q) ip[q] = u->ip[q];
    ip[u->n_i - 1] = k;
    cg_status st = cg__kernel(dev, u->kernel, u->nw * k, (u->nw + 1) * k, ts, u->n_f, u->f, u->n_i, ip);
    free(ts);
    return st;
}

/* The overlap check, then the host loops and one kernel call per device,
 * then the version bumps of what moved (the host's parameters also when a
 * backend failed after the checks). */
static cg_status multi_apply(const multi_update *u, int n, int any_dev,
                             void (*host)(int i, const void *hctx), const void *hctx) {
    CG_TRY(multi_distinct(u, n));
    for (int i = 0; i < n; ++i)
        if (!cg__dev(u->lists[0][i])) host(i, hctx);
    cg_status st = any_dev ? cg__for_device_groups(n, u->lists[0], multi_device, (void *)u) : CG_OK;
    for (int i = 0; i < n; ++i)
        if (!st || !cg__dev(u->lists[0][i]))
            for (int l = 0; l < u->nw; ++l)
                if (u->lists[l]) bump(u->lists[l][i]);
    return st;
}

/* Adam's lists and scalars for its host loops. */
typedef struct {
    cg_tensor *const *params, *const *grads, *const *ms, *const *vs, *const *vmaxs;
    const cg_adam_options *o;
    const adam_scalars *s;
} adam_multi_host;

static void adam_multi_host_one(int i, const void *vctx) {
    const adam_multi_host *h = (const adam_multi_host *)vctx;
    adam_host(h->params[i], h->grads[i], h->ms[i], h->vs[i], h->vmaxs ? h->vmaxs[i] : NULL, h->o,
              h->s, NULL);
}

cg_status cg_adam_update_multi(int n, cg_tensor *const *params, cg_tensor *const *grads,
                               cg_tensor *const *exp_avgs, cg_tensor *const *exp_avg_sqs,
                               cg_tensor *const *max_exp_avg_sqs, int64_t step,
                               const cg_adam_options *o) {
    const char *fn = "cg_adam_update_multi";
    CG_TRY(multi_count(fn, n));
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    if (n && (!params || !grads || !exp_avgs || !exp_avg_sqs || (o->amsgrad && !max_exp_avg_sqs)))
        return cg__err(CG_ERR_NULL, "%s: a tensor list is NULL", fn);
    adam_scalars s;
    CG_TRY(adam_scalars_of(fn, step, o, &s));
    if (n == 0) return CG_OK;
    cg_tensor *const *vmaxs = o->amsgrad ? max_exp_avg_sqs : NULL;
    int any_dev = 0;
    for (int i = 0; i < n; ++i) { /* every check first: a bad entry moves nothing */
        cg_tensor *vmax = NULL;
        int d = 0;
        cg_status st = adam_check(fn, params[i], grads[i], exp_avgs[i], exp_avg_sqs[i],
                                  vmaxs ? vmaxs[i] : NULL, o, &vmax, &d);
        if (st) return entry_err(st, i);
        any_dev |= d;
    }
    double f[8];
    int64_t ip[5];
    adam_device_params(o, &s, o->amsgrad != 0, 0, f, ip);
    multi_update u = {fn, "adam_update_multi_", o->amsgrad ? 4 : 3,
                      {params, exp_avgs, exp_avg_sqs, vmaxs ? vmaxs : grads, grads}, 8, 5, f, ip};
    adam_multi_host h = {params, grads, exp_avgs, exp_avg_sqs, vmaxs, o, &s};
    return multi_apply(&u, n, any_dev, adam_multi_host_one, &h);
}

/* SGD's lists for its host loops. */
typedef struct {
    cg_tensor *const *params, *const *grads, *const *bufs;
    int init;
    const cg_sgd_options *o;
} sgd_multi_host;

static void sgd_multi_host_one(int i, const void *vctx) {
    const sgd_multi_host *h = (const sgd_multi_host *)vctx;
    sgd_host(h->params[i], h->grads[i], h->bufs ? h->bufs[i] : NULL, h->init, h->o, NULL);
}

cg_status cg_sgd_update_multi(int n, cg_tensor *const *params, cg_tensor *const *grads,
                              cg_tensor *const *momentum_buffers, int init_buffer,
                              const cg_sgd_options *o) {
    const char *fn = "cg_sgd_update_multi";
    CG_TRY(multi_count(fn, n));
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(cg__check_sgd_options(fn, o));
    const int mom = o->momentum != 0.0;
    if (n && (!params || !grads || (mom && !momentum_buffers)))
        return cg__err(CG_ERR_NULL, "%s: a tensor list is NULL", fn);
    if (n == 0) return CG_OK;
    cg_tensor *const *bufs = mom ? momentum_buffers : NULL;
    int any_dev = 0;
    for (int i = 0; i < n; ++i) { /* every check first: a bad entry moves nothing */
        cg_tensor *buf = NULL;
        int d = 0;
        cg_status st = sgd_check(fn, params[i], grads[i], bufs ? bufs[i] : NULL, o, 0, &buf, &d);
        if (st) return entry_err(st, i);
        any_dev |= d;
    }
    double f[4];
    int64_t ip[6] = {0};
    sgd_device_params(o, init_buffer, mom, 0, f, ip);
    multi_update u = {fn, "sgd_update_multi_", mom ? 2 : 1,
                      {params, mom ? bufs : grads, grads, NULL, NULL}, 4, 6, f, ip};
    sgd_multi_host h = {params, grads, bufs, init_buffer != 0, o};
    return multi_apply(&u, n, any_dev, sgd_multi_host_one, &h);
}

cg_status cg_adam_update(cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg,
                         cg_tensor *exp_avg_sq, cg_tensor *max_exp_avg_sq, int64_t step,
                         const cg_adam_options *o, double *update_sum_sq) {
    cg_update_stats local, *ms = measure_begin(&local, update_sum_sq ? CG_MEASURE_UPDATE : 0);
    CG_TRY(adam_update("cg_adam_update", param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, o, ms));
    if (update_sum_sq) *update_sum_sq = local.update_sum_sq;
    return CG_OK;
}

cg_status cg_adam_update_stats(cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg,
                         cg_tensor *exp_avg_sq, cg_tensor *max_exp_avg_sq, int64_t step,
                         const cg_adam_options *o, cg_update_stats *stats) {
    if (!stats) return cg__err(CG_ERR_NULL, "cg_adam_update_stats: stats is NULL");
    cg_update_stats local, *ms = measure_begin(&local, stats->what & MEASURE_ALL);
    CG_TRY(adam_update("cg_adam_update_stats", param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, o, ms));
    *stats = local;
    return CG_OK;
}

/* --------------------------------------------------------------- RMSprop */
/* key bits: 0 maximize, 1 weight decay, 2 centered, 3 momentum, 4 lerp
 * weight 1 - alpha below 0.5 */
#define RMSPROP_KERNEL(NAME, T)                                                             \
    CG_INLINE void NAME##_body(int64_t n, T *restrict p, const T *restrict gr,              \
                               T *restrict sq, T *restrict ga, T *restrict buf,             \
                               const cg_rmsprop_options *o, meas_block *mb, const int MX,   \
                               const int WD, const int CEN, const int MOM, const int SW,    \
                               const int MEAS) {                                            \
        const T wd = (T)o->weight_decay, alpha = (T)o->alpha, c = (T)(1.0 - o->alpha);     \
        const T c1m = (T)1 - c, eps = (T)o->eps, mom = (T)o->momentum, lr_neg = (T)(-o->lr); \
        KERNEL_LOOP(T, n, p, gr, MEAS, mb, {                                                    \
            T g = MX ? -gr[i] : gr[i];                                                      \
            if (WD) g = g + wd * p[i];                                                      \
            const T si = sq[i] * alpha + c * g * g;                                         \
            sq[i] = si;                                                                     \
            T avg;                                                                          \
            if (CEN) {                                                                      \
                const T gi = LERP(SW, ga[i], g, c, c1m);                                    \
                ga[i] = gi;                                                                 \
                avg = SQRT_##T(si + (T)(-1) * gi * gi);                                     \
            } else {                                                                        \
                avg = SQRT_##T(si);                                                         \
            }                                                                               \
            avg = avg + eps;                                                                \
            if (MOM) {                                                                      \
                const T b = buf[i] * mom + g / avg;                                         \
                buf[i] = b;                                                                 \
                p[i] = p[i] + lr_neg * b;                                                   \
            } else {                                                                        \
                p[i] = p[i] + lr_neg * g / avg;                                             \
            }                                                                               \
        })                                                                                  \
    }                                                                                       \
    CG_INLINE int NAME##_key(const T *ga, const T *buf, const cg_rmsprop_options *o,        \
                             const meas_block *mb) {                                        \
        return (o->maximize != 0) | (o->weight_decay != 0.0) << 1 | (ga != NULL) << 2 |     \
               (buf != NULL) << 3 | ((T)(1.0 - o->alpha) < (T)0.5) << 4 | (mb != NULL) << 5; \
    }                                                                                       \
    KERNEL_DISPATCHERS(NAME, (int64_t n, T *p, const T *gr, T *sq, T *ga, T *buf,          \
                              const cg_rmsprop_options *o, meas_block *mb),                 \
                       (n, p, gr, sq, ga, buf, o, mb), NAME##_key(ga, buf, o, mb),          \
                       CASES64(NAME##_CASE, 0), 64, CASES32(NAME##_CASE, 96))
#define rmsprop_f32_CASE(k)                                                                 \
    case k: rmsprop_f32_body(n, p, gr, sq, ga, buf, o, mb, BIT(k, 0), BIT(k, 1), BIT(k, 2), \
                             BIT(k, 3), BIT(k, 4), MEAS_OF(k, 5)); break;
#define rmsprop_f64_CASE(k)                                                                 \
    case k: rmsprop_f64_body(n, p, gr, sq, ga, buf, o, mb, BIT(k, 0), BIT(k, 1), BIT(k, 2), \
                             BIT(k, 3), BIT(k, 4), MEAS_OF(k, 5)); break;
RMSPROP_KERNEL(rmsprop_f32, float)
RMSPROP_KERNEL(rmsprop_f64, double)

cg_rmsprop_options cg_rmsprop_default_options(void) {
    cg_rmsprop_options o = {1e-2, 0.99, 1e-8, 0.0, 0.0, 0, 0};
    return o;
}

static cg_status check_rmsprop_options(const char *fn, const cg_rmsprop_options *o) {
    CHECK_GE0(fn, "learning rate", o->lr);
    CHECK_GE0(fn, "epsilon", o->eps);
    CHECK_GE0(fn, "momentum", o->momentum);
    CHECK_GE0(fn, "weight_decay", o->weight_decay);
    CHECK_GE0(fn, "alpha", o->alpha);
    return CG_OK;
}

/* The checks of one parameter's update; *ga, *buf: grad_avg (NULL unless
 * centered) and momentum_buffer (NULL without momentum); *dev: the
 * tensors' device. check_options: 0 where the caller checked the options
 * once for all its entries. */
static cg_status rmsprop_check(const char *fn, cg_tensor *param, cg_tensor *grad,
                               cg_tensor *square_avg, cg_tensor *grad_avg,
                               cg_tensor *momentum_buffer, const cg_rmsprop_options *o,
                               int check_options, cg_tensor **ga, cg_tensor **buf, int *dev) {
    CG_TRY(check_param(fn, param));
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(check_operand(fn, "param", param, param));
    CG_TRY(check_operand(fn, "grad", grad, param));
    CG_TRY(check_operand(fn, "square_avg", square_avg, param));
    if (check_options) CG_TRY(check_rmsprop_options(fn, o));
    if (o->centered)
        CG_TRY(check_operand(fn, "grad_avg", grad_avg, param));
    else
        grad_avg = NULL;
    if (o->momentum > 0.0)
        CG_TRY(check_operand(fn, "momentum_buffer", momentum_buffer, param));
    else
        momentum_buffer = NULL;
    cg_tensor *w[4] = {param, square_avg, grad_avg, momentum_buffer};
    const char *names[4] = {"param", "square_avg", "grad_avg", "momentum_buffer"};
    CG_TRY(check_distinct(fn, 4, w, names));
    cg_tensor *all[5] = {param, grad, square_avg, grad_avg, momentum_buffer};
    const char *all_names[5] = {"param", "grad", "square_avg", "grad_avg", "momentum_buffer"};
    CG_TRY(cg__train_same_device(fn, 5, all, all_names, dev));
    *ga = grad_avg;
    *buf = momentum_buffer;
    return CG_OK;
}

cg_status cg__rmsprop_check(const char *fn, cg_tensor *param, cg_tensor *grad,
                            cg_tensor *square_avg, cg_tensor *grad_avg,
                            cg_tensor *momentum_buffer, const cg_rmsprop_options *o) {
    cg_tensor *ga, *buf;
    int dev;
    return rmsprop_check(fn, param, grad, square_avg, grad_avg, momentum_buffer, o, 0, &ga, &buf,
                         &dev);
}

/* The device kernels' scalars (docs/backend.md, rmsprop_update_). */
static void rmsprop_device_params(const cg_rmsprop_options *o, int has_ga, int has_buf, int want,
                                  double f[5], int64_t ip[4]) {
    f[0] = o->lr;
    f[1] = o->alpha;
    f[2] = o->eps;
    f[3] = o->weight_decay;
    f[4] = o->momentum;
    ip[0] = o->maximize != 0;
    ip[1] = has_ga;
    ip[2] = has_buf;
    ip[3] = want;
}

/* The host loop of one checked update. */
static void rmsprop_host(cg_tensor *param, cg_tensor *grad, cg_tensor *square_avg,
                         cg_tensor *grad_avg, cg_tensor *momentum_buffer,
                         const cg_rmsprop_options *o, cg_update_stats *ms) {
    const int64_t n = param->numel;
    void *ga = grad_avg ? cg__ptr(grad_avg) : NULL;
    void *buf = momentum_buffer ? cg__ptr(momentum_buffer) : NULL;
    const size_t es = cg_dtype_size(param->dtype);
    void *p = cg__ptr(param), *g = cg__ptr(grad), *sq = cg__ptr(square_avg);
    if (param->dtype == CG_FLOAT32)
        WITH_MEASURE(param, grad, n, ms,
                         rmsprop_f32(m, AT(p, lo, es), AT(g, lo, es), AT(sq, lo, es),
                                     AT(ga, lo, es), AT(buf, lo, es), o, mb_));
    else
        WITH_MEASURE(param, grad, n, ms,
                         rmsprop_f64(m, AT(p, lo, es), AT(g, lo, es), AT(sq, lo, es),
                                     AT(ga, lo, es), AT(buf, lo, es), o, mb_));
}

static cg_status rmsprop_update(const char *fn, cg_tensor *param, cg_tensor *grad, cg_tensor *square_avg,
                                cg_tensor *grad_avg, cg_tensor *momentum_buffer,
                                const cg_rmsprop_options *o,
                                cg_update_stats *ms) {
    int dev;
    CG_TRY(rmsprop_check(fn, param, grad, square_avg, grad_avg, momentum_buffer, o, 1, &grad_avg,
                         &momentum_buffer, &dev));
    if (dev) {
        cg_tensor *ts[5] = {param, square_avg};
        int k = 2;
        if (grad_avg) ts[k++] = grad_avg;
        if (momentum_buffer) ts[k++] = momentum_buffer;
        ts[k] = grad;
        double f[5];
        int64_t ip[4];
        rmsprop_device_params(o, grad_avg != NULL, momentum_buffer != NULL,
                              ms && (ms->what & CG_MEASURE_UPDATE), f, ip);
        CG_TRY(device_update(dev, "rmsprop_update_", k, ts, 5, f, 4, ip, param, grad, ms));
    } else {
        rmsprop_host(param, grad, square_avg, grad_avg, momentum_buffer, o, ms);
    }
    bump(param);
    bump(square_avg);
    bump(grad_avg);
    bump(momentum_buffer);
    return CG_OK;
}

/* RMSprop's lists for its host loops. */
typedef struct {
    cg_tensor *const *params, *const *grads, *const *sqs, *const *gas, *const *bufs;
    const cg_rmsprop_options *o;
} rmsprop_multi_host;

static void rmsprop_multi_host_one(int i, const void *vctx) {
    const rmsprop_multi_host *h = (const rmsprop_multi_host *)vctx;
    rmsprop_host(h->params[i], h->grads[i], h->sqs[i], h->gas ? h->gas[i] : NULL,
                 h->bufs ? h->bufs[i] : NULL, h->o, NULL);
}

cg_status cg_rmsprop_update_multi(int n, cg_tensor *const *params, cg_tensor *const *grads,
                                  cg_tensor *const *square_avgs, cg_tensor *const *grad_avgs,
                                  cg_tensor *const *momentum_buffers,
                                  const cg_rmsprop_options *o) {
    const char *fn = "cg_rmsprop_update_multi";
    CG_TRY(multi_count(fn, n));
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(check_rmsprop_options(fn, o));
    const int cen = o->centered != 0, mom = o->momentum > 0.0;
    if (n && (!params || !grads || !square_avgs || (cen && !grad_avgs) ||
              (mom && !momentum_buffers)))
        return cg__err(CG_ERR_NULL, "%s: a tensor list is NULL", fn);
    if (n == 0) return CG_OK;
    cg_tensor *const *gas = cen ? grad_avgs : NULL, *const *bufs = mom ? momentum_buffers : NULL;
    int any_dev = 0;
    for (int i = 0; i < n; ++i) { /* every check first: a bad entry moves nothing */
        cg_tensor *ga = NULL, *buf = NULL;
        int d = 0;
        cg_status st = rmsprop_check(fn, params[i], grads[i], square_avgs[i], gas ? gas[i] : NULL,
                                     bufs ? bufs[i] : NULL, o, 0, &ga, &buf, &d);
        if (st) return entry_err(st, i);
        any_dev |= d;
    }
    double f[5];
    int64_t ip[5] = {0};
    rmsprop_device_params(o, cen, mom, 0, f, ip);
    multi_update u = {fn, "rmsprop_update_multi_", 2 + cen + mom, {params, square_avgs}, 5, 5, f, ip};
    int l = 2;
    if (cen) u.lists[l++] = gas;
    if (mom) u.lists[l++] = bufs;
    u.lists[l] = grads;
    rmsprop_multi_host h = {params, grads, square_avgs, gas, bufs, o};
    return multi_apply(&u, n, any_dev, rmsprop_multi_host_one, &h);
}

cg_status cg_rmsprop_update(cg_tensor *param, cg_tensor *grad, cg_tensor *square_avg,
                            cg_tensor *grad_avg, cg_tensor *momentum_buffer,
                            const cg_rmsprop_options *o, double *update_sum_sq) {
    cg_update_stats local, *ms = measure_begin(&local, update_sum_sq ? CG_MEASURE_UPDATE : 0);
    CG_TRY(rmsprop_update("cg_rmsprop_update", param, grad, square_avg, grad_avg, momentum_buffer, o, ms));
    if (update_sum_sq) *update_sum_sq = local.update_sum_sq;
    return CG_OK;
}

cg_status cg_rmsprop_update_stats(cg_tensor *param, cg_tensor *grad, cg_tensor *square_avg,
                            cg_tensor *grad_avg, cg_tensor *momentum_buffer,
                            const cg_rmsprop_options *o, cg_update_stats *stats) {
    if (!stats) return cg__err(CG_ERR_NULL, "cg_rmsprop_update_stats: stats is NULL");
    cg_update_stats local, *ms = measure_begin(&local, stats->what & MEASURE_ALL);
    CG_TRY(rmsprop_update("cg_rmsprop_update_stats", param, grad, square_avg, grad_avg, momentum_buffer, o, ms));
    *stats = local;
    return CG_OK;
}

/* --------------------------------------------------------------- Adagrad */
#define ADAGRAD_KERNEL(NAME, T)                                                             \
    CG_INLINE void NAME##_body(int64_t n, T *restrict p, const T *restrict gr,              \
                               T *restrict sum, double clr, const cg_adagrad_options *o,    \
                               meas_block *mb, const int MX, const int WD, const int MEAS) { \
        const T wd = (T)o->weight_decay, eps = (T)o->eps, clr_neg = (T)(-clr);             \
        KERNEL_LOOP(T, n, p, gr, MEAS, mb, {                                                    \
            T g = MX ? -gr[i] : gr[i];                                                      \
            if (WD) g = g + wd * p[i];                                                      \
            const T si = sum[i] + g * g;                                                    \
            sum[i] = si;                                                                    \
            const T std = SQRT_##T(si) + eps;                                               \
            p[i] = p[i] + clr_neg * g / std;                                                \
        })                                                                                  \
    }                                                                                       \
    CG_INLINE int NAME##_key(const cg_adagrad_options *o, const meas_block *mb) {           \
        return (o->maximize != 0) | (o->weight_decay != 0.0) << 1 | (mb != NULL) << 2;      \
    }                                                                                       \
    KERNEL_DISPATCHERS(NAME, (int64_t n, T *p, const T *gr, T *sum, double clr,            \
                              const cg_adagrad_options *o, meas_block *mb),                 \
                       (n, p, gr, sum, clr, o, mb), NAME##_key(o, mb),                      \
                       CASES4(NAME##_CASE, 0) CASES4(NAME##_CASE, 4), 8, CASES4(NAME##_CASE, 12))
#define adagrad_f32_CASE(k)                                                                 \
    case k: adagrad_f32_body(n, p, gr, sum, clr, o, mb, BIT(k, 0), BIT(k, 1), MEAS_OF(k, 2)); \
        break;
#define adagrad_f64_CASE(k)                                                                 \
    case k: adagrad_f64_body(n, p, gr, sum, clr, o, mb, BIT(k, 0), BIT(k, 1), MEAS_OF(k, 2)); \
        break;
ADAGRAD_KERNEL(adagrad_f32, float)
ADAGRAD_KERNEL(adagrad_f64, double)

cg_adagrad_options cg_adagrad_default_options(void) {
    cg_adagrad_options o = {1e-2, 0.0, 0.0, 1e-10, 0.0, 0};
    return o;
}

static cg_status check_adagrad_options(const char *fn, const cg_adagrad_options *o) {
    CHECK_GE0(fn, "learning rate", o->lr);
    CHECK_GE0(fn, "lr_decay", o->lr_decay);
    CHECK_GE0(fn, "weight_decay", o->weight_decay);
    CHECK_GE0(fn, "epsilon", o->eps);
    CHECK_GE0(fn, "initial_accumulator_value", o->initial_accumulator_value);
    return CG_OK;
}

/* The step's learning rate, lr / (1 + (step - 1) * lr_decay), after the
 * options' and the step's checks. */
static cg_status adagrad_clr(const char *fn, int64_t step, const cg_adagrad_options *o,
                             double *clr) {
    if (!o) return cg__err(CG_ERR_NULL, "%s: options is NULL", fn);
    CG_TRY(check_adagrad_options(fn, o));
    if (step < 1)
        return cg__err(CG_ERR_VALUE, "%s: step must be >= 1 (the count including this step), got %lld",
                       fn, (long long)step);
    *clr = o->lr / (1.0 + (double)(step - 1) * o->lr_decay);
    return CG_OK;
}

/* The checks of one parameter's update; *dev: the tensors' device. */
static cg_status adagrad_check(const char *fn, cg_tensor *param, cg_tensor *grad,
                               cg_tensor *state_sum, int *dev) {
    CG_TRY(check_param(fn, param));
    CG_TRY(check_operand(fn, "param", param, param));
    CG_TRY(check_operand(fn, "grad", grad, param));
    CG_TRY(check_operand(fn, "state_sum", state_sum, param));
    cg_tensor *w[2] = {param, state_sum};
    const char *names[2] = {"param", "state_sum"};
    CG_TRY(check_distinct(fn, 2, w, names));
    cg_tensor *all[3] = {param, grad, state_sum};
    const char *all_names[3] = {"param", "grad", "state_sum"};
    return cg__train_same_device(fn, 3, all, all_names, dev);
}

/* The device kernels' scalars (docs/backend.md, adagrad_update_). */
static void adagrad_device_params(const cg_adagrad_options *o, double clr, int want, double f[3],
                                  int64_t ip[2]) {
    f[0] = clr;
    f[1] = o->weight_decay;
    f[2] = o->eps;
    ip[0] = o->maximize != 0;
    ip[1] = want;
}

/* The host loop of one checked update. */
static void adagrad_host(cg_tensor *param, cg_tensor *grad, cg_tensor *state_sum, double clr,
                         const cg_adagrad_options *o, cg_update_stats *ms) {
    const int64_t n = param->numel;
    const size_t es = cg_dtype_size(param->dtype);
    void *p = cg__ptr(param), *g = cg__ptr(grad), *sum = cg__ptr(state_sum);
    if (param->dtype == CG_FLOAT32)
        WITH_MEASURE(param, grad, n, ms,
                         adagrad_f32(m, AT(p, lo, es), AT(g, lo, es), AT(sum, lo, es), clr, o, mb_));
    else
        WITH_MEASURE(param, grad, n, ms,
                         adagrad_f64(m, AT(p, lo, es), AT(g, lo, es), AT(sum, lo, es), clr, o, mb_));
}

static cg_status adagrad_update(const char *fn, cg_tensor *param, cg_tensor *grad, cg_tensor *state_sum,
                                int64_t step, const cg_adagrad_options *o,
                                cg_update_stats *ms) {
    int dev;
    CG_TRY(adagrad_check(fn, param, grad, state_sum, &dev));
    double clr;
    CG_TRY(adagrad_clr(fn, step, o, &clr));
    if (dev) {
        cg_tensor *ts[3] = {param, state_sum, grad};
        double f[3];
        int64_t ip[2];
        adagrad_device_params(o, clr, ms && (ms->what & CG_MEASURE_UPDATE), f, ip);
        CG_TRY(device_update(dev, "adagrad_update_", 2, ts, 3, f, 2, ip, param, grad, ms));
    } else {
        adagrad_host(param, grad, state_sum, clr, o, ms);
    }
    bump(param);
    bump(state_sum);
    return CG_OK;
}

/* Adagrad's lists and step size for its host loops. */
typedef struct {
    cg_tensor *const *params, *const *grads, *const *sums;
    double clr;
    const cg_adagrad_options *o;
} adagrad_multi_host;

static void adagrad_multi_host_one(int i, const void *vctx) {
    const adagrad_multi_host *h = (const adagrad_multi_host *)vctx;
    adagrad_host(h->params[i], h->grads[i], h->sums[i], h->clr, h->o, NULL);
}

cg_status cg_adagrad_update_multi(int n, cg_tensor *const *params, cg_tensor *const *grads,
                                  cg_tensor *const *state_sums, int64_t step,
                                  const cg_adagrad_options *o) {
    const char *fn = "cg_adagrad_update_multi";
    CG_TRY(multi_count(fn, n));
    double clr;
    CG_TRY(adagrad_clr(fn, step, o, &clr));
    if (n && (!params || !grads || !state_sums))
        return cg__err(CG_ERR_NULL, "%s: a tensor list is NULL", fn);
    if (n == 0) return CG_OK;
    int any_dev = 0;
    for (int i = 0; i < n; ++i) { /* every check first: a bad entry moves nothing */
        int d = 0;
        cg_status st = adagrad_check(fn, params[i], grads[i], state_sums[i], &d);
        if (st) return entry_err(st, i);
        any_dev |= d;
    }
    double f[3];
    int64_t ip[3] = {0};
    adagrad_device_params(o, clr, 0, f, ip);
    multi_update u = {fn, "adagrad_update_multi_", 2, {params, state_sums, grads}, 3, 3, f, ip};
    adagrad_multi_host h = {params, grads, state_sums, clr, o};
    return multi_apply(&u, n, any_dev, adagrad_multi_host_one, &h);
}

cg_status cg_adagrad_update(cg_tensor *param, cg_tensor *grad, cg_tensor *state_sum,
                            int64_t step, const cg_adagrad_options *o, double *update_sum_sq) {
    cg_update_stats local, *ms = measure_begin(&local, update_sum_sq ? CG_MEASURE_UPDATE : 0);
    CG_TRY(adagrad_update("cg_adagrad_update", param, grad, state_sum, step, o, ms));
    if (update_sum_sq) *update_sum_sq = local.update_sum_sq;
    return CG_OK;
}

cg_status cg_adagrad_update_stats(cg_tensor *param, cg_tensor *grad, cg_tensor *state_sum,
                            int64_t step, const cg_adagrad_options *o, cg_update_stats *stats) {
    if (!stats) return cg__err(CG_ERR_NULL, "cg_adagrad_update_stats: stats is NULL");
    cg_update_stats local, *ms = measure_begin(&local, stats->what & MEASURE_ALL);
    CG_TRY(adagrad_update("cg_adagrad_update_stats", param, grad, state_sum, step, o, ms));
    *stats = local;
    return CG_OK;
}
